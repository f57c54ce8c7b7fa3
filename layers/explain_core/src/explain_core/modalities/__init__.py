"""Modality plug-ins: one module per kind of input (images, tables), asked through :func:`modality_for`.

Adding a modality means adding a module with a :class:`Modality` subclass, listing it in
``MODALITIES`` and registering the methods that explain it (:mod:`explain_core.registry`).
"""

from explain_core.modalities.base import Explained, Modality
from explain_core.modalities.image import ImageModality
from explain_core.modalities.table import TableModality

MODALITIES: dict[str, Modality] = {modality.name: modality for modality in (ImageModality(), TableModality())}


def modality_for(card) -> Modality:
    """The plug-in of the card's modality."""
    return MODALITIES[card.modality]


__all__ = ["MODALITIES", "Explained", "Modality", "modality_for"]
