"""The REST API's Lambda authorizer: API keys checked against the clients table (see explain_core.authorizer)."""

from explain_core.authorizer import lambda_handler  # noqa: F401
