"""The events API Gateway (REST API, Lambda proxy integration) sends the functions.

With the Lambda authorizer's principal in ``requestContext.authorizer`` (the client
:data:`TEST_CLIENT`, whose key :data:`TEST_API_KEY` the tests register in the emulator's clients
table). ``python -m devtools.api_events`` writes the committed events/api-*.json with them.
"""

import json

#: The API key in the authorizer event; tests register it in the emulator's clients table.
TEST_API_KEY = "xk_" + "t" * 43
TEST_CLIENT = "events-client"


def rest_event(method: str, resource: str, path: str, *, body=None, path_parameters=None, query=None,
               client: str | None = TEST_CLIENT) -> dict:
    headers = {"Content-Type": "application/json", "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
               "Authorization": f"Bearer {TEST_API_KEY}", "X-Forwarded-Proto": "https"}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource, "httpMethod": method, "path": f"/v1{path}", "stage": "v1",
            "accountId": "123456789012", "apiId": "abcdef1234", "resourceId": "a1b2c3", "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "extendedRequestId": "Ab1CdEFgHIjKLmN=",
            "requestTime": "27/Nov/2026:00:00:00 +0000", "requestTimeEpoch": 1795737600000,
            "identity": {"sourceIp": "198.51.100.7", "userAgent": "curl/8.5.0"},
            "authorizer": {"principalId": client, "client_id": client, "integrationLatency": 12} if client else None,
        },
        "body": body if body is None or isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }


def explain_event(family: str, body) -> dict:
    return rest_event("POST", f"/explanations/{family}", f"/explanations/{family}", body=body)
