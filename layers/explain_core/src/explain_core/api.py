"""The REST API, routed with Powertools' event handler; requests and responses are pydantic models.

One resolver holds every route, so there is one OpenAPI document (``openapi.json``, generated
by ``python -m devtools.openapi``). template.yaml sends each route to one function:

- the light ``ApiFunction`` (no ML stack): GET /models, GET /models/{name}/{version},
  GET /methods, POST /uploads, GET /jobs/{job_id}, the sanity checks' routes and POST /insights
  (it stores a job specification; the insights function runs it);
- each family's function: POST /explanations/{family} (see :mod:`explain_core.explanation_requests`).

Every error is a typed JSON body (:class:`ErrorResponse`) with its HTTP status: 400 malformed,
404 unknown model, input, job or route, 409 a job request in progress, 413 too large,
415 unsupported format, 422 invalid method, parameter, target or insights specification (a body
that parses but whose ``spec`` the kinds' models refuse: the spec file's own invalid_insights_spec).
An unexpected failure is logged with its trace and answered with a 500 that names the request id,
never the trace.

Every route is behind the Lambda authorizer, whose principal (the API client's id) keeps each
client's requests, results and jobs to itself. A request without that principal means the
deployment is wrong (a route without the authorizer): it is refused with a 500
``missing_authorizer_context`` before anything is read or stored, never served as a shared client.
"""

import json
import os
import time
from functools import cached_property
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from explain_core.api_models import (
    JOB_ID_REGEX,
    NAME_REGEX,
    SANITY_REQUEST_ID_REGEX,
    ErrorResponse,
    ExplanationRequest,
    ExplanationResult,
    Family,
    InsightsJobAccepted,
    InsightsJobStatus,
    InsightsRequest,
    JobAccepted,
    JobStatus,
    MethodInfo,
    MethodList,
    MetricInfo,
    ModelInfo,
    ModelList,
    ParamInfo,
    SanityCheckAccepted,
    SanityCheckRequest,
    SanityCheckStatus,
    UploadRequest,
    UploadTicket,
)
from explain_core.errors import (
    ExplainError,
    InvalidInsightsSpecError,
    InvalidSanityRequestError,
    MalformedRequestError,
    MissingAuthorizerContextError,
    RequestInProgressError,
    RouteNotFoundError,
    UnsupportedMediaTypeError,
    UnsupportedModelError,
)
from explain_core.registry import METHODS, METRICS, get_method

#: Presigned upload tickets are valid this long.
UPLOAD_TICKET_SECONDS = 900
API_TITLE = "Serverless explanation functions"
API_VERSION = "1.0.0"

logger = Logger(child=True)
metrics = Metrics()
app = APIGatewayRestResolver(enable_validation=True)

_ERROR_DESCRIPTIONS = {
    400: "Malformed request: not JSON, or not matching the schema (details name the fields)",
    401: "No API key (API Gateway, Lambda authorizer)",
    403: "Unknown or disabled API key (API Gateway, Lambda authorizer)",
    404: "Unknown model, uploaded input, job or route",
    409: "The same job request is being created right now; retry",
    413: "Input too large (inline inputs: 4 MiB decoded; use POST /uploads), or a text over its limits "
         "(text_too_large, document_too_long)",
    415: "Unsupported image, table or text format, or a body that is not JSON",
    422: "Invalid method, parameter, target or model for the method (unsupported_model), an input that "
         "cannot be read (invalid_image, invalid_table, invalid_text: the details name the line), or an "
         "insights specification that is not valid (invalid_insights_spec: details.problems name the fields)",
    429: "Throttled by the stage's rate limit",
}


def _responses(success: dict[int, tuple[str, Any]], *errors: int) -> dict:
    documented = {code: {"description": text, "content": {"application/json": {"model": model}}}
                  for code, (text, model) in success.items()}
    for code in (400, 401, 403, 429, *errors):
        documented[code] = {"description": _ERROR_DESCRIPTIONS[code],
                            "content": {"application/json": {"model": ErrorResponse}}}
    return documented


class _Services:
    """Clients and stores of the catalog, upload and job routes, created on first use."""

    def reset(self) -> None:
        self.__dict__.clear()  # drops every cached_property

    @cached_property
    def settings(self):
        from explain_core.settings import Settings

        return Settings.from_env()

    @cached_property
    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5}))

    @cached_property
    def links(self):
        from explain_core.api_responses import Links

        return Links(self.settings)

    @cached_property
    def jobs(self):
        from explain_core.jobs import JobStore

        return JobStore(self.settings)

    @cached_property
    def insights(self):
        from explain_core.jobs import InsightsJobRequests

        return InsightsJobRequests(self.jobs, self.s3, self.settings.idempotency_table)

    @cached_property
    def catalog(self):
        from explain_core.model_catalog import ModelCatalog

        return ModelCatalog(self.s3, self.settings)


services = _Services()


class FamilyEndpoint:
    """POST /explanations/{family} in a family's function, sharing the function's warm session."""

    def __init__(self, family: str, session):
        self.family = family
        self.session = session

    @cached_property
    def requests(self):
        # Imported here: it pulls in the ML stack, which only the family functions have.
        from explain_core.api_responses import Links
        from explain_core.explanation_requests import ExplanationRequests
        from explain_core.jobs import JobStore

        settings = self.session.settings
        return ExplanationRequests(self.session, JobStore(settings), Links(settings),
                                   settings.idempotency_table)

    def resolve(self, event: dict, context) -> dict:
        app.append_context(family_endpoint=self)
        return resolve(event, context)


def _json(status: int, model, headers: dict | None = None) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON,
                    body=model.model_dump_json(exclude_none=False), headers=headers)


def _principal(event: dict) -> str | None:
    """The principal id the Lambda authorizer put in the event (API Gateway, and SAM CLI's start-api
    for TOKEN authorizers, copy it to ``requestContext.authorizer.principalId``), or None."""
    authorizer = (event.get("requestContext") or {}).get("authorizer")
    principal = authorizer.get("principalId") if isinstance(authorizer, dict) else None
    return principal if isinstance(principal, str) and principal.strip() else None


def _missing_principal(event: dict) -> MissingAuthorizerContextError:
    route = f"{event.get('httpMethod')} {event.get('resource') or event.get('path')}"
    return MissingAuthorizerContextError(
        f"the request reached the function without the Lambda authorizer's principal "
        f"(requestContext.authorizer.principalId): the deployment is wrong, route {route} must have the "
        f"API's Lambda authorizer (ApiKeyAuthorizer in template.yaml); nothing was processed",
        route=route,
    )


def _client_id() -> str:
    """The API client the Lambda authorizer identified (its principal id); never a shared default."""
    principal = _principal(app.current_event.raw_event)
    if principal is None:
        raise _missing_principal(app.current_event.raw_event)
    return principal


def _received_at() -> float:
    """When API Gateway received the request (epoch seconds); its timeout counts from then.

    Under ``sam local start-api`` (``AWS_SAM_LOCAL``) the stamp is not trusted: SAM CLI 1.170 fills
    every event's ``requestTimeEpoch`` with the time it started (a default argument evaluated once),
    so the function's own clock is used, as for a missing or implausible stamp.
    """
    epoch = app.current_event.raw_event.get("requestContext", {}).get("requestTimeEpoch")
    now = time.time()
    if not isinstance(epoch, (int, float)) or epoch < 1e11 or os.environ.get("AWS_SAM_LOCAL") == "true":
        return now
    received = epoch / 1000  # milliseconds
    return received if now - 60 <= received <= now + 1 else now


# ---------------------------------------------------------------------------------------- routes
@app.get("/methods", summary="Explanation methods, with their parameters' defaults and bounds", tags=["catalog"],
         operation_id="listMethods", responses=_responses({200: ("The registry", MethodList)}))
def list_methods(family: Annotated[Family | None, Query(description="Only this family's methods")] = None):
    methods = [
        MethodInfo(
            name=spec.name, family=spec.family, description=spec.description, reference=spec.reference,
            modalities=list(spec.modalities), frameworks=list(spec.frameworks),
            params={p.name: ParamInfo(**p.describe()) for p in spec.params},
        )
        for spec in METHODS if family is None or spec.family == family
    ]
    metrics = [
        MetricInfo(**{k: v for k, v in spec.describe().items() if k != "parameters"},
                   params={p.name: ParamInfo(**p.describe()) for p in spec.params})
        for spec in METRICS
    ]
    return _json(200, MethodList(methods=methods, metrics=metrics))


@app.get("/models", summary="Models in the model bucket, with their cards", tags=["catalog"],
         operation_id="listModels", responses=_responses({200: ("Models and cards", ModelList)}))
def list_models():
    return _json(200, services.catalog.list())


@app.get("/models/<name>/<version>", summary="One model's card", tags=["catalog"], operation_id="getModel",
         responses=_responses({200: ("The card", ModelInfo)}, 404))
def get_model(name: Annotated[str, Path(pattern=NAME_REGEX)], version: Annotated[str, Path(pattern=NAME_REGEX)]):
    return _json(200, services.catalog.info(name, version))


@app.post("/uploads", summary="A presigned upload for an input too large for a request body", tags=["inputs"],
          operation_id="createUpload",
          responses=_responses({201: ("A presigned POST", UploadTicket)}, 415))
def create_upload(upload: UploadRequest):
    import uuid

    settings = services.settings
    key = f"{settings.upload_prefix}{uuid.uuid4().hex}/{upload.filename}"
    # Any input kind may come this way (images, tables, texts); each is checked against its own limit when read.
    max_bytes = max(settings.max_image_bytes, settings.max_table_bytes, settings.max_text_bytes)
    ticket = services.links.upload(key, max_bytes, UPLOAD_TICKET_SECONDS)
    return _json(201, UploadTicket(input_key=key, url=ticket["url"], fields=ticket["fields"],
                                   expires_in=UPLOAD_TICKET_SECONDS, max_bytes=max_bytes))


@app.get("/jobs/<job_id>", summary="A job's status, and its results once done", tags=["explanations"],
         operation_id="getJob",
         responses=_responses({200: ("The job: an explanation job (JobStatus) or an insights job (InsightsJobStatus, "
                                     "family insights)", JobStatus | InsightsJobStatus)}, 404))
def get_job(job_id: Annotated[str, Path(pattern=JOB_ID_REGEX)]):
    from explain_core.insights import INSIGHTS
    from explain_core.jobs import insights_job_status, job_status

    job = services.jobs.get(job_id, _client_id())
    if job["family"] == INSIGHTS:
        return _json(200, insights_job_status(job, services.s3, services.links))
    return _json(200, job_status(job, services.s3, services.links))


@app.post(
    "/explanations/<family>", summary="Explain one image, table or text: now (200) or as a job (202)",
    tags=["explanations"], operation_id="explain",
    responses=_responses({200: ("Explained now", ExplanationResult), 202: ("Started as a job", JobAccepted)},
                         404, 409, 413, 415, 422),
)
def explain(family: Annotated[Family, Path()], request: ExplanationRequest):
    endpoint = app.context.get("family_endpoint")
    if endpoint is None or endpoint.family != family:  # each family's route goes to that family's function
        raise RouteNotFoundError(f"this function does not serve /explanations/{family}", family=family)
    outcome = endpoint.requests.handle(request, client_id=_client_id(), received_at=_received_at(),
                                       context=app.lambda_context)
    if isinstance(outcome, ExplanationResult):
        metrics.add_metric(name="CachedExplanations" if outcome.cached else "SyncExplanations",
                           unit=MetricUnit.Count, value=1)
        return _json(200, outcome)
    metrics.add_metric(name="JobsStarted", unit=MetricUnit.Count, value=1)
    return _json(202, outcome, headers={"Location": outcome.status_url})


@app.post("/sanity-checks", summary="Sanity-check a family's methods on a model (Adebayo et al. 2018): queued (202)",
          tags=["sanity checks"], operation_id="createSanityCheck",
          responses=_responses({202: ("Queued: the family's function writes the report", SanityCheckAccepted)},
                               404, 422))
def create_sanity_check(request: SanityCheckRequest):
    from explain_core.sanity import store_request

    client_id = _client_id()
    card = services.catalog.card(request.model.name, request.model.version)  # 404 for an unknown model
    if card.modality != "image":
        raise UnsupportedModelError(f"sanity checks compare image heatmaps; {card.name}/{card.version} is a "
                                    f"{card.modality} model", modality=card.modality)
    for name in request.methods or []:
        if name.lower() != "all" and not get_method(name, request.family).supports(card):
            raise UnsupportedModelError(f"{name} cannot explain {card.name}/{card.version}", method=name)
    if request.images.source != "background":
        # A prefix could name other clients' inputs: the API checks the model's own background images.
        raise InvalidSanityRequestError("through the API a sanity check runs on the model's background images; "
                                        "upload a request file to the bucket to use images under a prefix",
                                        source=request.images.source)
    accepted = SanityCheckAccepted(status="queued", **store_request(services.s3, services.settings, request,
                                                                    client_id))
    metrics.add_metric(name="SanityChecksRequested", unit=MetricUnit.Count, value=1)
    return _json(202, accepted, headers={"Location": accepted.status_url})


@app.get("/sanity-checks/<family>/<name>/<version>/<request_id>",
         summary="A sanity check's status, and its report once written", tags=["sanity checks"],
         operation_id="getSanityCheck", responses=_responses({200: ("The sanity check", SanityCheckStatus)}, 404))
def get_sanity_check(family: Annotated[Family, Path()], name: Annotated[str, Path(pattern=NAME_REGEX)],
                     version: Annotated[str, Path(pattern=NAME_REGEX)],
                     request_id: Annotated[str, Path(pattern=SANITY_REQUEST_ID_REGEX)]):
    from explain_core.sanity import request_status

    status = request_status(services.s3, services.links, family, name, version, request_id, _client_id())
    return _json(200, SanityCheckStatus(**status))


@app.post("/insights", summary="Model insights (feature visualization, concepts, examples) as a job: queued (202)",
          tags=["insights"], operation_id="createInsightsJob",
          responses=_responses({202: ("Queued: the insights function plans and runs it; GET /jobs/{job_id}",
                                      InsightsJobAccepted)}, 404, 409, 422))
def create_insights_job(request: InsightsRequest):
    client_id = _client_id()
    card = services.catalog.card(request.model.name, request.model.version)  # 404 for an unknown model
    if card.modality != "image":
        raise UnsupportedModelError(f"insights explain image models; {card.name}/{card.version} is a "
                                    f"{card.modality} model", modality=card.modality)
    accepted = services.insights.handle(request, client_id=client_id, context=app.lambda_context)
    metrics.add_metric(name="InsightsJobsStarted", unit=MetricUnit.Count, value=1)
    return _json(202, accepted, headers={"Location": accepted.status_url})


# ---------------------------------------------------------------------------------------- errors
def _error(status: int, error: dict) -> Response:
    request_id = getattr(app.lambda_context, "aws_request_id", None)
    return _json(status, ErrorResponse(error=error, request_id=request_id))


@app.exception_handler(ExplainError)
def typed_error(exc: ExplainError):
    if exc.status >= 500:
        logger.error("request failed", extra={"error": exc.to_dict()})
    else:
        logger.info("request refused", extra={"error": exc.to_dict()})
    metrics.add_metric(name="RequestsRefused", unit=MetricUnit.Count, value=1)
    return _error(exc.status, exc.to_dict())


@app.exception_handler(RequestValidationError)
def malformed(exc: RequestValidationError):
    # Powertools reports schema violations as 422; a body the schema refuses is malformed (400),
    # and 422 stays for requests that parse but ask for something invalid.
    details = [{"loc": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", "")), "type": e.get("type")}
               for e in exc.errors()]
    invalid_json = any(d["type"] == "json_invalid" for d in details)
    spec_errors = [d for d in details if d["loc"][:2] == ["body", "spec"]]
    if details and len(spec_errors) == len(details) and app.current_event.resource == "/insights":
        # The request parsed; its job specification asks for something invalid: the spec file's own error.
        problems = [f"{'.'.join(d['loc'][1:])}: {d['message']}" for d in details]
        return _error(422, InvalidInsightsSpecError("the insights specification is not valid: " +
                                                    "; ".join(problems[:10]), problems=problems[:20]).to_dict())
    message = "the body is not valid JSON" if invalid_json else "the request does not match the schema: " + "; ".join(
        f"{'.'.join(d['loc'][1:]) or d['loc'][0] if d['loc'] else '<body>'}: {d['message']}" for d in details[:10])
    return _error(400, MalformedRequestError(message, errors=details[:20]).to_dict())


@app.exception_handler(IdempotencyAlreadyInProgressError)
def in_progress(exc: IdempotencyAlreadyInProgressError):
    return _error(409, RequestInProgressError("the same job request is being created; retry in a second").to_dict())


@app.not_found
def route_not_found(exc: NotFoundError):
    event = app.current_event
    return _error(404, RouteNotFoundError(f"no route {event.http_method} {event.path}").to_dict())


@app.exception_handler(Exception)
def unexpected(exc: Exception):
    logger.exception("request failed")
    request_id = getattr(app.lambda_context, "aws_request_id", None)
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, {
        "type": "InternalError", "code": "internal_error", "details": {},
        "message": f"the request failed on our side; it is logged under request id {request_id}",
    })


# ---------------------------------------------------------------------------------------- handler
def resolve(event: dict, context) -> dict:
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    if _principal(event) is None:  # before anything is read or stored
        error = _missing_principal(event)
        logger.error("request without the Lambda authorizer's principal: the route lacks the authorizer",
                     extra={"error": error.to_dict()})
        metrics.add_metric(name="RequestsWithoutAuthorizer", unit=MetricUnit.Count, value=1)
        return _refusal(error, context)
    event, refusal = _with_json_content_type(event, context)
    return refusal if refusal is not None else app.resolve(event, context)


def _refusal(error: ExplainError, context) -> dict:
    """A typed error answered before the resolver runs."""
    response = ErrorResponse(error=error.to_dict(), request_id=getattr(context, "aws_request_id", None))
    return {"statusCode": error.status, "multiValueHeaders": {"Content-Type": ["application/json"]},
            "body": response.model_dump_json(), "isBase64Encoded": False}


def _with_json_content_type(event: dict, context) -> tuple[dict, dict | None]:
    """Bodies are JSON: the event with its Content-Type normalised, or a 415 answer.

    The media type is matched case-insensitively, as HTTP defines it; a missing one is JSON; and a
    JSON body sent as form-urlencoded (what ``curl -d`` says by default) is taken as JSON rather
    than parsed as a form. Any other media type gets a typed 415.
    """
    if not event.get("body"):
        return event, None
    headers = event.get("headers") or {}
    declared = next((value for name, value in headers.items() if name.lower() == "content-type"), None)
    media = (declared or "application/json").split(";")[0].strip().lower()
    if media == "application/json" or (media == "application/x-www-form-urlencoded" and _is_json_object(event)):
        normalised = dict(event)
        for field, value in (("headers", "application/json"), ("multiValueHeaders", ["application/json"])):
            if event.get(field) is not None or field == "headers":
                kept = {k: v for k, v in (event.get(field) or {}).items() if k.lower() != "content-type"}
                normalised[field] = {**kept, "Content-Type": value}
        return normalised, None
    return event, _refusal(UnsupportedMediaTypeError(
        f"request bodies are JSON (Content-Type: application/json), not {media}", content_type=media), context)


def _is_json_object(event: dict) -> bool:
    body = event["body"]
    try:
        if event.get("isBase64Encoded"):
            import base64

            body = base64.b64decode(body)
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def is_api_event(event: dict) -> bool:
    return isinstance(event, dict) and "httpMethod" in event and "requestContext" in event


def openapi_json() -> str:
    """The OpenAPI document of every route (kept in the repository as openapi.json)."""
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return app.get_openapi_json_schema(
        title=API_TITLE, version=API_VERSION,
        description="Explanations of image, tabular and text models (Xplique, SHAP) as a REST API. Send "
                    "`Authorization: Bearer <API key>`; keys are checked by a Lambda authorizer.",
        security_schemes={"apiKey": HTTPBearer(description="An API key from the clients table")},
        security=[{"apiKey": []}],
    )


def api_lambda_handler():
    """The handler of the light ApiFunction: every route except the explanations."""
    tracer, metrics = Tracer(), Metrics()
    root_logger = Logger()
    services.reset()  # clients for the environment this handler is built in

    @root_logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
    @tracer.capture_lambda_handler
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: dict, context: LambdaContext) -> dict:
        return resolve(event, context)

    return lambda_handler
