"""POST /<accountId>: batches (JSON array, NDJSON) and single events, on both HTTP paths."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers.fakes import FakePublisher
from tracker_api.app import create_app
from tracker_api.config import Settings, load_settings
from tracker_api.errors import PublishFailed, PublishOutcomeUnknown
from tracker_api.http.batch import NDJSON
from tracker_api.http.runtime import runtime_of
from tracker_contract.durations import is_rfc3339


def published(publisher: FakePublisher) -> list[dict[str, str]]:
    return [orjson.loads(payload) for _, payload in publisher.published]


def ndjson(items: list[dict[str, str]]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


@pytest.mark.parametrize("size", [1, 1000])
@pytest.mark.parametrize("encoding", ["json", "ndjson"])
def test_a_batch_publishes_one_message_per_event_and_answers_in_request_order(
    client: TestClient, publisher: FakePublisher, size: int, encoding: str
) -> None:
    items = [{"data": f"reading {n}"} for n in range(size)]
    if encoding == "json":
        response = client.post("/1", json=items)
    else:
        response = client.post("/1", content=ndjson(items), headers={"content-type": NDJSON})

    assert response.status_code == 200, response.text
    events = response.json()["events"]
    assert [event["data"] for event in events] == [item["data"] for item in items]
    assert len({event["eventId"] for event in events}) == size
    assert published(publisher) == events
    assert {topic for topic, _ in publisher.published} == {"track/1"}


def test_more_than_max_batch_items_is_413_and_publishes_nothing(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.post("/1", json=[{"data": "x"}] * 1001)

    assert response.status_code == 413
    assert response.json() == {"detail": "1001 events in one request; at most 1000"}
    assert publisher.published == []


def test_a_body_larger_than_a_full_batch_can_be_is_413_before_it_is_read(
    database: tuple[str, Engine], publisher: FakePublisher
) -> None:
    settings = load_settings(database_url=database[0], max_batch=2, max_data_bytes=10)
    with TestClient(create_app(settings, publisher=publisher, engine=database[1])) as client:
        response = client.post("/1", content=b"[" + b" " * 10_000 + b"]")

    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body larger than")
    assert publisher.published == []


def test_invalid_items_are_422_with_each_index_and_nothing_is_published(
    client: TestClient, publisher: FakePublisher
) -> None:
    items = [
        {"data": "fine"},
        {"data": 42},
        "not an object",
        {"data": "fine", "eventId": "bad id!"},
        {"data": "x", "timestamp": "yesterday"},
        {"data": "x", "colour": "red"},
        {"data": "x" * 5000},
        {"data": "fine", "timestamp": "2026-11-28T12:00:00.5+01:00"},
    ]
    response = client.post("/1", json=items)

    assert response.status_code == 422
    problems = response.json()["detail"]
    assert [problem["index"] for problem in problems] == [1, 2, 3, 4, 5, 6]
    assert problems[0]["msg"] == '"data" must be a string'
    assert "RFC 3339" in problems[3]["msg"]
    assert "colour" in problems[4]["msg"]
    assert "larger than 4096 bytes" in problems[5]["msg"]
    assert publisher.published == []


def test_a_repeated_event_id_in_one_batch_is_422_naming_the_repeat(
    client: TestClient, publisher: FakePublisher
) -> None:
    items = [{"data": "a", "eventId": "k-1"}, {"data": "b", "eventId": "k-2"}]
    items.append({"data": "c", "eventId": "k-1"})
    response = client.post("/1", json=items)

    assert response.status_code == 422
    assert response.json() == {"detail": [{"index": 2, "msg": "eventId 'k-1' repeats item 0"}]}
    assert publisher.published == []


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"{oops", "application/json", "The body is not JSON"),
        (b"[]", "application/json", "The batch is empty"),
        (b'"text"', "application/json", "The body must be a JSON object"),
        (b'{"data": "a"}\n{oops\n', NDJSON, "Line 2 is not JSON"),
        (b"\n\n", NDJSON, "The batch is empty"),
    ],
)
def test_a_body_that_is_not_events_is_422(
    client: TestClient, publisher: FakePublisher, body: bytes, content_type: str, detail: str
) -> None:
    response = client.post("/1", content=body, headers={"content-type": content_type})

    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)
    assert publisher.published == []


def test_one_json_object_is_answered_like_a_get_and_keeps_the_device_time(
    client: TestClient, publisher: FakePublisher
) -> None:
    device_time = "2026-11-28T11:59:58.250Z"
    response = client.post("/1", json={"data": "hello", "timestamp": device_time})

    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Request propagated to the subscribers!"
    assert body["event"]["deviceTime"] == device_time
    assert body["event"]["timestamp"] != device_time
    assert published(publisher) == [body["event"]]


def test_one_json_object_follows_the_get_rules_for_statuses(
    client: TestClient, publisher: FakePublisher
) -> None:
    assert client.post("/10", json={"data": "x"}).json() == {"detail": "Inactive account!"}
    assert client.post("/999", json={"data": "x"}).status_code == 404
    assert client.post("/1", json={"data": "x" * 5000}).status_code == 413
    assert client.post("/1", json={"data": "x", "eventId": "-bad"}).status_code == 422
    assert publisher.published == []


def test_idempotency_key_names_a_single_posted_event(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.post("/1", json={"data": "x"}, headers={"Idempotency-Key": "order-7"})

    assert response.json()["event"]["eventId"] == "order-7"


def test_a_batch_for_an_unknown_account_is_404_and_publishes_nothing(
    client: TestClient, publisher: FakePublisher
) -> None:
    response = client.post("/999", json=[{"data": "x"}])

    assert response.status_code == 404
    assert publisher.published == []


@pytest.mark.parametrize(
    ("refuse", "status", "error"),
    [(True, 503, PublishFailed), (False, 504, PublishOutcomeUnknown)],
    ids=["refused", "unknown"],
)
def test_when_the_broker_fails_every_item_says_so_with_its_event_id(
    client: TestClient,
    publisher: FakePublisher,
    refuse: bool,
    status: int,
    error: type[Exception],
) -> None:
    publisher.refuse, publisher.time_out = refuse, not refuse
    response = client.post("/1", json=[{"data": "a", "eventId": "mine"}, {"data": "b"}])

    assert response.status_code == status
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["accepted"] == 0
    assert body["detail"].startswith("2 of 2 events not accepted")
    results = body["results"]
    assert [r["status"] for r in results] == [status, status]
    assert results[0]["eventId"] == "mine"
    assert results[0]["detail"] == error.detail  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "value",
    ["2026-11-28T12:00:00Z", "2026-11-28t12:00:00.123456+05:30", "2026-11-28 12:00:00-00:00"],
)
def test_rfc3339_times_are_accepted(value: str) -> None:
    assert is_rfc3339(value)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-28",
        "2026-02-30T12:00:00Z",
        "2026-11-28T25:00:00Z",
        "2026-11-28T12:00:00",
        " 2026-11-28T12:00:00Z",  # kept as sent: no whitespace around it
    ],
)
def test_times_that_are_not_rfc3339_are_refused(value: str) -> None:
    assert not is_rfc3339(value)


def test_max_batch_is_a_setting(database: tuple[str, Engine], tmp_path: Path) -> None:
    settings: Settings = load_settings(database_url=database[0], max_batch=3)
    publisher = FakePublisher()
    with TestClient(create_app(settings, publisher=publisher, engine=database[1])) as client:
        assert client.post("/1", json=[{"data": "x"}] * 3).status_code == 200
        assert client.post("/1", json=[{"data": "x"}] * 4).status_code == 413
    assert len(publisher.published) == 3


def test_a_streamed_body_is_refused_as_soon_as_it_grows_past_the_cap(
    database: tuple[str, Engine], publisher: FakePublisher
) -> None:
    settings = load_settings(database_url=database[0], max_batch=2, max_data_bytes=10)

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'[{"data": "a"}'
        for _ in range(100):
            yield b" " * 100

    with TestClient(create_app(settings, publisher=publisher, engine=database[1])) as client:
        response = client.post("/1", content=chunks())

    assert response.status_code == 413
    assert publisher.published == []


def test_an_invalid_content_length_is_422(client: TestClient, publisher: FakePublisher) -> None:
    response = client.post("/1", content=b"[]", headers={"content-length": "many"})

    assert response.status_code in (400, 422)  # the server may refuse it first
    assert publisher.published == []


def test_the_openapi_schema_documents_the_batch_body_and_its_answers(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/{account_id}"]["post"]

    content = operation["requestBody"]["content"]
    batch, single = content["application/json"]["schema"]["oneOf"]
    assert batch["type"] == "array" and batch["items"]["required"] == ["data"]
    assert set(single["properties"]) == {"data", "eventId", "timestamp"}
    assert NDJSON in content
    assert {"200", "401", "403", "413", "422", "429", "503", "504"} <= set(operation["responses"])
    assert "X-Request-ID" in {p["name"] for p in operation["parameters"]}


def test_a_client_gone_mid_body_publishes_nothing_of_what_it_sent(
    client: TestClient, publisher: FakePublisher
) -> None:
    """The lines that arrived are whole NDJSON events, but not the whole body: none of them
    may go out (a client that retries without eventIds would make them duplicates)."""
    messages = [
        {"type": "http.request", "body": ndjson([{"data": "a"}, {"data": "b"}]), "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/1",
        "raw_path": b"/1",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", NDJSON.encode()), (b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def request() -> None:
        await client.app(scope, receive, send)  # type: ignore[arg-type]

    assert client.portal is not None
    client.portal.call(request)

    assert publisher.published == []
    assert sent[0]["status"] == 422
    assert b"disconnected before the body was complete" in sent[1]["body"]  # type: ignore[operator]


# -- what a body may cost to parse ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" + b"{}," * 3999 + b"{}]", "application/json"),
        (b"[" + b"1," * 7999 + b"1]", "application/json"),
        (b'[{"data": "x", "eventId": ' + b"[" * 8000 + b"]" * 8000 + b"}]", "application/json"),
        # Commas in the data make the strings count: more than a full batch has.
        (b'[{"data": "' + b"," * 8000 + b'"}, ' + b'"", ' * 6000 + b'""]', "application/json"),
        (b"{}\n" * 8000, NDJSON),
        (b'{"data": [' + b"0," * 7000 + b"0]}\n", NDJSON),
    ],
    ids=["empty-objects", "numbers", "nested", "strings", "ndjson-objects", "ndjson-nested"],
)
def test_a_body_with_more_json_than_a_full_batch_can_hold_is_413_before_it_is_built(
    client: TestClient, publisher: FakePublisher, body: bytes, content_type: str
) -> None:
    response = client.post("/1", content=body, headers={"content-type": content_type})

    assert response.status_code == 413
    assert response.json()["detail"] == (
        "The body holds more JSON than 1000 events can: at most 1000 events, each an object "
        "of data, eventId and timestamp"
    )
    assert publisher.published == []


def test_ndjson_is_read_no_further_than_a_full_batch(
    client: TestClient, publisher: FakePublisher
) -> None:
    body = b'{"data": "x"}\n' * 1001 + b"\n" * 100_000 + b"not json\n"

    response = client.post("/1", content=body, headers={"content-type": NDJSON})

    assert response.status_code == 413
    assert response.json() == {"detail": "more than 1000 events in one request; at most 1000"}
    assert publisher.published == []


def test_data_full_of_commas_colons_and_brackets_is_still_a_legal_batch(
    client: TestClient, publisher: FakePublisher
) -> None:
    data = '{"a": [1, 2], "b": {"c": ":,"}}' * 40  # JSON as text: quotes escaped, ~1.3 kB
    items = [
        {"data": data, "eventId": f"e-{n}", "timestamp": "2026-11-28T12:00:00Z"}
        for n in range(1000)
    ]

    json = client.post("/1", json=items)
    lines = client.post("/2", content=ndjson(items), headers={"content-type": NDJSON})

    assert (json.status_code, lines.status_code) == (200, 200)
    assert len(publisher.published) == 2000


def test_a_large_body_is_parsed_off_the_event_loop(
    client: TestClient, publisher: FakePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    service = runtime_of(client.app.api).service  # type: ignore[attr-defined]
    validate = service.validate_item

    def recording(data: str, event_id: str | None) -> None:
        threads.append(threading.current_thread().name)
        validate(data, event_id)

    monkeypatch.setattr(service, "validate_item", recording)
    client.post("/1", json=[{"data": "small"}])
    client.get("/1?data=on-the-loop")  # a GET validates on the loop: its thread's name
    client.post("/1", json=[{"data": "x" * 4000} for _ in range(100)])  # ~400 kB

    loop_thread = threads[1]
    assert threads[0] == loop_thread  # a small body: parsed at once, on the loop
    assert set(threads[2:]) and loop_thread not in threads[2:]
    assert len(publisher.published) == 102
