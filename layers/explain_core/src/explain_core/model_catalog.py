"""The models in the model bucket and their cards (GET /models), without loading any model."""

from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from explain_core.api_models import ErrorDetail, ModelInfo, ModelList
from explain_core.errors import ExplainError, UnknownModelError, is_missing_object
from explain_core.keys import KeyLayout
from explain_core.model_card import CARD_FILE, ModelCard
from explain_core.settings import Settings

#: Cards listed in one answer at most (each is one GET).
MAX_MODELS_LISTED = 200


class ModelCatalog:
    def __init__(self, s3_client, settings: Settings):
        self.s3 = s3_client
        self.settings = settings
        self.keys = KeyLayout(settings)

    def card(self, name: str, version: str) -> ModelCard:
        key = self.keys.model_key(name, version, CARD_FILE)
        try:
            raw = self.s3.get_object(Bucket=self.settings.model_bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if is_missing_object(exc):
                raise UnknownModelError(f"model {name}/{version} has no {CARD_FILE}", model=name,
                                        version=version) from exc
            raise
        return ModelCard.from_json(raw, model=name, version=version)

    def info(self, name: str, version: str) -> ModelInfo:
        """The model's card; an invalid card is reported in the entry rather than failing the list."""
        try:
            return ModelInfo(name=name, version=version, card=self.card(name, version).model_dump(mode="json"))
        except ExplainError as exc:
            if isinstance(exc, UnknownModelError):
                raise
            return ModelInfo(name=name, version=version, error=ErrorDetail(**exc.to_dict()))

    def list(self) -> ModelList:
        prefix = self.settings.models_prefix
        found, truncated = [], False
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.settings.model_bucket,
                                                                       Prefix=prefix):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(prefix):].split("/")
                if len(parts) == 3 and parts[2] == CARD_FILE:
                    if len(found) == MAX_MODELS_LISTED:
                        truncated = True
                        break
                    found.append((parts[0], parts[1]))
            if truncated:
                break
        with ThreadPoolExecutor(max_workers=8) as pool:
            models = list(pool.map(lambda ref: self._listed(*ref), sorted(found)))
        return ModelList(models=[m for m in models if m is not None], truncated=truncated)

    def _listed(self, name: str, version: str) -> ModelInfo | None:
        try:
            return self.info(name, version)
        except ExplainError:  # removed since the listing, or a name the store would refuse
            return None
