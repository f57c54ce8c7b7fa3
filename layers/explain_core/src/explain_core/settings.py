"""Settings read from the function's environment (set in template.yaml)."""

import os
from dataclasses import dataclass


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    input_bucket: str
    results_bucket: str
    model_bucket: str
    input_prefix: str = "incoming/"
    #: Inputs of synchronous API requests: not under input_prefix, so no notification retriggers a function.
    request_prefix: str = "requests/"
    #: Presigned uploads of large images, referenced by later API requests.
    upload_prefix: str = "uploads/"
    results_prefix: str = "results/"
    errors_prefix: str = "errors/"
    models_prefix: str = "models/"
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_overlay_side: int = 1024
    model_cache_dir: str = "/tmp/explain-models"
    max_cached_models: int = 2
    #: Size limit of one model file; the effective limit is :attr:`model_size_limit`.
    max_model_bytes: int = 2 * 1024**3
    #: Size of /tmp (Lambda EphemeralStorage, EPHEMERAL_STORAGE_MB): models are cached there.
    tmp_capacity_bytes: int = 2048 * 1024**2
    #: Room in /tmp kept free for outputs and working files: a model download never eats into it.
    tmp_reserve_bytes: int = 512 * 1024**2
    #: Tabular uploads (CSV, JSON Lines): size and row limits, checked before parsing.
    max_table_bytes: int = 10 * 1024 * 1024
    max_table_rows: int = 1000
    #: Text uploads (.txt, JSON Lines, CSV): bytes and documents per file (checked before parsing and
    #: while reading), tokens per document (checked when each document is tokenized).
    max_text_bytes: int = 1024 * 1024
    max_documents: int = 100
    max_document_tokens: int = 2000
    #: API: DynamoDB tables of jobs and of Powertools idempotency records.
    jobs_table: str = ""
    idempotency_table: str = ""
    #: API: the endpoint presigned URLs are signed for (empty: the normal S3 endpoint).
    presign_endpoint_url: str = ""
    presigned_url_seconds: int = 3600
    #: The queues' redrive maxReceiveCount: the receive after which a failed message is dead-lettered.
    max_receive_count: int = 3
    #: The function's memory in MB (Lambda's AWS_LAMBDA_FUNCTION_MEMORY_SIZE; else MEMORY_LIMIT_MB; 0: no
    #: limit): a method whose estimated peak does not fit is refused with over_memory_budget (explain_core.memory).
    memory_limit_mb: int = 0

    @property
    def model_size_limit(self) -> int:
        """The largest model file loaded: ``min(max_model_bytes, tmp_capacity_bytes - tmp_reserve_bytes)``."""
        return max(0, min(self.max_model_bytes, self.tmp_capacity_bytes - self.tmp_reserve_bytes))

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        return cls(
            input_bucket=env["INPUT_BUCKET"],
            results_bucket=env["RESULTS_BUCKET"],
            model_bucket=env["MODEL_BUCKET"],
            input_prefix=env.get("INPUT_PREFIX", cls.input_prefix),
            request_prefix=env.get("REQUEST_PREFIX", cls.request_prefix),
            upload_prefix=env.get("UPLOAD_PREFIX", cls.upload_prefix),
            results_prefix=env.get("RESULTS_PREFIX", cls.results_prefix),
            errors_prefix=env.get("ERRORS_PREFIX", cls.errors_prefix),
            models_prefix=env.get("MODELS_PREFIX", cls.models_prefix),
            max_image_bytes=_int_env("MAX_IMAGE_BYTES", cls.max_image_bytes),
            max_image_pixels=_int_env("MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_overlay_side=_int_env("MAX_OVERLAY_SIDE", cls.max_overlay_side),
            model_cache_dir=env.get("MODEL_CACHE_DIR", cls.model_cache_dir),
            max_cached_models=_int_env("MAX_CACHED_MODELS", cls.max_cached_models),
            max_model_bytes=_int_env("MAX_MODEL_BYTES", cls.max_model_bytes),
            tmp_capacity_bytes=_int_env("EPHEMERAL_STORAGE_MB", cls.tmp_capacity_bytes // 1024**2) * 1024**2,
            tmp_reserve_bytes=_int_env("TMP_RESERVE_BYTES", cls.tmp_reserve_bytes),
            max_table_bytes=_int_env("MAX_TABLE_BYTES", cls.max_table_bytes),
            max_table_rows=_int_env("MAX_TABLE_ROWS", cls.max_table_rows),
            max_text_bytes=_int_env("MAX_TEXT_BYTES", cls.max_text_bytes),
            max_documents=_int_env("MAX_DOCUMENTS_PER_FILE", cls.max_documents),
            max_document_tokens=_int_env("MAX_TOKENS_PER_DOCUMENT", cls.max_document_tokens),
            jobs_table=env.get("JOBS_TABLE", ""),
            idempotency_table=env.get("IDEMPOTENCY_TABLE", ""),
            presign_endpoint_url=env.get("PRESIGN_ENDPOINT_URL", ""),
            presigned_url_seconds=_int_env("PRESIGNED_URL_SECONDS", cls.presigned_url_seconds),
            max_receive_count=_int_env("MAX_RECEIVE_COUNT", cls.max_receive_count),
            memory_limit_mb=_int_env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                                     _int_env("MEMORY_LIMIT_MB", cls.memory_limit_mb)),
        )
