"""The Lambda handler of an S3-triggered family, decorated with Powertools.

Each ``functions/<family>/app.py`` is one line on top of this: the decorators (structured logs
with the Lambda context, X-Ray tracing, EMF metrics with a cold-start metric) and the pipeline
are the same for every family, so they exist once.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from explain_core.pipeline import ExplanationPipeline


def sqs_lambda_handler(family: str):
    """Build the handler of ``family``: SQS batches of S3 upload notifications in, results in S3."""
    logger = Logger()
    tracer = Tracer()
    metrics = Metrics()
    # Created once per execution environment: clients, model cache and explainers stay warm.
    pipeline = ExplanationPipeline.from_environment(family)

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @metrics.log_metrics(capture_cold_start_metric=True)
    def lambda_handler(event: dict, context: LambdaContext) -> dict:
        metrics.add_dimension(name="family", value=family)
        return pipeline.handle_sqs_event(event, context)

    lambda_handler.pipeline = pipeline
    return lambda_handler
