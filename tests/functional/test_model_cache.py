"""The model cache in /tmp against the emulator: LRU eviction, the size limit, full disks.

The cache directory is a test folder whose "size" is ``Settings.tmp_capacity_bytes`` (Lambda's
EphemeralStorage): a few hundred kilobytes here, so that two small Keras models do not fit together.
"""

import errno
import json
import os
import shutil

import numpy as np
import pytest

from devtools.local.events import deliver
from explain_core.errors import ExplainError, ModelTooLargeError
from explain_core.model_store import ModelStore
from explain_core.settings import Settings
from tests.conftest import png_bytes, read_json, upload_event


@pytest.fixture(scope="module")
def model_bytes(demo_model_dir) -> bytes:
    return (demo_model_dir / "model.keras").read_bytes()


@pytest.fixture(scope="module")
def demo_card(demo_model_dir) -> dict:
    return json.loads((demo_model_dir / "card.json").read_text())


def publish(s3, deployment, name: str, version: str, body: bytes, card: dict) -> None:
    bucket = deployment.bucket("ModelBucket")
    s3.put_object(Bucket=bucket, Key=f"models/{name}/{version}/model.keras", Body=body)
    s3.put_object(Bucket=bucket, Key=f"models/{name}/{version}/card.json",
                  Body=json.dumps({**card, "name": name, "version": version}).encode())


def cache_settings(deployment, cache_dir, capacity: int, reserve: int, **extra) -> Settings:
    return Settings(input_bucket=deployment.bucket("InputBucket"),
                    results_bucket=deployment.bucket("ResultsBucket"),
                    model_bucket=deployment.bucket("ModelBucket"), model_cache_dir=str(cache_dir),
                    tmp_capacity_bytes=capacity, tmp_reserve_bytes=reserve, **extra)


def cached(cache_dir, name: str, version: str) -> bool:
    """Whether the model's file is on disk in the cache."""
    folder = cache_dir / name / version
    return folder.is_dir() and any(path.name == "model.keras" for path in folder.rglob("*"))


def files_in(cache_dir) -> list[str]:
    return sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*") if p.is_file()) if cache_dir.exists() \
        else []


def predicts(loaded) -> bool:
    output = loaded.model(np.zeros((1, 64, 64, 3), dtype=np.float32))
    return tuple(output.shape) == (1, len(loaded.card.class_names)) and bool(np.all(np.isfinite(output)))


def test_a_model_that_does_not_fit_beside_another_evicts_it(s3, deployment, model_bytes, demo_card, unique_prefix,
                                                            tmp_path):
    size, reserve = len(model_bytes), len(model_bytes) // 4
    cache = tmp_path / "cache"
    # Room for one model and a half, plus the reserve: A and B do not fit together.
    settings = cache_settings(deployment, cache, capacity=size * 3 // 2 + reserve, reserve=reserve)
    assert settings.model_size_limit >= size
    for name in ("cache-a", "cache-b"):
        publish(s3, deployment, name, unique_prefix, model_bytes, demo_card)
    store = ModelStore(s3, settings)

    a = store.get("cache-a", unique_prefix)
    assert a.source == "s3" and cached(cache, "cache-a", unique_prefix)
    b = store.get("cache-b", unique_prefix)

    assert b.source == "s3" and cached(cache, "cache-b", unique_prefix)
    assert not (cache / "cache-a").exists(), files_in(cache)  # A's folder was evicted to make room
    # Both stay usable: A from memory (evicted from disk only), B just loaded.
    again = store.get("cache-a", unique_prefix)
    assert again.source == "memory" and again.model is a.model
    assert predicts(again) and predicts(b)
    # A new process finds neither A on disk nor room for it beside B: B goes, A is downloaded again.
    fresh = ModelStore(s3, settings)
    assert fresh.get("cache-a", unique_prefix).source == "s3"
    assert cached(cache, "cache-a", unique_prefix) and not cached(cache, "cache-b", unique_prefix)


def test_the_least_recently_used_model_is_evicted_first(s3, deployment, model_bytes, demo_card, unique_prefix,
                                                        tmp_path):
    size, reserve = len(model_bytes), len(model_bytes) // 4
    cache = tmp_path / "cache"
    settings = cache_settings(deployment, cache, capacity=size * 5 // 2 + reserve, reserve=reserve)  # two fit
    for name in ("lru-a", "lru-b", "lru-c"):
        publish(s3, deployment, name, unique_prefix, model_bytes, demo_card)
    store = ModelStore(s3, settings)
    store.get("lru-a", unique_prefix)
    store.get("lru-b", unique_prefix)
    # A is used again (from memory): that use counts, on disk, for a later process too.
    assert store.get("lru-a", unique_prefix).source == "memory"

    fresh = ModelStore(s3, settings)  # a warm invocation of another execution environment
    assert fresh.get("lru-c", unique_prefix).source == "s3"

    assert cached(cache, "lru-a", unique_prefix) and cached(cache, "lru-c", unique_prefix)
    assert not (cache / "lru-b").exists(), files_in(cache)


def test_a_model_over_the_limit_is_refused_finally_and_leaves_nothing(s3, deployment, model_bytes, demo_card,
                                                                      unique_prefix, tmp_path):
    size = len(model_bytes)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "other" / "v1" / "etag").mkdir(parents=True)
    (cache / "other" / "v1" / "etag" / "model.keras").write_bytes(b"x" * 1000)
    # /tmp holds the model, but not with the reserve for outputs: the limit is capacity - reserve.
    settings = cache_settings(deployment, cache, capacity=size + 1000, reserve=2000)
    assert settings.model_size_limit == size - 1000
    publish(s3, deployment, "too-large", unique_prefix, model_bytes, demo_card)

    with pytest.raises(ModelTooLargeError) as info:
        ModelStore(s3, settings).get("too-large", unique_prefix)

    error = info.value
    assert isinstance(error, ExplainError)  # final: written as an error record, never retried
    assert (error.code, error.status) == ("model_too_large", 413)
    assert error.details["size"] == size and error.details["limit"] == size - 1000
    assert "MAX_MODEL_BYTES" in error.message
    # Nothing downloaded, and the other model was not evicted for a model that could never fit.
    assert files_in(cache) == ["other/v1/etag/model.keras"]

    # MAX_MODEL_BYTES alone also bounds it.
    small = cache_settings(deployment, cache, capacity=100 * size, reserve=0, max_model_bytes=size - 1)
    with pytest.raises(ModelTooLargeError, match=f"the limit is {size - 1} bytes"):
        ModelStore(s3, small).get("too-large", unique_prefix)
    assert files_in(cache) == ["other/v1/etag/model.keras"]


def test_a_model_that_cannot_fit_even_after_evicting_everything_is_refused(s3, deployment, model_bytes, demo_card,
                                                                           unique_prefix, tmp_path, monkeypatch):
    """The filesystem itself is fuller than the cache accounts for (say, files of other code in /tmp)."""
    from collections import namedtuple

    size = len(model_bytes)
    cache = tmp_path / "cache"
    settings = cache_settings(deployment, cache, capacity=10 * size, reserve=size // 10)
    publish(s3, deployment, "no-room", unique_prefix, model_bytes, demo_card)
    publish(s3, deployment, "small-first", unique_prefix, model_bytes, demo_card)
    store = ModelStore(s3, settings)
    store.get("small-first", unique_prefix)

    usage, real_disk_usage = namedtuple("usage", "total used free"), shutil.disk_usage

    def nearly_full(path):  # 1000 bytes free on the cache's filesystem
        return usage(10 * size, 10 * size, 1000) if str(path).startswith(str(cache)) else real_disk_usage(path)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    with pytest.raises(ModelTooLargeError, match="even with every other cached model evicted"):
        store.get("no-room", unique_prefix)

    assert cached(cache, "small-first", unique_prefix)  # not evicted in vain
    assert not (cache / "no-room").exists()


def test_a_full_disk_while_downloading_is_a_final_error_without_a_partial_file(s3, deployment, model_bytes, demo_card,
                                                                               unique_prefix, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    settings = cache_settings(deployment, cache, capacity=100 * len(model_bytes), reserve=0)
    publish(s3, deployment, "enospc", unique_prefix, model_bytes, demo_card)

    real_copy = shutil.copyfileobj

    def disk_full(source, target, length=0):  # the download stops with a full disk after 1000 bytes
        if not str(getattr(target, "name", "")).startswith(str(cache)):
            return real_copy(source, target, length)
        target.write(source.read(1000))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(ModelTooLargeError, match="no space left") as info:
        ModelStore(s3, settings).get("enospc", unique_prefix)

    assert isinstance(info.value, ExplainError) and info.value.code == "model_too_large"
    assert files_in(cache) == []  # the partial download was removed
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC


def test_the_queue_path_writes_a_final_error_record_for_a_model_too_large(s3, deployment, samples, model_bytes,
                                                                        demo_card, unique_prefix, tmp_path,
                                                                        lambda_context):
    """Through the SQS handler path: an error record with retrying false, no batch item failure (no DLQ)."""
    from explain_core.session import ExplanationSession
    from explain_core.sqs_adapter import SqsAdapter

    images, _, _ = samples
    name = "too-large-queue"
    publish(s3, deployment, name, unique_prefix, model_bytes, demo_card)
    key = f"incoming/gradient/{name}/{unique_prefix}/circle.png"
    event = upload_event(key, family="gradient")
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]))
    settings = cache_settings(deployment, tmp_path / "cache", capacity=len(model_bytes), reserve=1024)

    uploads = SqsAdapter(ExplanationSession("gradient", settings, s3))
    response = uploads.handle_sqs_event(deliver(event, s3), lambda_context)

    assert response == {"batchItemFailures": []}
    record = read_json(s3, deployment.bucket("ResultsBucket"), f"errors/{key.removeprefix('incoming/')}.json")
    assert record["retrying"] is False and record["error"]["code"] == "model_too_large", record
    assert not os.path.exists(tmp_path / "cache" / name)


def test_settings_read_the_tmp_size_and_reserve_from_the_environment(monkeypatch):
    for name, value in {"INPUT_BUCKET": "i", "RESULTS_BUCKET": "r", "MODEL_BUCKET": "m", "EPHEMERAL_STORAGE_MB": "1024",
                        "TMP_RESERVE_BYTES": str(256 * 1024**2), "MAX_MODEL_BYTES": str(2 * 1024**3)}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.tmp_capacity_bytes == 1024 * 1024**2
    assert settings.model_size_limit == 768 * 1024**2  # min(2 GiB, 1024 MiB - 256 MiB)
    defaults = Settings(input_bucket="i", results_bucket="r", model_bucket="m")
    assert defaults.model_size_limit == 1536 * 1024**2  # 2048 MiB of /tmp less 512 MiB for outputs
