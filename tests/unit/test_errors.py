"""Unit tests for explain_core.errors: codes, HTTP statuses and the error record shape."""

import json

import pytest

from explain_core import errors
from explain_core.errors import (
    DocumentTooLongError,
    EmptyMapError,
    ExplainError,
    ImageTooLargeError,
    InputChangedError,
    InputDeletedError,
    InvalidImageError,
    InvalidInsightsSpecError,
    InvalidKeyError,
    InvalidModelError,
    InvalidModelOutputError,
    InvalidParameterError,
    InvalidRenderingError,
    InvalidSanityRequestError,
    InvalidTableError,
    InvalidTargetError,
    InvalidTextError,
    JobTimedOutError,
    MalformedRequestError,
    MissingAuthorizerContextError,
    ModelCardError,
    ModelChangedError,
    ModelTooLargeError,
    OverMemoryBudgetError,
    OverTimeBudgetError,
    RequestInProgressError,
    RequestTooLargeError,
    RouteNotFoundError,
    TableTooLargeError,
    TextTooLargeError,
    UnknownInputError,
    UnknownJobError,
    UnknownMethodError,
    UnknownMetricError,
    UnknownModelError,
    UnknownSanityCheckError,
    UnsafeModelError,
    UnsupportedFormatError,
    UnsupportedMediaTypeError,
    UnsupportedModelError,
    UnsupportedTableFormatError,
    UnsupportedTextFormatError,
)

EXPECTED = [
    # class, code, status, direct parent
    (ExplainError, "invalid_request", 400, Exception),
    (InvalidKeyError, "invalid_key", 400, ExplainError),
    (InvalidImageError, "invalid_image", 400, ExplainError),
    (UnsupportedFormatError, "unsupported_format", 415, InvalidImageError),
    (ImageTooLargeError, "image_too_large", 413, InvalidImageError),
    (UnknownModelError, "unknown_model", 404, ExplainError),
    (InvalidModelError, "invalid_model", 422, ExplainError),
    (ModelCardError, "invalid_model_card", 422, InvalidModelError),
    (ModelTooLargeError, "model_too_large", 413, InvalidModelError),
    (UnsafeModelError, "unsafe_model", 422, InvalidModelError),
    (UnknownMethodError, "unknown_method", 422, ExplainError),
    (InvalidParameterError, "invalid_parameter", 422, ExplainError),
    (UnknownMetricError, "unknown_metric", 422, ExplainError),
    (EmptyMapError, "empty_map", 422, ExplainError),
    (InvalidTargetError, "invalid_target", 422, ExplainError),
    (InvalidRenderingError, "invalid_rendering", 422, ExplainError),
    (OverTimeBudgetError, "over_time_budget", 422, ExplainError),
    (OverMemoryBudgetError, "over_memory_budget", 422, ExplainError),
    (InvalidTableError, "invalid_table", 422, ExplainError),
    (UnsupportedTableFormatError, "unsupported_table_format", 415, InvalidTableError),
    (TableTooLargeError, "table_too_large", 413, InvalidTableError),
    (InvalidTextError, "invalid_text", 422, ExplainError),
    (UnsupportedTextFormatError, "unsupported_text_format", 415, InvalidTextError),
    (TextTooLargeError, "text_too_large", 413, InvalidTextError),
    (DocumentTooLongError, "document_too_long", 413, InvalidTextError),
    (UnsupportedModelError, "unsupported_model", 422, ExplainError),
    (InvalidModelOutputError, "invalid_model_output", 422, ExplainError),
    (InputDeletedError, "input_deleted", 404, ExplainError),
    (InputChangedError, "input_changed", 409, ExplainError),
    # the REST API's own
    (MalformedRequestError, "malformed_request", 400, ExplainError),
    (RequestTooLargeError, "request_too_large", 413, ImageTooLargeError),
    (UnknownInputError, "unknown_input", 404, ExplainError),
    (UnknownJobError, "unknown_job", 404, ExplainError),
    (UnknownSanityCheckError, "unknown_sanity_check", 404, ExplainError),
    (InvalidSanityRequestError, "invalid_sanity_request", 422, ExplainError),
    (InvalidInsightsSpecError, "invalid_insights_spec", 422, ExplainError),
    (ModelChangedError, "model_changed", 409, ExplainError),
    (MissingAuthorizerContextError, "missing_authorizer_context", 500, ExplainError),
    (JobTimedOutError, "timed_out", 500, ExplainError),
    (RouteNotFoundError, "not_found", 404, ExplainError),
    (RequestInProgressError, "request_in_progress", 409, ExplainError),
    (UnsupportedMediaTypeError, "unsupported_media_type", 415, ExplainError),
]


@pytest.mark.parametrize(("cls", "code", "status", "parent"), EXPECTED, ids=[c[0].__name__ for c in EXPECTED])
def test_code_status_and_hierarchy(cls, code, status, parent):
    assert cls.code == code
    assert cls.status == status
    assert cls.__bases__ == (parent,)
    assert issubclass(cls, ExplainError)


def test_every_error_class_in_the_module_is_covered():
    defined = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, ExplainError)
    }
    assert defined == {row[0] for row in EXPECTED}


def test_codes_are_unique():
    codes = [row[1] for row in EXPECTED]
    assert len(codes) == len(set(codes))


def test_to_dict_contents():
    exc = InvalidParameterError(
        "IntegratedGradients.steps=1000: must be <= 512", method="IntegratedGradients", bounds={"maximum": 512}
    )
    assert exc.to_dict() == {
        "type": "InvalidParameterError",
        "code": "invalid_parameter",
        "message": "IntegratedGradients.steps=1000: must be <= 512",
        "details": {"method": "IntegratedGradients", "bounds": {"maximum": 512}},
    }
    # The record is written to S3 as JSON.
    assert json.loads(json.dumps(exc.to_dict())) == exc.to_dict()


def test_to_dict_of_a_subclass_uses_the_subclass_code_and_name():
    exc = ImageTooLargeError("too big", size=10, limit=5)
    record = exc.to_dict()
    assert record["type"] == "ImageTooLargeError"
    assert record["code"] == "image_too_large"
    assert record["details"] == {"size": 10, "limit": 5}


def test_without_details_details_is_an_empty_dict():
    exc = InvalidKeyError("bad key")
    assert exc.details == {}
    assert exc.to_dict()["details"] == {}


def test_message_is_the_exception_text():
    exc = UnknownModelError("no model m/v1")
    assert str(exc) == "no model m/v1"
    assert exc.message == "no model m/v1"
    assert exc.args == ("no model m/v1",)


def test_errors_can_be_raised_and_caught_as_their_base():
    with pytest.raises(InvalidImageError) as info:
        raise UnsupportedFormatError("TIFF", format="TIFF")
    assert info.value.status == 415
    assert info.value.details == {"format": "TIFF"}
