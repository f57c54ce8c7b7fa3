"""Build a cache directory once, atomically: the demo models are trained into a scratch directory
that is then renamed, so a concurrent or interrupted build never leaves half a model in the cache."""

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def build_once(directory: Path, marker: str, build: Callable[[Path], object], *, force: bool = False):
    """Run ``build(scratch)`` and move its output to ``directory`` unless ``directory/marker`` exists
    (or ``force``); returns what ``build`` returned, or None when the cache was already there."""
    if not force and (directory / marker).exists():
        return None
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = directory.parent / f".{directory.name}-{uuid.uuid4().hex[:8]}"
    try:
        report = build(scratch)
        if directory.exists() and (force or not (directory / marker).exists()):
            shutil.rmtree(directory, ignore_errors=True)  # a forced rebuild, or an interrupted build's leftovers
        try:
            scratch.rename(directory)
        except OSError:  # another process finished first; its model is the same
            if not (directory / marker).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report
