"""One attempt at a time per input: a lock on Powertools' idempotency table.

S3 delivers an event at least once and SQS a message at least once, so two invocations can hold
the same upload at the same moment. Before explaining, an attempt saves an ``INPROGRESS``
idempotency record keyed by the input's identity (bucket, key, the version or ETag read, the
request fingerprint); a concurrent attempt at the same input finds it and leaves the input to
the holder. The record expires with the holder's invocation (Powertools' in-progress expiry),
so a killed attempt never blocks the retry of its own message. On success the record becomes
``COMPLETED`` and names the manifest; on failure it is deleted so that a retry may run.

Powertools' persistence layer is used directly rather than through ``idempotent_function``,
because the SQS adapter explains a whole batch at once and holds one record per input in it.
"""

from dataclasses import dataclass
from enum import Enum

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)

#: A completed record answers repeated deliveries this long; later ones are recognised by the
#: manifest's metadata (source ETag and request fingerprint).
COMPLETED_RECORD_SECONDS = 3600

logger = Logger(child=True)


class LockOutcome(Enum):
    ACQUIRED = "acquired"
    #: Another invocation is explaining this input right now.
    IN_PROGRESS = "in_progress"
    #: Another invocation explained this input already.
    COMPLETED = "completed"


@dataclass(frozen=True)
class InputIdentity:
    bucket: str
    key: str
    version: str  # the S3 version id, else the ETag
    fingerprint: str  # request options + model, card and background ETags

    def as_data(self) -> dict:
        return {"bucket": self.bucket, "key": self.key, "version": self.version, "fingerprint": self.fingerprint}


class InputLock:
    def __init__(self, table_name: str, family: str, persistence=None):
        self.persistence = persistence or DynamoDBPersistenceLayer(table_name=table_name)
        # No local cache: the record must be read from the table, where other invocations write.
        self.persistence.configure(IdempotencyConfig(expires_after_seconds=COMPLETED_RECORD_SECONDS,
                                                     use_local_cache=False),
                                   key_prefix=f"explain-input-{family}")

    def acquire(self, identity: InputIdentity, remaining_millis: int) -> LockOutcome:
        for _ in range(2):  # a record deleted between our write and our read: try once more
            try:
                self.persistence.save_inprogress(identity.as_data(), remaining_time_in_millis=remaining_millis)
                return LockOutcome.ACQUIRED
            except IdempotencyItemAlreadyExistsError as exc:
                try:
                    record = exc.old_data_record or self.persistence.get_record(identity.as_data())
                except IdempotencyItemNotFoundError:
                    continue
                return LockOutcome.COMPLETED if record.status == "COMPLETED" else LockOutcome.IN_PROGRESS
        return LockOutcome.IN_PROGRESS

    def complete(self, identity: InputIdentity, manifest_key: str) -> None:
        try:
            self.persistence.save_success(identity.as_data(), {"manifest": manifest_key})
        except Exception:  # the manifest is written: an in-progress record just expires with the invocation
            logger.exception("could not mark the input lock completed", extra={"key": identity.key})

    def release(self, identity: InputIdentity, error: Exception) -> None:
        try:
            self.persistence.delete_record(identity.as_data(), error)
        except Exception:  # the record expires with the invocation anyway
            logger.exception("could not release the input lock", extra={"key": identity.key})
