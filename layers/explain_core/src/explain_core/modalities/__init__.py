"""Modality plug-ins: one module per kind of input (images, tables, text), asked through :func:`modality_for`.

Adding a modality means adding a module with a :class:`Modality` subclass (its model card fields,
its parts of the manifest, its limits, decoding, explaining and cost), listing it in
``MODALITIES`` and registering the methods that explain it (:mod:`explain_core.registry`). The
model card (:mod:`explain_core.model_card`) and the manifest (:mod:`explain_core.manifest`) are
assembled from the modalities listed here.
"""

from explain_core.modalities.base import Explained, Modality
from explain_core.modalities.image import ImageModality
from explain_core.modalities.table import TableModality
from explain_core.modalities.text import TextModality

MODALITIES: dict[str, Modality] = {modality.name: modality for modality in (ImageModality(), TableModality(),
                                                                            TextModality())}


def modality_for(card) -> Modality:
    """The plug-in of the card's modality."""
    return MODALITIES[card.modality]


__all__ = ["MODALITIES", "Explained", "Modality", "modality_for"]
