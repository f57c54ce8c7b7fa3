"""Framework handlers: one module per ML library (Keras, XGBoost) or model packaging (SageMaker's
``model.tar.gz``), asked through :func:`handler_for`.

Adding a library means adding a module with a :class:`FrameworkHandler` subclass and listing it
in ``HANDLERS``; nothing else branches on the framework.
"""

from explain_core.frameworks.base import FrameworkHandler
from explain_core.frameworks.keras import KerasHandler
from explain_core.frameworks.sagemaker import SageMakerHandler
from explain_core.frameworks.xgboost import XGBoostHandler

HANDLERS: tuple[FrameworkHandler, ...] = (KerasHandler(), SageMakerHandler(), XGBoostHandler())
#: Model file -> framework name, for the model card.
MODEL_FILES: dict[str, str] = {file: handler.name for handler in HANDLERS for file in handler.model_files}


def handler_for(card) -> FrameworkHandler:
    """The handler of the card's model file."""
    for handler in HANDLERS:
        if handler.can_handle(card):
            return handler
    raise ValueError(f"no framework handler loads {card.model_file!r}; known files: {', '.join(MODEL_FILES)}")


def handlers_named(names) -> list[FrameworkHandler]:
    return [handler for handler in HANDLERS if handler.name in names]


def handlers_with_output(output: str) -> list[FrameworkHandler]:
    return [handler for handler in HANDLERS if output in handler.outputs]


__all__ = ["HANDLERS", "MODEL_FILES", "FrameworkHandler", "handler_for", "handlers_named", "handlers_with_output"]
