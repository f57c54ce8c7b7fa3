"""Models loaded by name and version from S3, kept warm in memory and in /tmp.

Layout in the model bucket: ``models/<name>/<version>/model.keras`` and ``card.json``.
Only Keras v3 ``.keras`` archives are loaded, with ``safe_mode=True`` (no arbitrary code from
lambda layers); nothing is ever unpickled. Each request checks the stored ETags (two HEAD
requests), so replacing a model in S3 takes effect on the next invocation.
"""

import os
import shutil
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass

from botocore.exceptions import ClientError

from explain_core.errors import InvalidModelError, UnknownModelError
from explain_core.keys import KeyLayout
from explain_core.model_card import ModelCard
from explain_core.settings import Settings

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"


@dataclass
class LoadedModel:
    name: str
    version: str
    model: object  # keras.Model
    card: ModelCard
    model_etag: str
    card_etag: str
    load_seconds: float
    source: str  # "memory", "tmp" or "s3": where this request found it


def _is_missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class ModelStore:
    def __init__(self, s3_client, settings: Settings):
        self.s3 = s3_client
        self.settings = settings
        self.keys = KeyLayout(settings)
        self._memory: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def _head(self, key: str, model: str, version: str) -> dict:
        try:
            return self.s3.head_object(Bucket=self.settings.model_bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                raise UnknownModelError(
                    f"model {model}/{version} is not in s3://{self.settings.model_bucket}/"
                    f"{self.keys.model_key(model, version, '')} (missing {os.path.basename(key)})",
                    model=model,
                    version=version,
                ) from exc
            raise

    def models_in_memory(self) -> list:
        return [loaded.model for loaded in self._memory.values()]

    def get(self, name: str, version: str) -> LoadedModel:
        model_key = self.keys.model_key(name, version, MODEL_FILE)
        card_key = self.keys.model_key(name, version, CARD_FILE)
        model_head = self._head(model_key, name, version)
        card_head = self._head(card_key, name, version)
        model_etag, card_etag = model_head["ETag"].strip('"'), card_head["ETag"].strip('"')
        with self._lock:
            cached = self._memory.get((name, version))
            if cached and (cached.model_etag, cached.card_etag) == (model_etag, card_etag):
                self._memory.move_to_end((name, version))
                cached.source = "memory"
                return cached
            loaded = self._load(name, version, model_key, card_key, model_etag, card_etag, model_head["ContentLength"])
            self._memory[(name, version)] = loaded
            while len(self._memory) > self.settings.max_cached_models:
                self._memory.popitem(last=False)
            return loaded

    def _load(self, name, version, model_key, card_key, model_etag, card_etag, size) -> LoadedModel:
        started = time.perf_counter()
        if size > self.settings.max_model_bytes:
            raise InvalidModelError(
                f"model {name}/{version} is {size} bytes; the limit is {self.settings.max_model_bytes}", model=name
            )
        card_body = self.s3.get_object(Bucket=self.settings.model_bucket, Key=card_key, IfMatch=card_etag)["Body"]
        card = ModelCard.from_json(card_body.read(), model=name, version=version)

        directory = os.path.join(self.settings.model_cache_dir, name, version)
        path = os.path.join(directory, model_etag, MODEL_FILE)
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
        model = self._load_keras(path, name, version)
        self._check_card(model, card)
        return LoadedModel(name, version, model, card, model_etag, card_etag, time.perf_counter() - started, source)

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
