"""Shared core of the serverless explanation functions.

Handlers in ``functions/<family>/app.py`` stay thin: they parse the Lambda event and hand it
to :class:`explain_core.pipeline.ExplanationPipeline`, which does the work with the pieces
in this package (model store, image decoding, method registry, result writing).
"""

from explain_core import runtime as _runtime

_runtime.prepare_writable_dirs()

__version__ = "0.1.0"
