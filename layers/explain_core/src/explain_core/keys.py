"""S3 key layout.

Inputs:  ``s3://INPUT_BUCKET/incoming/<family>/<model>/<version>/<path/to/image.png>``
API:     synchronous requests store their input under ``requests/<family>/...`` (never notified),
         jobs under ``incoming/<family>/<model>/<version>/jobs/<job id>/<file>`` (the S3 path).
Results: ``s3://RESULTS_BUCKET/results/<family>/<model>/<version>/<path/to/image.png>/``
         ``manifest.json`` (written last) and, per attempt, ``attempts/<attempt id>/<method>/<class>.png``
         + ``.npy``: the manifest lists the outputs of the attempt that wrote it
Errors:  ``s3://RESULTS_BUCKET/errors/<family>/<model>/<version>/<path/to/image.png>.json``

Results live in a different bucket from inputs (and under other prefixes), so an output can
never match the input notification and retrigger a function.
"""

import hashlib
import re
import time
import uuid
from dataclasses import dataclass

from explain_core.errors import InvalidKeyError
from explain_core.settings import Settings

#: Model names and versions become S3 key segments and cache directory names.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_KEY_LENGTH = 1024
#: Sanity-check request files (explain_core.sanity): ``incoming/<family>/<model>/<version>/sanity-checks/<id>.json``;
#: their reports go to ``results/<family>/<model>/<version>/sanity/<id>/``.
SANITY_REQUESTS_DIR = "sanity-checks/"
SANITY_RESULTS_DIR = "sanity/"
#: The gallery page (explain_core.gallery) of an input, beside its manifest, and of a model, above its inputs.
GALLERY_PAGE = "index.html"


def check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise InvalidKeyError(
            f"{what} {value!r} is not valid: use letters, digits, '.', '_' or '-' (at most 128 characters)",
            field=what,
        )
    return value


@dataclass(frozen=True)
class InputRef:
    """One uploaded object and what its key path selects."""

    bucket: str
    key: str
    family: str
    model: str
    version: str
    name: str

    @property
    def relative(self) -> str:
        """The key below the input prefix: ``<family>/<model>/<version>/<name>``."""
        return f"{self.family}/{self.model}/{self.version}/{self.name}"


class KeyLayout:
    def __init__(self, settings: Settings):
        self.settings = settings

    def family_prefix(self, family: str) -> str:
        return f"{self.settings.input_prefix}{family}/"

    def is_input(self, bucket: str, key: str, family: str) -> bool:
        """True for objects this family's function must process (the retrigger guard)."""
        return bucket == self.settings.input_bucket and key.startswith(self.family_prefix(family))

    def request_prefix(self, family: str) -> str:
        return f"{self.settings.request_prefix}{family}/"

    def parse_input(self, bucket: str, key: str, family: str) -> InputRef:
        """The model, version and name an input key selects (under the family's input or request prefix)."""
        if len(key.encode()) > MAX_KEY_LENGTH:
            raise InvalidKeyError("object key is longer than 1024 bytes")
        prefix = self.request_prefix(family)
        if not key.startswith(prefix):
            prefix = self.family_prefix(family)
        rest = key[len(prefix) :]
        parts = rest.split("/", 2)
        if len(parts) < 3 or not parts[2] or parts[2].endswith("/"):
            raise InvalidKeyError(
                f"key {key!r} does not name a model: upload to "
                f"{self.family_prefix(family)}<model>/<version>/<file>",
            )
        model, version, name = parts
        return InputRef(bucket, key, family, check_name(model, "model"), check_name(version, "version"), name)

    def results_base(self, ref: InputRef) -> str:
        return f"{self.settings.results_prefix}{ref.relative}/"

    def manifest_key(self, ref: InputRef) -> str:
        return self.results_base(ref) + "manifest.json"

    def gallery_key(self, ref: InputRef) -> str:
        """The input's gallery page, beside its manifest."""
        return self.results_base(ref) + GALLERY_PAGE

    def model_results_prefix(self, family: str, model: str, version: str) -> str:
        """Above every input's results of one model (its gallery index is ``<prefix>index.html``)."""
        return f"{self.settings.results_prefix}{family}/{model}/{version}/"

    def is_sanity_request(self, ref: InputRef) -> bool:
        """True for a sanity-check request file (explain_core.sanity), not an input to explain."""
        return ref.name.startswith(SANITY_REQUESTS_DIR)

    def sanity_request_id(self, ref: InputRef) -> str:
        """The request id a sanity-check request file names: ``sanity-checks/<id>.json``."""
        name = ref.name[len(SANITY_REQUESTS_DIR):]
        request_id = name[:-len(".json")] if name.endswith(".json") else ""
        if "/" in request_id or not NAME_PATTERN.fullmatch(request_id):
            raise InvalidKeyError(
                f"a sanity-check request is {self.family_prefix(ref.family)}<model>/<version>/"
                f"{SANITY_REQUESTS_DIR}<id>.json with an id of letters, digits, '.', '_' or '-'; got {ref.key!r}",
                key=ref.key,
            )
        return request_id

    def sanity_request_key(self, family: str, model: str, version: str, request_id: str) -> str:
        return (f"{self.family_prefix(family)}{check_name(model, 'model')}/{check_name(version, 'version')}/"
                f"{SANITY_REQUESTS_DIR}{check_name(request_id, 'request id')}.json")

    def sanity_prefix(self, family: str, model: str, version: str, request_id: str) -> str:
        """Where a sanity check's report.json and chart.png go."""
        return f"{self.model_results_prefix(family, model, version)}{SANITY_RESULTS_DIR}{request_id}/"

    def attempt_prefix(self, ref: InputRef, attempt: str) -> str:
        """Outputs of one attempt at an input: concurrent or repeated attempts never share a key."""
        return f"{self.results_base(ref)}attempts/{attempt}/"

    def output_key(self, ref: InputRef, attempt: str, method: str, class_label: str, ext: str) -> str:
        return f"{self.attempt_prefix(ref, attempt)}{method}/{class_label}.{ext}"

    def error_key(self, key: str) -> str:
        """Error record for an input key, even one that does not parse."""
        relative = key
        for prefix in (self.settings.input_prefix, self.settings.request_prefix):
            if key.startswith(prefix):
                relative = key[len(prefix) :]
                break
        return f"{self.settings.errors_prefix}{relative}.json"

    def model_key(self, model: str, version: str, filename: str) -> str:
        return f"{self.settings.models_prefix}{check_name(model, 'model')}/{check_name(version, 'version')}/{filename}"


def client_segment(client_id: str) -> str:
    """The key segment of an API client: a hash of its id, so no client id appears in S3 keys."""
    if not client_id:
        raise ValueError("an API request needs the client id of the Lambda authorizer")
    return hashlib.sha256(f"explain-api-client:{client_id}".encode()).hexdigest()[:24]


def new_attempt_id() -> str:
    """A key segment unique to one attempt at one input, sortable by start time (UTC)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def class_label(index: int, names: list[str] | None) -> str:
    """A file-name-safe label for a class: ``3-tabby_cat``."""
    if names and 0 <= index < len(names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", names[index]).strip("_")[:64]
        return f"{index}-{safe}" if safe else str(index)
    return str(index)
