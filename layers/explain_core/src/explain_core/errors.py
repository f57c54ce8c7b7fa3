"""Typed errors.

:class:`ExplainError` subclasses describe problems with the user's input (image, model
choice, method, parameters). They are final: the function writes an error record and does
not retry. Any other exception is treated as transient and the message is retried, then
sent to the dead-letter queue.
"""


def is_missing_object(error) -> bool:
    """True when a botocore ClientError says the S3 object does not exist (GET: NoSuchKey, HEAD: 404)."""
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "NoSuchVersion")


def is_precondition_failed(error) -> bool:
    """True when a botocore ClientError is S3's answer to an If-Match / If-None-Match that did not hold."""
    return error.response.get("Error", {}).get("Code") in ("412", "PreconditionFailed", "ConditionalRequestConflict")


class ExplainError(Exception):
    """A problem with the request that retrying cannot fix."""

    code = "invalid_request"
    #: HTTP status for the API family of functions.
    status = 400

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "code": self.code, "message": self.message, "details": self.details}


class InvalidKeyError(ExplainError):
    code = "invalid_key"


class InvalidImageError(ExplainError):
    code = "invalid_image"


class UnsupportedFormatError(InvalidImageError):
    code = "unsupported_format"
    status = 415


class ImageTooLargeError(InvalidImageError):
    code = "image_too_large"
    status = 413


class UnknownModelError(ExplainError):
    code = "unknown_model"
    status = 404


class InvalidModelError(ExplainError):
    code = "invalid_model"
    status = 422


class ModelCardError(InvalidModelError):
    code = "invalid_model_card"


class ModelTooLargeError(InvalidModelError):
    """A model over the size limit, or one that cannot fit in /tmp even after evicting every other cached model."""

    code = "model_too_large"
    status = 413


class UnsafeModelError(InvalidModelError):
    """A model file that would run code or reach files while loading (Lambda layers, non-Keras modules, ...)."""

    code = "unsafe_model"


class UnknownMethodError(ExplainError):
    code = "unknown_method"
    status = 422


class InvalidParameterError(ExplainError):
    code = "invalid_parameter"
    status = 422


class UnknownMetricError(ExplainError):
    """A quality metric the registry does not have (explain_core.registry.METRICS)."""

    code = "unknown_metric"
    status = 422


class EmptyMapError(ExplainError):
    """A quality metric asked to score a map that is zero everywhere: there is no ranking to score
    (Xplique's Sparseness would say -1, outside its range)."""

    code = "empty_map"
    status = 422


class OverTimeBudgetError(ExplainError):
    """A method would not finish in the invocation's remaining time (a timeout would fail the whole batch)."""

    code = "over_time_budget"
    status = 422


class OverMemoryBudgetError(ExplainError):
    """A method whose estimated peak memory exceeds what the function has left, even at a batch of one
    (explain_core.memory): an out-of-memory kill would fail the whole batch."""

    code = "over_memory_budget"
    status = 422


class InvalidTargetError(ExplainError):
    code = "invalid_target"
    status = 422


class InvalidRenderingError(ExplainError):
    """Heatmap drawing options (polarity, colormap, clip-percentiles, alpha, overlay, colorbar) that are
    unknown or out of bounds (explain_core.rendering)."""

    code = "invalid_rendering"
    status = 422


class InvalidSanityRequestError(ExplainError):
    """A sanity-check request (a request file or POST /sanity-checks) that is not valid (explain_core.sanity)."""

    code = "invalid_sanity_request"
    status = 422


class InvalidInsightsSpecError(ExplainError):
    """An insights job specification (a spec file or POST /insights) that is not valid (explain_core.insights)."""

    code = "invalid_insights_spec"
    status = 422


class ModelChangedError(ExplainError):
    """The model was replaced while an insights job ran: its parts would mix two models."""

    code = "model_changed"
    status = 409


class InvalidTableError(ExplainError):
    """A tabular upload (CSV or JSON Lines) that cannot be read as the model's features."""

    code = "invalid_table"
    status = 422


class UnsupportedTableFormatError(InvalidTableError):
    code = "unsupported_table_format"
    status = 415


class TableTooLargeError(InvalidTableError):
    code = "table_too_large"
    status = 413


class InvalidTextError(ExplainError):
    """A text upload (.txt, JSON Lines or CSV) that cannot be read as documents for a text model."""

    code = "invalid_text"
    status = 422


class UnsupportedTextFormatError(InvalidTextError):
    """A text upload whose extension is not one of explain_core.texts.SUPPORTED_EXTENSIONS."""

    code = "unsupported_text_format"
    status = 415


class TextTooLargeError(InvalidTextError):
    """A text upload over the byte limit (MaxTextBytes) or the documents-per-file limit (MaxDocumentsPerFile)."""

    code = "text_too_large"
    status = 413


class DocumentTooLongError(InvalidTextError):
    """One document with more tokens than the limit (MaxTokensPerDocument)."""

    code = "document_too_long"
    status = 413


class UnsupportedModelError(ExplainError):
    """The method cannot explain this model (wrong modality or framework, or a layer it cannot propagate)."""

    code = "unsupported_model"
    status = 422


class InvalidModelOutputError(ExplainError):
    """The model produced NaN or infinity (in its predictions, or in a method's attributions)."""

    code = "invalid_model_output"
    status = 422


class InputDeletedError(ExplainError):
    """The uploaded object (or the version the event named) no longer exists."""

    code = "input_deleted"
    status = 404


class InputChangedError(ExplainError):
    """The uploaded object was replaced after its event: that event's version is gone or superseded."""

    code = "input_changed"
    status = 409


# ---------------------------------------------------------------------- the REST API's own errors
class MalformedRequestError(ExplainError):
    """A request body that is not JSON or does not match the request schema."""

    code = "malformed_request"


class RequestTooLargeError(ImageTooLargeError):
    """An inline (base64) input over the request limit: upload it with POST /uploads instead."""

    code = "request_too_large"


class UnsupportedMediaTypeError(ExplainError):
    """A request body that is not JSON."""

    code = "unsupported_media_type"
    status = 415


class UnknownInputError(ExplainError):
    code = "unknown_input"
    status = 404


class UnknownSanityCheckError(ExplainError):
    code = "unknown_sanity_check"
    status = 404


class UnknownJobError(ExplainError):
    code = "unknown_job"
    status = 404


class RouteNotFoundError(ExplainError):
    code = "not_found"
    status = 404


class RequestInProgressError(ExplainError):
    """The same job request is being created by another call right now (idempotency)."""

    code = "request_in_progress"
    status = 409


class MissingAuthorizerContextError(ExplainError):
    """An API request without the Lambda authorizer's principal: the deployment is wrong, not the request.

    Every route has the authorizer (template.yaml); a request reaching a function without it is
    refused rather than served as some shared client, which would mix clients' requests and jobs.
    """

    code = "missing_authorizer_context"
    status = 500


class JobTimedOutError(ExplainError):
    """Describes a job whose last attempt started but never finished: its invocation was killed
    (the function's timeout or memory limit). Never raised: a job status carries it."""

    code = "timed_out"
    status = 500
