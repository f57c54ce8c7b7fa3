"""The insights function's Lambda handler, decorated with Powertools (as the families' handlers)."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from explain_core.insights import INSIGHTS
from explain_core.insights.adapter import InsightsAdapter
from explain_core.session import ExplanationSession


def insights_lambda_handler():
    """Build the insights function's handler: SQS batches of spec uploads and part messages."""
    logger = Logger()
    tracer = Tracer()
    metrics = Metrics()
    # Created once per execution environment: clients and the model cache stay warm between parts.
    session = ExplanationSession.from_environment(INSIGHTS)
    adapter = InsightsAdapter(session)

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: dict, context: LambdaContext) -> dict:
        metrics.add_dimension(name="family", value=INSIGHTS)
        return adapter.handle_sqs_event(event, context)

    lambda_handler.session = session
    lambda_handler.adapter = adapter
    return lambda_handler
