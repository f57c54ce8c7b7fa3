"""The base of a framework handler: one ML library's models, loaded and run the same way.

Modelled on shap's per-library tree handlers (``shap/explainers/_tree_handlers``): the store,
the explainers and the session ask the handler that can handle a model card instead of
branching on the library. A handler module imports its library lazily: the light API image
(no ML stack) validates model cards against the handlers' class attributes without it.
"""

from typing import ClassVar


class FrameworkHandler:
    """How one library's models are loaded, checked against their card and run."""

    #: The card's ``framework`` (derived from its model file).
    name: ClassVar[str]
    #: How people write the library's name in messages.
    display_name: ClassVar[str]
    #: Model files (beside card.json) this handler loads.
    model_files: ClassVar[tuple[str, ...]]
    #: The card ``output`` values its models can produce.
    outputs: ClassVar[tuple[str, ...]]
    #: dtype name of the model's input arrays ("float32", "float64").
    input_dtype: ClassVar[str]

    @classmethod
    def can_handle(cls, card) -> bool:
        return card.model_file in cls.model_files

    def load(self, path: str, name: str, version: str, card=None, settings=None):
        """The model stored at ``path`` (never unpickled); InvalidModelError when it cannot be read. ``card`` and
        ``settings`` (the store's) are for handlers whose file needs them (an archive's limits and options)."""
        raise NotImplementedError

    def check(self, model, card) -> None:
        """Raise InvalidModelError when the loaded model does not match its card."""
        raise NotImplementedError

    def predict(self, model, inputs, card, batch_size: int):
        """The model's raw outputs (N, classes) as float64: logits, probabilities or margins."""
        raise NotImplementedError

    def outputs_function(self, model, batch_size: int):
        """A fast callable ``x -> raw outputs (N, classes)`` for explainers that call the model many times."""
        raise NotImplementedError

    def feature_count(self, model) -> int:
        """Tabular models: the number of input features."""
        raise NotImplementedError

    def stored_feature_names(self, model) -> list[str] | None:
        """Feature names stored in the model file itself, if the library keeps them."""
        return None
