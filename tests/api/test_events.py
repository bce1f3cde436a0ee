"""The event routes: every status code, its exact detail, and what gets published."""

from __future__ import annotations

import re
from urllib.parse import quote

import orjson
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from devkit.metrics import value
from subscriber.cli import tail
from tests.helpers.fakes import FakePublisher
from tracker_api import app as app_module
from tracker_api.errors import (
    RETRY_AFTER_SECONDS,
    AccountHasEvents,
    AccountInactive,
    AccountNotFound,
    BatchOverBurst,
    DatabaseUnavailable,
    InvalidRequest,
    LoginForbidden,
    LoginNeedsJson,
    LoginNeedsPost,
    LoginRefused,
    LoginRequired,
    LoginThrottled,
    MalformedLogin,
    PayloadTooLarge,
    PublishFailed,
    PublishOutcomeUnknown,
    RateLimited,
    ServiceUnavailable,
    TrackerError,
)
from tracker_api.http.fastpath import TrackerApp, fixed_segments
from tracker_api.http.request import PATH_NOT_UTF8, QUERY_NOT_UTF8
from tracker_api.http.routes import events as event_routes
from tracker_api.http.routes import root as root_routes
from tracker_api.http.routes.admin import AdminDisabled, AdminForbidden, AdminLoginRequired
from tracker_api.http.routes.history import HistoryForbidden, HistoryLoginRequired
from tracker_contract.ids import ACCOUNT_ID_PATTERN, RESERVED_SEGMENTS

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_accepted_event_is_published_on_the_account_topic_and_returned(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.get("/1", params={"data": "hello"})

    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Request propagated to the subscribers!"
    event = body["event"]
    assert set(event) == {"eventId", "accountId", "timestamp", "data"}
    assert UUID7.fullmatch(event["eventId"])
    assert TIMESTAMP.fullmatch(event["timestamp"])
    assert (event["accountId"], event["data"]) == ("1", "hello")
    assert publisher.published == [("track/1", orjson.dumps(event))]
    assert response.headers["content-type"] == "application/json"


def test_path_form_publishes_the_rest_of_the_path_as_data(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.get("/acme.eu-1/some/path data")

    assert response.status_code == 200
    assert response.json()["event"]["data"] == "some/path data"
    assert publisher.published[0][0] == "track/acme.eu-1"


@pytest.mark.parametrize(
    "data",
    [
        "",
        "héllo wörld",
        "日本語のテキスト",
        "emoji 🛰️👩‍🚀",
        'quotes " and \\ back',
        "tab\tnl\nnul\x00",
    ],
    ids=["empty", "latin", "cjk", "emoji", "json-specials", "controls"],
)
def test_any_unicode_data_round_trips_intact(
    client: TestClient, publisher: FakePublisher, data: str
) -> None:
    response = client.get("/2", params={"data": data})

    assert response.status_code == 200
    assert response.json()["event"]["data"] == data
    assert orjson.loads(publisher.published[0][1])["data"] == data


def test_unknown_account_returns_404_and_publishes_nothing(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.get("/999", params={"data": "x"})

    assert response.status_code == 404
    assert response.json() == {"detail": "Account Id does not exist!"}
    assert publisher.published == []


def test_inactive_account_returns_403_and_publishes_nothing(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.get("/10", params={"data": "x"})

    assert response.status_code == 403
    assert response.json() == {"detail": "Inactive account!"}
    assert publisher.published == []


@pytest.mark.parametrize(
    "account_id",
    ["a+b", "%23", "%2B", "-starts-with-dash", "x" * 65, "sp%20ace", "caf%C3%A9", ".hidden"],
)
def test_malformed_account_id_returns_422_and_publishes_nothing(
    client: TestClient, publisher: FakePublisher, account_id: str
) -> None:
    response = client.get(f"/{account_id}", params={"data": "x"})

    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid account id")
    assert publisher.published == []


def test_missing_data_returns_422(client: TestClient, publisher: FakePublisher) -> None:
    response = client.get("/1")

    assert response.status_code == 422
    assert response.json() == {
        "detail": "Missing data: pass it as ?data=<string> or /<accountId>/<data>"
    }
    assert publisher.published == []


def test_data_at_the_limit_is_accepted_and_one_byte_more_is_413(
    client: TestClient, publisher: FakePublisher
) -> None:
    assert client.get("/1", params={"data": "a" * 4096}).status_code == 200

    # 2049 two-byte characters: under 4096 characters, over 4096 bytes.
    response = client.get("/1", params={"data": "é" * 2049})

    assert response.status_code == 413
    assert response.json() == {"detail": "data is larger than 4096 bytes (UTF-8)"}
    assert len(publisher.published) == 1


def test_idempotency_key_header_becomes_the_event_id(
    client: TestClient, publisher: FakePublisher
) -> None:
    headers = {"Idempotency-Key": "order-1234:retry"}
    first = client.get("/1", params={"data": "x"}, headers=headers)
    second = client.get("/1", params={"data": "x"}, headers=headers)

    assert first.json()["event"]["eventId"] == "order-1234:retry"
    assert second.json()["event"]["eventId"] == "order-1234:retry"
    assert [orjson.loads(p)["eventId"] for _, p in publisher.published] == ["order-1234:retry"] * 2


def test_event_id_query_parameter_becomes_the_event_id(client: TestClient) -> None:
    response = client.get("/1", params={"data": "x", "eventId": "abc-1"})

    assert response.json()["event"]["eventId"] == "abc-1"


def test_invalid_idempotency_key_returns_422(client: TestClient, publisher: FakePublisher) -> None:
    response = client.get("/1", params={"data": "x"}, headers={"Idempotency-Key": "a b/c"})

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert publisher.published == []


def test_broker_refusal_returns_503_with_retry_after(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.refuse = True

    response = client.get("/1", params={"data": "x"})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"].startswith("Message broker unavailable")


def test_publish_timeout_returns_504_outcome_unknown_with_retry_after(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.time_out = True

    response = client.get("/1", params={"data": "x"}, headers={"Idempotency-Key": "k-1"})

    assert response.status_code == 504
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "detail": "No acknowledgement from the message broker in time: the event may or may "
        "not be delivered; retry with the same Idempotency-Key"
    }
    metrics_text = client.get("/metrics").text
    assert value(metrics_text, "tracker_requests_total", source="http", outcome="outcome_unknown")


def test_generated_event_ids_are_unique(client: TestClient) -> None:
    ids = {client.get("/1", params={"data": str(n)}).json()["event"]["eventId"] for n in range(50)}

    assert len(ids) == 50


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_fixed_endpoint_names_are_not_account_ids(
    client: TestClient, publisher: FakePublisher, path: str
) -> None:
    response = client.get(path, params={"data": "x"})

    assert response.status_code == 200
    assert publisher.published == []


@pytest.mark.parametrize(("method", "path"), [("PUT", "/1"), ("DELETE", "/1"), ("POST", "/1/x")])
def test_other_methods_are_not_event_routes(
    client: TestClient, publisher: FakePublisher, method: str, path: str
) -> None:
    response = client.request(method, path, params={"data": "x"})

    assert response.status_code == 405
    assert publisher.published == []


@pytest.mark.parametrize(
    ("query", "data"),
    [
        ("data=a+b%20c", "a b c"),
        ("d%61ta=encoded-key", "encoded-key"),
        ("x=1&data=first&data=last", "last"),
        ("data=", ""),
        ("data=%E2%9C%93", "✓"),
    ],
)
def test_query_strings_decode_like_any_form_encoder(
    client: TestClient, publisher: FakePublisher, query: str, data: str
) -> None:
    response = client.get(f"/1?{query}")

    assert response.json()["event"]["data"] == data


INVALID_ACCOUNT = "Invalid account id"
MISSING_DATA = "Missing data"


@pytest.mark.parametrize(
    ("target", "status", "expected"),
    [
        # A percent-encoded slash is part of the account id (so invalid), never a separator.
        ("/bar-active%2Fx?data=x", 422, INVALID_ACCOUNT),
        ("/1%2Fx?data=x", 422, INVALID_ACCOUNT),
        ("/1%2fx", 422, INVALID_ACCOUNT),
        # An empty first segment is no account id at all: not an event route.
        ("/%2F1?data=x", 404, "Not Found"),
        # In the data, an encoded slash is just a character.
        ("/1/a%2Fb", 200, "a/b"),
        # A trailing slash carries no data: /1/ is /1.
        ("/1/", 422, MISSING_DATA),
        ("/1/?data=q", 200, "q"),
        ("/1/x?data=y", 200, "x"),
        ("/1/a+b", 200, "a+b"),
        ("/%31?data=encoded-id", 200, "encoded-id"),
        # Invalid UTF-8 anywhere is refused, never replaced by U+FFFD.
        ("/1?data=%C0%AF", 422, QUERY_NOT_UTF8),
        ("/1?data=%FF%FE", 422, QUERY_NOT_UTF8),
        ("/1?data=%ED%A0%80", 422, QUERY_NOT_UTF8),
        ("/1?%ff=x&data=y", 422, QUERY_NOT_UTF8),
        ("/1?other=%FF&data=y", 422, QUERY_NOT_UTF8),
        ("/1/%FF", 422, PATH_NOT_UTF8),
        ("/1/ok?data=%FF", 422, QUERY_NOT_UTF8),
        ("/%FF?data=x", 422, PATH_NOT_UTF8),
        ("/%C3%A9%FF/x", 422, PATH_NOT_UTF8),
    ],
)
def test_both_paths_answer_every_request_alike(
    client: TestClient, publisher: FakePublisher, target: str, status: int, expected: str
) -> None:
    response = client.get(target)

    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["event"]["data"] == expected
        assert len(publisher.published) == 1
    else:
        assert response.json()["detail"].startswith(expected)
        assert publisher.published == []


def test_the_account_id_comes_from_the_raw_path_not_the_decoded_one(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.get("/1%2F2?data=x")

    assert response.status_code == 422
    assert publisher.published == []
    assert client.get("/1/2", params={"data": "x"}).json()["event"]["data"] == "2"


# The documented pattern (README), written out here on purpose: the code must agree with it.
CONTRACT_ACCOUNT_ID = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def test_the_docs_state_the_account_id_pattern_the_code_enforces(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    parameters = spec["paths"]["/{account_id}"]["get"]["parameters"]
    account_id = next(p for p in parameters if p["name"] == "account_id")

    assert account_id["description"] == f"`{CONTRACT_ACCOUNT_ID}`"
    assert ACCOUNT_ID_PATTERN == CONTRACT_ACCOUNT_ID


@pytest.mark.parametrize("account_id", ["1\n", "x" * 64 + "\n", "1/x", "a+b", ""])
def test_mqtt_tail_refuses_the_account_ids_the_api_refuses(
    client: TestClient, account_id: str
) -> None:
    # `$` matches before a trailing newline: "1\n" once passed the CLI's copy of the rule.
    api = client.get("/" + quote(account_id, safe=""), params={"data": "x"})
    cli = CliRunner().invoke(tail, ["--account", account_id, "--port", "1", "--timeout", "0.1"])

    if account_id:
        assert api.status_code in (404, 422)
    else:  # an empty first segment is the root, which points to the docs: no event
        assert api.json() == {**root_routes.ENTRY}
    assert cli.exit_code == 2, cli.output
    assert "is not an account id" in cli.output


def test_a_route_added_to_the_app_is_never_taken_for_an_account() -> None:
    api = FastAPI()

    @api.get("/status")
    async def status() -> dict[str, str]:
        return {"served": "by the route"}

    api.include_router(event_routes.router)  # after the fixed routes, as the app orders them

    with TestClient(TrackerApp(api, fast_path=True)) as client:
        assert client.get("/status").json() == {"served": "by the route"}
    assert fixed_segments(api) == {"status", "docs", "redoc", "openapi.json"}


def test_an_endpoint_whose_name_is_not_reserved_stops_the_app_at_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_module, "RESERVED_SEGMENTS", RESERVED_SEGMENTS - {"metrics"})
    with pytest.raises(RuntimeError, match=r"add \['metrics'\] to"):
        app_module.build_api()


@pytest.mark.parametrize("name", sorted(RESERVED_SEGMENTS))
def test_the_names_of_fixed_endpoints_are_not_account_ids(
    client: TestClient, publisher: FakePublisher, name: str
) -> None:
    response = client.get(f"/{name}/x")

    assert response.status_code == 422
    assert response.json()["detail"].startswith(INVALID_ACCOUNT)
    assert publisher.published == []


def test_the_reserved_names_are_the_app_routes_first_segments(client: TestClient) -> None:
    documented = {path.split("/")[1] for path in client.get("/openapi.json").json()["paths"]}

    assert RESERVED_SEGMENTS == {name for name in documented if name and "{" not in name} | {
        "docs",  # Swagger UI and its assets, outside the schema
        "redoc",
        "openapi.json",
        "favicon.ico",  # what browsers ask for, outside the schema
    }
    assert fixed_segments(app_module.build_api()) == RESERVED_SEGMENTS


def test_the_root_points_to_the_docs_and_the_favicon_is_a_plain_404(
    client: TestClient, publisher: FakePublisher
) -> None:
    root = client.get("/")
    favicon = client.get("/favicon.ico")

    assert root.status_code == 200 and root.json()["docs"] == "/docs"
    assert client.get(root.json()["docs"]).status_code == 200
    assert favicon.status_code == 404 and favicon.json() == {"detail": "Not Found"}
    assert publisher.published == []


def concrete_errors(base: type[TrackerError] = TrackerError) -> list[type[TrackerError]]:
    """Every error the service answers with: the leaves and the statuses of the tree."""
    found = []
    for error in base.__subclasses__():
        found += concrete_errors(error)
        if error.when != base.when:
            found.append(error)
    return found


LOGIN_ERRORS = {LoginRequired, LoginRefused, MalformedLogin, LoginThrottled, LoginForbidden}
# What each route can answer besides the error classes: success, and answers written by
# hand (the history's and the admin API's 422 with a message per bad parameter, the
# batch's statuses).
ADMIN_ERRORS = {AdminDisabled, AdminLoginRequired, AdminForbidden, DatabaseUnavailable}
ROUTE_ERRORS: dict[str, tuple[set[str], set[type[TrackerError]]]] = {
    "GET /{account_id}": (
        {"200"},
        {
            AccountInactive,
            AccountNotFound,
            PayloadTooLarge,
            InvalidRequest,
            PublishFailed,
            DatabaseUnavailable,
            PublishOutcomeUnknown,
            RateLimited,
            LoginNeedsPost,
            *LOGIN_ERRORS,
            BatchOverBurst,
        },
    ),
    "POST /{account_id}": (
        {"200", "413", "422", "503", "504"},
        {AccountInactive, AccountNotFound, RateLimited, LoginNeedsJson, *LOGIN_ERRORS},
    ),
    "GET /events": (
        {"200", "422"},
        {HistoryLoginRequired, LoginRefused, MalformedLogin, LoginThrottled, HistoryForbidden},
    ),
    "GET /admin/accounts": ({"200", "422"}, ADMIN_ERRORS),
    "POST /admin/accounts": ({"200", "201", "422"}, ADMIN_ERRORS),
    "GET /admin/accounts/{account_id}": ({"200", "422"}, ADMIN_ERRORS | {AccountNotFound}),
    "PATCH /admin/accounts/{account_id}": ({"200", "422"}, ADMIN_ERRORS | {AccountNotFound}),
    "DELETE /admin/accounts/{account_id}": (
        {"200", "422"},
        ADMIN_ERRORS | {AccountNotFound, AccountHasEvents},
    ),
}


def test_every_error_class_is_documented_on_a_route_that_raises_it() -> None:
    documented = set().union(*(errors for _, errors in ROUTE_ERRORS.values()))

    assert documented == set(concrete_errors())


@pytest.mark.parametrize("route", sorted(ROUTE_ERRORS))
def test_the_openapi_error_answers_are_the_error_classes(client: TestClient, route: str) -> None:
    method, path = route.split(" ")
    responses = client.get("/openapi.json").json()["paths"][path][method.lower()]["responses"]
    others, errors = ROUTE_ERRORS[route]

    assert set(responses) == others | {str(error.status) for error in errors}
    for error in errors:
        description = responses[str(error.status)]["description"]
        assert error.when in description
        if "detail" in vars(error):
            assert orjson.dumps({"detail": error.detail}).decode() in description
        if issubclass(error, ServiceUnavailable):
            assert f"Retry-After: {RETRY_AFTER_SECONDS}" in description
