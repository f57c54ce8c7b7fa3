"""Shared core of the serverless explanation functions.

Handlers in ``functions/<family>/app.py`` stay thin: two adapters, one per entry point
(:mod:`explain_core.sqs_adapter` for S3 uploads, :mod:`explain_core.explanation_requests` for
the REST API), drive one public core, :class:`explain_core.session.ExplanationSession`. What
differs by kind of input lives in :mod:`explain_core.modalities`, by ML library in
:mod:`explain_core.frameworks`, by method in :mod:`explain_core.registry`.
"""

from explain_core import runtime as _runtime

_runtime.prepare_writable_dirs()

__version__ = "0.1.0"
