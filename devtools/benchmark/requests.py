"""The AWS API calls of this process, counted: :class:`RequestCounter` (``cost`` and ``overhead`` sections)."""

import contextlib
import math
import threading
from collections import Counter
from dataclasses import dataclass, field

#: DynamoDB operations that read items (billed in read request units by their consistency).
DYNAMODB_READS = frozenset({"GetItem", "Query", "Scan"})


@dataclass
class ApiCall:
    """One AWS API call made through botocore in this process."""

    service: str  # botocore's service name: s3, sqs, dynamodb
    operation: str  # PutObject, ReceiveMessage, UpdateItem, ...
    target: str | None  # the bucket, table or queue URL it names
    invocation: int | None  # which handler invocation made it (None: outside any handler)
    key: str | None = None  # the S3 object key it names
    request_bytes: int = 0  # PutObject: the body's size
    read_units: float = 0.0  # DynamoDB reads: request units by consistency (items under 4 KB)
    item_bytes: int = 0  # DynamoDB PutItem: the item's size as DynamoDB measures it (approximately)
    messages: list = field(default_factory=list)  # ReceiveMessage: (MessageId, body bytes) returned


class RequestCounter:
    """Records every AWS API call of this process while installed, tagged with the handler invocation.

    botocore clients copy their session's event emitter when they are created, so an event
    handler registered now would miss the clients the functions built at import; every generated
    operation method of every client calls ``BaseClient._make_api_call``, so wrapping it sees them
    all (and the calls of the functions' thread pools). One call is one API request: botocore's
    retries of a request happen inside it and are not counted (the emulator does not throttle).
    """

    def __init__(self):
        self.calls: list[ApiCall] = []
        self._lock = threading.Lock()
        self._invocation: int | None = None
        self._invocations = 0

    @contextlib.contextmanager
    def installed(self):
        """Count the calls made inside this block."""
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        counter = self

        def counting(client, operation_name, api_params):
            # Read before the call: botocore replaces a bytes Body by a file object in place.
            call = counter.record(client.meta.service_model.service_name, operation_name, api_params)
            response = original(client, operation_name, api_params)  # an error answer is billed too: recorded
            if operation_name == "ReceiveMessage":
                call.messages = [(m["MessageId"], len(m.get("Body", "").encode()))
                                 for m in response.get("Messages", [])]
            return response

        BaseClient._make_api_call = counting
        try:
            yield self
        finally:
            BaseClient._make_api_call = original

    @contextlib.contextmanager
    def invocation(self):
        """Tag the calls made inside this block (a handler invocation: ``TimedHandler.around``) with its index."""
        with self._lock:
            self._invocation, self._invocations = self._invocations, self._invocations + 1
        try:
            yield
        finally:
            with self._lock:
                self._invocation = None

    @property
    def last_invocation(self) -> int | None:
        return self._invocations - 1 if self._invocations else None

    def record(self, service: str, operation: str, params: dict) -> ApiCall:
        """Record a call about to be made (its request side); returns the record, for its response side."""
        call = ApiCall(service, operation, params.get("Bucket") or params.get("TableName") or params.get("QueueUrl"),
                       self._invocation, params.get("Key"))
        body = params.get("Body") or params.get("MessageBody")
        if isinstance(body, bytes | bytearray | str):
            call.request_bytes = len(body.encode() if isinstance(body, str) else body)
        if service == "dynamodb" and operation in DYNAMODB_READS:
            call.read_units = 1.0 if params.get("ConsistentRead") else 0.5
        if service == "dynamodb" and operation == "PutItem":
            call.item_bytes = dynamodb_item_bytes(params.get("Item", {}))
        with self._lock:
            self.calls.append(call)
        return call

    def of_invocation(self, invocation: int) -> list[ApiCall]:
        return [call for call in self.calls if call.invocation == invocation]

    def outside_handlers(self) -> list[ApiCall]:
        return [call for call in self.calls if call.invocation is None]


def dynamodb_item_bytes(item: dict) -> int:
    """An item's size as DynamoDB bills it: attribute names plus values (strings and binaries by their
    length, numbers about one byte per two digits plus one, maps and lists 3 bytes plus their elements)."""

    def value_bytes(value: dict) -> int:
        (kind, content), = value.items()
        if kind in ("S", "B"):
            return len(content.encode() if isinstance(content, str) else content)
        if kind == "N":
            return math.ceil(len(str(content).lstrip("-").replace(".", "")) / 2) + 1
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "M":
            return 3 + sum(len(name.encode()) + value_bytes(v) for name, v in content.items())
        if kind == "L":
            return 3 + sum(1 + value_bytes(v) for v in content)
        return sum(len(str(v).encode()) for v in content)  # sets: their members

    return sum(len(name.encode()) + value_bytes(value) for name, value in item.items())


def operation_counts(calls: list[ApiCall]) -> dict[str, int]:
    """Calls by ``service:Operation``, in a stable order."""
    return dict(sorted(Counter(f"{call.service}:{call.operation}" for call in calls).items()))
