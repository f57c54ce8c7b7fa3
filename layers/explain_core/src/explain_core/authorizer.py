"""The API's Lambda authorizer (TOKEN type): ``Authorization: Bearer <API key>``.

Keys are random 32-byte tokens. The clients table stores only their SHA-256 (``key_hash``), the
client id and an ``enabled`` flag, so a leaked table reveals no key. A known, enabled key gets
an Allow policy for the whole API (API Gateway caches it for ReauthorizeEvery seconds) with the
client id as principal, which the routes use to keep each client's jobs to itself. Anything else
gets an explicit Deny, which API Gateway (and ``sam local start-api``) answers with 403; a request
without the header never reaches the authorizer and is answered 401.
"""

import hashlib
import hmac
import os
import re
import secrets

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerTokenEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

KEY_PREFIX = "xk_"
BEARER = re.compile(r"^Bearer (xk_[A-Za-z0-9_-]{43})$")

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "explain-authorizer"))
_table = None


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def register_client(table, client_id: str, key: str | None = None) -> str:
    """Store a client's key hash (a DynamoDB Table resource); returns the key, shown only now."""
    import datetime as dt

    key = key or new_api_key()
    if not BEARER.match(f"Bearer {key}"):
        raise ValueError("an API key is xk_ followed by 43 URL-safe base64 characters")
    table.put_item(Item={"key_hash": key_hash(key), "client_id": client_id, "enabled": True,
                         "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    return key


def client_for(token: str | None, table) -> str | None:
    """The client id of an enabled key in ``Bearer <key>`` form, else None."""
    match = BEARER.match(token or "")
    if not match:
        return None
    digest = key_hash(match.group(1))
    item = table.get_item(Key={"key_hash": digest}).get("Item")
    # compare_digest: the lookup is by hash already; this keeps the final check constant-time.
    if not item or not item.get("enabled") or not hmac.compare_digest(item["key_hash"], digest):
        return None
    return str(item["client_id"])


def _clients_table():
    global _table
    if _table is None:
        import boto3

        _table = boto3.resource("dynamodb").Table(os.environ["API_CLIENTS_TABLE"])
    return _table


@logger.inject_lambda_context
@event_source(data_class=APIGatewayAuthorizerTokenEvent)
def lambda_handler(event: APIGatewayAuthorizerTokenEvent, context: LambdaContext) -> dict:
    arn = event.parsed_arn
    client_id = client_for(event.authorization_token, _clients_table())
    policy = APIGatewayAuthorizerResponse(
        principal_id=client_id or "unknown", region=arn.region, aws_account_id=arn.aws_account_id,
        api_id=arn.api_id, stage=arn.stage, context={"client_id": client_id or ""},
    )
    if client_id:
        policy.allow_all_routes()
    else:
        logger.info("API key refused")
        policy.deny_all_routes()
    return policy.asdict()
