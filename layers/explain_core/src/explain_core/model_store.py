"""Models loaded by name and version from S3, kept warm in memory and in /tmp.

Layout in the model bucket: ``models/<name>/<version>/card.json``, the model file the card names
(``model.keras``, or ``model.json`` / ``model.ubj`` for XGBoost) and optionally
``background.npy``, the background data of the SHAP explainers (image models: pixel images
``(n, height, width, 3)`` in 0-255 at the model's input size; tabular models: rows
``(n, features)`` in the card's feature order).

Keras v3 ``.keras`` archives are loaded with ``safe_mode=True`` (no arbitrary code from lambda
layers), XGBoost models from its own JSON/UBJ formats, arrays with ``allow_pickle=False``:
nothing is ever unpickled. Each request checks the stored ETags (HEAD requests), so replacing a
model, its card or its background in S3 takes effect on the next invocation.
"""

import io
import os
import shutil
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from botocore.exceptions import ClientError

from explain_core.errors import InvalidModelError, UnknownModelError, is_missing_object
from explain_core.keys import KeyLayout
from explain_core.model_card import CARD_FILE, ModelCard
from explain_core.settings import Settings

BACKGROUND_FILE = "background.npy"
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

    @property
    def feature_names(self) -> list[str] | None:
        """Tabular: the card's feature names, else those an XGBoost model stores, else None (the upload's)."""
        return self.card.feature_names or _stored_feature_names(self.model, self.card)

    @property
    def feature_count(self) -> int | None:
        return _feature_count(self.model, self.card) if self.card.modality == "tabular" else None


def _stored_feature_names(model, card: ModelCard) -> list[str] | None:
    return list(model.feature_names) if card.framework == "xgboost" and model.feature_names else None


def _feature_count(model, card: ModelCard) -> int:
    if card.framework == "xgboost":
        return model.num_features()
    return int(model.inputs[0].shape[-1])


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
        return [loaded.model for loaded in self._memory.values()]

    def _background_head(self, name: str, version: str) -> dict | None:
        if not self.with_background:
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
            background_head = self._background_head(name, version)
            background_etag = background_head["ETag"].strip('"') if background_head else None
            etags = (model_etag, card_etag, background_etag)
            if cached and (cached.model_etag, cached.card_etag, cached.background_etag) == etags:
                self._memory.move_to_end((name, version))
                cached.source = "memory"
                return cached
            loaded = self._load(name, version, card, model_key, etags, model_head["ContentLength"])
            if background_head:
                loaded.background = self._load_background(name, version, card, loaded.model, background_head)
            self._memory[(name, version)] = loaded
            while len(self._memory) > self.settings.max_cached_models:
                self._memory.popitem(last=False)
            return loaded

    def _read_card(self, card_key: str, card_etag: str, name: str, version: str) -> ModelCard:
        body = self.s3.get_object(Bucket=self.settings.model_bucket, Key=card_key, IfMatch=card_etag)["Body"]
        return ModelCard.from_json(body.read(), model=name, version=version)

    def _load(self, name, version, card: ModelCard, model_key, etags, size) -> LoadedModel:
        started = time.perf_counter()
        model_etag, card_etag, background_etag = etags
        if size > self.settings.max_model_bytes:
            raise InvalidModelError(
                f"model {name}/{version} is {size} bytes; the limit is {self.settings.max_model_bytes}", model=name
            )
        directory = os.path.join(self.settings.model_cache_dir, name, version)
        path = os.path.join(directory, model_etag, card.model_file)
        source = "tmp"
        if not os.path.exists(path):
            source = "s3"
            # A new ETag supersedes older copies: free /tmp before downloading.
            shutil.rmtree(directory, ignore_errors=True)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            partial = path + ".part"
            # IfMatch: the bytes must be the version whose ETag names the cache directory.
            body = self.s3.get_object(Bucket=self.settings.model_bucket, Key=model_key, IfMatch=model_etag)["Body"]
            with open(partial, "wb") as out:
                shutil.copyfileobj(body, out, length=1024 * 1024)
            os.replace(partial, path)
        if card.framework == "xgboost":
            model = self._load_xgboost(path, name, version)
        else:
            model = self._load_keras(path, name, version)
        self._check_card(model, card)
        return LoadedModel(name, version, model, card, model_etag, card_etag, time.perf_counter() - started, source,
                           background_etag=background_etag)

    def _load_background(self, name: str, version: str, card: ModelCard, model, head: dict) -> np.ndarray:
        from explain_core.attribution import preprocess

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
        if card.modality == "image":
            expected = (card.input_height, card.input_width, card.input_channels)
        else:
            expected = (_feature_count(model, card),)
        problem = None
        if array.dtype.kind not in "uif" or array.ndim != 1 + len(expected) or tuple(array.shape[1:]) != expected:
            problem = f"shape {array.shape} and dtype {array.dtype}; expected (n, {', '.join(map(str, expected))})"
        elif not 1 <= len(array) <= MAX_BACKGROUND_ROWS:
            problem = f"{len(array)} rows; expected 1 to {MAX_BACKGROUND_ROWS}"
        elif not np.all(np.isfinite(array)):
            problem = "non-finite values"
        if problem:
            raise InvalidModelError(f"{BACKGROUND_FILE} of {name}/{version} has {problem}", model=name)
        if card.modality == "image":
            return preprocess(array.astype(np.float32), card)
        return array.astype(np.float64)

    @staticmethod
    def _load_xgboost(path: str, name: str, version: str):
        try:
            import xgboost
        except ImportError as exc:  # only the shap function's image installs XGBoost
            raise InvalidModelError(
                f"model {name}/{version} is an XGBoost model, which this function cannot load; XGBoost models are "
                "explained by the shap family (upload under incoming/shap/)", model=name,
            ) from exc

        booster = xgboost.Booster()
        try:
            booster.load_model(path)  # JSON or UBJ, told apart by the file name: never a pickle
        except xgboost.core.XGBoostError as exc:
            raise InvalidModelError(f"model {name}/{version} is not a valid XGBoost model: {exc}", model=name) from exc
        return booster

    @staticmethod
    def _load_keras(path: str, name: str, version: str):
        import keras

        if not zipfile.is_zipfile(path):
            raise InvalidModelError(
                f"model {name}/{version} is not a Keras v3 .keras archive (legacy HDF5 and pickles are refused)",
                model=name,
            )
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad archive or an unsafe layer
            raise InvalidModelError(f"model {name}/{version} could not be loaded safely: {exc}", model=name) from exc

    @staticmethod
    def _check_card(model, card: ModelCard):
        if card.framework == "xgboost":
            features, stored = model.num_features(), _stored_feature_names(model, card)
            if card.feature_names and features != len(card.feature_names):
                raise InvalidModelError(
                    f"the XGBoost model has {features} features but the card names {len(card.feature_names)}",
                    model=card.name,
                )
            if card.feature_names and stored and stored != card.feature_names:
                raise InvalidModelError(
                    "the card's feature_names differ from those stored in the XGBoost model (names or order)",
                    model=card.name,
                )
            return
        if card.modality == "tabular":
            width = len(card.feature_names) if card.feature_names else model.inputs[0].shape[-1]
            expected_input = (None, width)
        else:
            expected_input = (None, card.input_height, card.input_width, card.input_channels)
        input_shape = tuple(model.inputs[0].shape)
        output_shape = tuple(model.outputs[0].shape)
        if input_shape != expected_input:
            raise InvalidModelError(
                f"model input shape {input_shape} does not match the card's {expected_input}", model=card.name
            )
        if len(output_shape) != 2 or output_shape[1] != len(card.class_names):
            raise InvalidModelError(
                f"model output shape {output_shape} does not match the card's {len(card.class_names)} classes",
                model=card.name,
            )
        if card.cam_layer is not None:
            try:
                model.get_layer(card.cam_layer)
            except ValueError as exc:
                raise InvalidModelError(
                    f"the card's cam_layer {card.cam_layer!r} is not a layer of the model", model=card.name
                ) from exc
