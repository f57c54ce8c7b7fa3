"""The local stand-in for AWS that the tests, the demo and the benchmark run the real handlers on.

- :mod:`devtools.local.aws`: a moto server (S3, SQS, DynamoDB) on loopback, wired as template.yaml
  describes: buckets, queues, tables, notifications, and each function's wiring (handler module,
  SQS source, environment, API routes); :data:`FAMILY_FUNCTIONS`, the family functions by family.
- :mod:`devtools.local.lambda_service`: what the Lambda service does: a handler imported and
  invoked under its function's environment with a context, and the SQS event source mapping.
- :mod:`devtools.local.events`: the SQS events of events/ as S3 would send them for the objects as
  they are now (their ETags); ``python -m devtools.local.events deliver EVENT_FILE``.
- :mod:`devtools.local.api_gateway`: the events API Gateway sends a Lambda proxy integration.

``python -m devtools.local [--port 5055]`` runs the emulator in the foreground, for manual use.
"""

from devtools.local.aws import FAMILY_FUNCTIONS

__all__ = ["FAMILY_FUNCTIONS"]
