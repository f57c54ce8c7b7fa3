"""The Lambda handler of a family's function, decorated with Powertools.

Each ``functions/<family>/app.py`` is one line on top of this: the decorators (structured logs
with the Lambda context, X-Ray tracing, EMF metrics with a cold-start metric) and the session
are the same for every family, so they exist once. A family's function takes two kinds of
events: SQS batches of S3 upload notifications, and API Gateway requests to
POST /explanations/<family> (routed by :mod:`explain_core.api`). Both share the warm model cache.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from explain_core import api
from explain_core.session import ExplanationSession
from explain_core.sqs_adapter import SqsAdapter


def family_lambda_handler(family: str):
    """Build the handler of ``family``: S3 uploads via SQS, and its explanation route of the REST API."""
    logger = Logger()
    tracer = Tracer()
    metrics = Metrics()
    # Created once per execution environment: clients, model cache and explainers stay warm.
    session = ExplanationSession.from_environment(family)
    uploads = SqsAdapter(session)
    endpoint = api.FamilyEndpoint(family, session)

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: dict, context: LambdaContext) -> dict:
        metrics.add_dimension(name="family", value=family)
        if api.is_api_event(event):
            return endpoint.resolve(event, context)
        return uploads.handle_sqs_event(event, context)

    lambda_handler.session = session
    lambda_handler.uploads = uploads
    lambda_handler.endpoint = endpoint
    return lambda_handler
