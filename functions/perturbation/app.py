"""The perturbation family: black-box perturbation attributions (Occlusion, RISE, LIME, Kernel SHAP, Sobol, HSIC).

Triggered by S3 uploads under ``incoming/perturbation/`` through SQS; writes heatmaps, raw attributions
and a manifest per image to the results bucket. The work is done by explain_core's pipeline.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from explain_core.pipeline import ExplanationPipeline

FAMILY = "perturbation"

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# Created once per execution environment: clients, model cache and explainers stay warm.
pipeline = ExplanationPipeline.from_environment(FAMILY)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    metrics.add_dimension(name="family", value=FAMILY)
    return pipeline.handle_sqs_event(event, context)
