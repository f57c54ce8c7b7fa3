"""Models loaded by name and version from S3, kept warm in memory and in /tmp.

Layout in the model bucket: ``models/<name>/<version>/card.json``, the model file the card names
(``model.keras``, ``model.tar.gz`` as a SageMaker training job writes it, or ``model.json`` /
``model.ubj`` for XGBoost) and optionally
``background.npy``, the background data of the SHAP explainers (image models: pixel images
``(n, height, width, 3)`` in 0-255 at the model's input size; tabular models: rows
``(n, features)`` in the card's feature order).

The card's framework handler (:mod:`explain_core.frameworks`) loads and checks the model file:
Keras v3 ``.keras`` archives are checked before Keras reads them
(:func:`explain_core.frameworks.keras.check_keras_archive`: no Lambda layers, no module outside
Keras, no function that is not a modeling function, no layer that reads a file or a SavedModel)
and then loaded with ``safe_mode=True``; legacy HDF5 files and pickles are refused before any
Keras call. XGBoost models load from its own JSON/UBJ formats, arrays with ``allow_pickle=False``:
nothing is ever unpickled. Each request checks the stored ETags (HEAD requests), so replacing a
model, its card or its background in S3 takes effect on the next invocation.

The /tmp cache (``model_cache_dir/<name>/<version>/<etag>/<file>``) is bounded: a model over
``Settings.model_size_limit`` is refused (:class:`ModelTooLargeError`, final), and before a
download the least recently used other models are evicted from disk until the file fits with
``tmp_reserve_bytes`` to spare. Each ``get`` touches the model's folder, so the recency survives
warm invocations and new processes. A model evicted from disk stays usable from memory.
"""

import contextlib
import errno
import io
import os
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from botocore.exceptions import ClientError

from explain_core.errors import (
    InvalidModelError,
    ModelTooLargeError,
    UnknownModelError,
    is_missing_object,
)
from explain_core.frameworks import FrameworkHandler, handler_for
from explain_core.keys import KeyLayout
from explain_core.modalities import Modality, modality_for
from explain_core.model_card import CARD_FILE, ModelCard
from explain_core.settings import Settings

BACKGROUND_FILE = "background.npy"
#: Largest companion file (a text model's vocabulary) read beside a model.
MAX_COMPANION_BYTES = 32 * 1024 * 1024
#: Background rows kept at most (they multiply the cost of every SHAP explanation).
MAX_BACKGROUND_ROWS = 1000
@dataclass
class LoadedModel:
    name: str
    version: str
    model: object  # keras.Model or xgboost.Booster
    card: ModelCard
    model_etag: str
    card_etag: str
    load_seconds: float
    source: str  # "memory", "tmp" or "s3": where this request found it
    #: SHAP background in the model's input space (preprocessed images or rows), if stored.
    background: np.ndarray | None = None
    background_etag: str | None = None
    #: What the modality built beside the model (Modality.prepare_model: a text model's tokenizer and cut
    #: models), and the ETags of the files it read (Modality.companion_files).
    companion: object = None
    companion_etags: dict = field(default_factory=dict)

    @property
    def models(self) -> tuple:
        """The model and its companion: explainers are built on either, and stay cached while they are held."""
        return (self.model,) if self.companion is None else (self.model, self.companion)

    @property
    def handler(self) -> FrameworkHandler:
        return handler_for(self.card)

    @property
    def modality(self) -> Modality:
        return modality_for(self.card)

    @property
    def feature_names(self) -> list[str] | None:
        """Tabular: the card's feature names, else those the model file stores, else None (the upload's)."""
        return self.card.feature_names or self.handler.stored_feature_names(self.model)

    @property
    def feature_count(self) -> int:
        """Tabular: the number of features the model takes."""
        return self.handler.feature_count(self.model)


class ModelStore:
    def __init__(self, s3_client, settings: Settings, with_background: bool = True):
        self.s3 = s3_client
        self.settings = settings
        #: Only the shap family uses backgrounds: the others neither HEAD nor load background.npy.
        self.with_background = with_background
        self.keys = KeyLayout(settings)
        self._memory: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def _head(self, key: str, model: str, version: str) -> dict:
        try:
            return self.s3.head_object(Bucket=self.settings.model_bucket, Key=key)
        except ClientError as exc:
            if is_missing_object(exc):
                raise UnknownModelError(
                    f"model {model}/{version} is not in s3://{self.settings.model_bucket}/"
                    f"{self.keys.model_key(model, version, '')} (missing {os.path.basename(key)})",
                    model=model,
                    version=version,
                ) from exc
            raise

    def models_in_memory(self) -> list:
        return [model for loaded in self._memory.values() for model in loaded.models]

    def _background_head(self, name: str, version: str, card: ModelCard) -> dict | None:
        if not self.with_background or not modality_for(card).uses_background:
            return None
        try:
            return self._head(self.keys.model_key(name, version, BACKGROUND_FILE), name, version)
        except UnknownModelError:  # optional: the documented default background applies
            return None

    def get(self, name: str, version: str) -> LoadedModel:
        card_key = self.keys.model_key(name, version, CARD_FILE)
        card_etag = self._head(card_key, name, version)["ETag"].strip('"')
        with self._lock:
            cached = self._memory.get((name, version))
            card = cached.card if cached and cached.card_etag == card_etag else self._read_card(card_key, card_etag,
                                                                                                  name, version)
            model_key = self.keys.model_key(name, version, card.model_file)
            model_head = self._head(model_key, name, version)
            model_etag = model_head["ETag"].strip('"')
            background_head = self._background_head(name, version, card)
            background_etag = background_head["ETag"].strip('"') if background_head else None
            companion_heads = {file: self._head(self.keys.model_key(name, version, file), name, version)
                               for file in modality_for(card).companion_files(card)}
            companion_etags = {file: head["ETag"].strip('"') for file, head in companion_heads.items()}
            etags = (model_etag, card_etag, background_etag)
            if cached and (cached.model_etag, cached.card_etag, cached.background_etag) == etags \
                    and cached.companion_etags == companion_etags:
                self._memory.move_to_end((name, version))
                cached.source = "memory"
                self._touch(name, version)
                return cached
            loaded = self._load(name, version, card, model_key, etags, model_head["ContentLength"])
            if background_head:
                loaded.background = self._load_background(name, version, card, loaded.model, background_head)
            files = {file: self._read_companion(name, version, file, head) for file, head in companion_heads.items()}
            loaded.companion = modality_for(card).prepare_model(loaded, files)
            loaded.companion_etags = companion_etags
            self._memory[(name, version)] = loaded
            while len(self._memory) > self.settings.max_cached_models:
                self._memory.popitem(last=False)
            return loaded

    def stored_background(self, loaded: LoadedModel) -> np.ndarray | None:
        """``background.npy`` beside the model in its input space, checked as for SHAP, even in a store
        that does not load backgrounds (explain_core.sanity reads it); None when there is none."""
        if loaded.background is not None:
            return loaded.background
        key = self.keys.model_key(loaded.name, loaded.version, BACKGROUND_FILE)
        try:
            head = self._head(key, loaded.name, loaded.version)
        except UnknownModelError:
            return None
        return self._load_background(loaded.name, loaded.version, loaded.card, loaded.model, head)

    def _read_companion(self, name: str, version: str, file: str, head: dict) -> bytes:
        """A companion file's bytes (the version HEAD saw), size-checked before reading."""
        if head["ContentLength"] > MAX_COMPANION_BYTES:
            raise InvalidModelError(f"{file} of {name}/{version} is {head['ContentLength']} bytes; the limit is "
                                    f"{MAX_COMPANION_BYTES}", model=name)
        key = self.keys.model_key(name, version, file)
        return self.s3.get_object(Bucket=self.settings.model_bucket, Key=key, IfMatch=head["ETag"])["Body"].read()

    def _read_card(self, card_key: str, card_etag: str, name: str, version: str) -> ModelCard:
        body = self.s3.get_object(Bucket=self.settings.model_bucket, Key=card_key, IfMatch=card_etag)["Body"]
        return ModelCard.from_json(body.read(), model=name, version=version)

    def _load(self, name, version, card: ModelCard, model_key, etags, size) -> LoadedModel:
        started = time.perf_counter()
        model_etag, card_etag, background_etag = etags
        limit = self.settings.model_size_limit
        if size > limit:
            raise ModelTooLargeError(
                f"model {name}/{version} is {size} bytes; the limit is {limit} bytes (the smaller of "
                f"MAX_MODEL_BYTES={self.settings.max_model_bytes} and the function's /tmp size "
                f"{self.settings.tmp_capacity_bytes} less {self.settings.tmp_reserve_bytes} kept for outputs)",
                model=name, version=version, size=size, limit=limit,
            )
        directory = self._directory(name, version)
        path = os.path.join(directory, model_etag, card.model_file)
        source = "tmp"
        if not os.path.exists(path):
            source = "s3"
            # A new ETag supersedes older copies: free /tmp before downloading.
            shutil.rmtree(directory, ignore_errors=True)
            self._make_room(name, version, size)
            self._download(name, version, model_key, model_etag, path)
        self._touch(name, version)
        handler = handler_for(card)
        model = handler.load(path, name, version, card=card, settings=self.settings)
        handler.check(model, card)
        return LoadedModel(name, version, model, card, model_etag, card_etag, time.perf_counter() - started, source,
                           background_etag=background_etag)

    # ------------------------------------------------------------------ the /tmp cache
    def _directory(self, name: str, version: str) -> str:
        return os.path.join(self.settings.model_cache_dir, name, version)

    def _touch(self, name: str, version: str) -> None:
        """Mark the model's folder as used now: eviction takes the least recently used first."""
        try:
            os.utime(self._directory(name, version))
        except FileNotFoundError:  # evicted from disk while in memory: nothing to mark
            pass

    def _download(self, name: str, version: str, model_key: str, model_etag: str, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = path + ".part"
        try:
            # IfMatch: the bytes must be the version whose ETag names the cache directory.
            body = self.s3.get_object(Bucket=self.settings.model_bucket, Key=model_key, IfMatch=model_etag)["Body"]
            with open(partial, "wb") as out:
                shutil.copyfileobj(body, out, length=1024 * 1024)
            os.replace(partial, path)
        except BaseException as exc:
            # Never leave a partial file behind: it would hold /tmp space that nothing accounts for.
            shutil.rmtree(self._directory(name, version), ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise ModelTooLargeError(
                    f"model {name}/{version} does not fit in the function's /tmp (no space left while "
                    "downloading it); raise EphemeralStorageMB or use a smaller model",
                    model=name, version=version,
                ) from exc
            raise

    def _cached_folders(self) -> list[tuple[int, str, int]]:
        """(mtime in ns, path, bytes) of every ``<name>/<version>`` folder in the cache directory."""
        folders = []
        root = self.settings.model_cache_dir
        for model_name in _listdir(root):
            model_dir = os.path.join(root, model_name)
            for version in _listdir(model_dir):
                folder = os.path.join(model_dir, version)
                try:
                    folders.append((os.stat(folder).st_mtime_ns, folder, _tree_bytes(folder)))
                except FileNotFoundError:
                    continue
        return folders

    def _free_bytes(self, used: int) -> int:
        """Free /tmp space: the filesystem's, but never more than the configured /tmp size less the cache."""
        real = shutil.disk_usage(self.settings.model_cache_dir).free
        return min(real, self.settings.tmp_capacity_bytes - used)

    def _make_room(self, name: str, version: str, size: int) -> None:
        """Evict other models' folders, least recently used first, until ``size`` bytes fit with the reserve."""
        root = self.settings.model_cache_dir
        os.makedirs(root, exist_ok=True)
        needed = size + self.settings.tmp_reserve_bytes
        used = _tree_bytes(root)
        if self._free_bytes(used) >= needed:
            return
        keep = os.path.normpath(self._directory(name, version))
        candidates = sorted(f for f in self._cached_folders() if os.path.normpath(f[1]) != keep)
        evictable = sum(f[2] for f in candidates)
        real_free = shutil.disk_usage(root).free
        best = min(real_free + evictable, self.settings.tmp_capacity_bytes - used + evictable)
        if best < needed:
            raise ModelTooLargeError(
                f"model {name}/{version} ({size} bytes) does not fit in the function's /tmp even with every "
                f"other cached model evicted ({best} bytes free at most, {self.settings.tmp_reserve_bytes} of "
                "them kept for outputs)",
                model=name, version=version, size=size,
            )
        for _, folder, folder_bytes in candidates:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # drop the model's folder once its last version is gone
                os.rmdir(os.path.dirname(folder))
            used -= folder_bytes
            if self._free_bytes(used) >= needed:
                return

    def _load_background(self, name: str, version: str, card: ModelCard, model, head: dict) -> np.ndarray:
        key = self.keys.model_key(name, version, BACKGROUND_FILE)
        if head["ContentLength"] > self.settings.max_model_bytes:
            raise InvalidModelError(f"{BACKGROUND_FILE} of {name}/{version} is too large", model=name)
        etag = head["ETag"].strip('"')
        body = self.s3.get_object(Bucket=self.settings.model_bucket, Key=key, IfMatch=etag)["Body"].read()
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as exc:  # not an .npy file, or an object array (which would need pickle)
            raise InvalidModelError(
                f"{BACKGROUND_FILE} of {name}/{version} is not a numeric .npy array: {exc}", model=name
            ) from exc
        modality, handler = modality_for(card), handler_for(card)
        expected = modality.model_input_shape(card, handler, model)
        problem = None
        if array.dtype.kind not in "uif" or array.ndim != 1 + len(expected) or tuple(array.shape[1:]) != expected:
            problem = f"shape {array.shape} and dtype {array.dtype}; expected (n, {', '.join(map(str, expected))})"
        elif not 1 <= len(array) <= MAX_BACKGROUND_ROWS:
            problem = f"{len(array)} rows; expected 1 to {MAX_BACKGROUND_ROWS}"
        elif not np.all(np.isfinite(array)):
            problem = "non-finite values"
        if problem:
            raise InvalidModelError(f"{BACKGROUND_FILE} of {name}/{version} has {problem}", model=name)
        return modality.prepare_background(array, card)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _tree_bytes(path: str) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for filename in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, filename)).st_size
    return total
