"""Schemathesis over the OpenAPI schema, against both ways of serving the event routes:
no generated request may get a 500, a status the schema does not list, or hang."""

from __future__ import annotations

import json

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tracker_api.app import create_api
from tracker_api.config import load_settings


@schemathesis.serializer("application/x-ndjson")
def ndjson(_context: schemathesis.SerializationContext, value: object) -> bytes:
    # The schema types an NDJSON body as a string: send it as it is.
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


# The schema does not depend on the settings; building the app runs no I/O.
schema = schemathesis.openapi.from_dict(create_api(load_settings()).openapi())
# About 160 requests per operation and path (explicit examples included): 650 a run.
EXAMPLES = 150


@schema.include(tag="events").parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_generated_event_request_gets_a_500(case: schemathesis.Case, client: TestClient) -> None:
    request = case.as_transport_kwargs(base_url="http://testserver")
    request.pop("cookies", None)  # the API reads none, and per-request cookies are deprecated
    if isinstance(request.get("data"), bytes):  # raw bodies (NDJSON): httpx wants content=
        request["content"] = request.pop("data")
    response = client.request(**request)

    case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
