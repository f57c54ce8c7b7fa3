"""XGBoost models: ``model.json`` or ``model.ubj``, XGBoost's own formats (never a pickle).

Only the shap family's image installs XGBoost; the other functions refuse an XGBoost model with
a message that says where to send it.
"""

from explain_core.errors import InvalidModelError
from explain_core.frameworks.base import FrameworkHandler


class XGBoostHandler(FrameworkHandler):
    name = "xgboost"
    display_name = "XGBoost"
    model_files = ("model.json", "model.ubj")
    #: "margin": XGBoost's raw score (log-odds; one column for a binary model).
    outputs = ("margin", "logits", "probabilities")
    input_dtype = "float64"

    def load(self, path: str, name: str, version: str, card=None, settings=None):
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

    def check(self, model, card) -> None:
        features, stored = model.num_features(), self.stored_feature_names(model)
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

    def predict(self, model, inputs, card, batch_size: int):
        """Margins (N, classes). A binary model has one margin, the log-odds of class 1; class 0's
        is its negation, so both columns read as "log-odds of this class against the other"."""
        import numpy as np
        import xgboost

        # A model trained on a DataFrame stores its feature names and refuses unnamed data.
        data = xgboost.DMatrix(np.asarray(inputs, dtype=np.float64), feature_names=model.feature_names)
        margin = np.asarray(model.predict(data, output_margin=True), dtype=np.float64)
        return np.stack([-margin, margin], axis=1) if margin.ndim == 1 else margin

    def outputs_function(self, model, batch_size: int):
        return lambda x: self.predict(model, x, None, batch_size)

    def feature_count(self, model) -> int:
        return model.num_features()

    def stored_feature_names(self, model) -> list[str] | None:
        return list(model.feature_names) if model.feature_names else None
