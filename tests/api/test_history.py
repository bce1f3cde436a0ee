"""``GET /events`` over a real SQLite archive, its access rules with a password file
written by the real ``tracker-api users``, and retention."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tests.helpers.fakes import FakePublisher
from tracker_api.app import create_app
from tracker_api.config import load_settings
from tracker_api.http import archive_reader
from tracker_api.storage import event_store as archive

NOW = datetime.now(UTC)


def envelope(account_id: str, n: int, at: datetime) -> archive.Row:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    event = {"eventId": f"{account_id}-{n}", "accountId": account_id, "timestamp": stamp}
    payload = orjson.dumps({**event, "data": f"d{n}"})
    return archive.parse(f"track/{account_id}", payload)


@pytest.fixture
def rows(database: tuple[str, Engine]) -> list[archive.Row]:
    # Written out of time order, two accounts interleaved, several in one millisecond.
    start = NOW - timedelta(minutes=30)
    made = [
        envelope(account, n, start + timedelta(seconds=n // 3))
        for n in range(25)
        for account in ("1", "2")
    ]
    archive.insert(database[1], made[::-1])
    archive.insert(database[1], made[:5])  # a redelivered batch: changes nothing
    return sorted(made, key=lambda row: row.ts)


def ids(events: list[dict[str, str]]) -> list[str]:
    return [event["eventId"] for event in events]


def in_archive_order(client: TestClient) -> list[str]:
    """Every eventId in (timestamp, sequence) order, from one page that holds them all."""
    return ids(client.get("/events", params={"since": "1h", "limit": 1000}).json()["events"])


def pages(client: TestClient, **params: object) -> list[list[dict[str, str]]]:
    found, after = [], None
    while True:
        query = {**params, **({"after": after} if after else {})}
        body = client.get("/events", params=query).json()  # type: ignore[arg-type]
        found.append(body["events"])
        after = body["next"]
        if after is None:
            return found


def test_history_pages_through_the_range_in_time_order_without_gap_or_repeat(
    client: TestClient, rows: list[archive.Row]
) -> None:
    paged = pages(client, since="1h", limit=7)

    events = [event for page in paged for event in page]
    assert [len(page) for page in paged] == [7] * 7 + [1]
    assert [event["timestamp"] for event in events] == sorted(e["timestamp"] for e in events)
    assert sorted(ids(events)) == sorted(row.event_id for row in rows)
    published = {row.event_id: orjson.loads(row.envelope) for row in rows}
    assert all(event == published[event["eventId"]] for event in events)


def test_history_filters_accounts_and_the_time_range(
    client: TestClient, rows: list[archive.Row]
) -> None:
    until = (NOW - timedelta(minutes=30) + timedelta(seconds=2)).isoformat()

    only_2 = client.get("/events", params={"since": "1h", "account": "2"}).json()
    early = client.get("/events", params={"since": "1h", "until": until}).json()
    both = client.get("/events", params={"since": "1h", "account": ["1", "2"]}).json()
    none = client.get("/events", params={"since": "10m"}).json()

    assert {event["accountId"] for event in only_2["events"]} == {"2"}
    assert len(only_2["events"]) == 25
    assert len(early["events"]) == 18  # three per second and account, seconds 0, 1, 2
    assert len(both["events"]) == 50 and both["next"] is None
    assert none == {"events": [], "next": None}


def test_history_streams_ndjson_of_the_whole_range(
    client: TestClient, rows: list[archive.Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_reader, "STREAM_PLAN", 4)  # many plans
    monkeypatch.setattr(archive_reader, "CHUNK_BYTES", 300)  # and chunks of about 2 events

    response = client.get(
        "/events", params={"since": "1h"}, headers={"Accept": "application/x-ndjson"}
    )

    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.text.splitlines()
    stamps = [orjson.loads(line)["timestamp"] for line in lines]
    assert sorted(lines) == sorted(row.envelope for row in rows)
    assert stamps == sorted(stamps)
    assert len(lines) == 50


def test_a_json_page_ends_at_its_byte_budget_and_its_next_goes_on_from_there(
    client: TestClient, rows: list[archive.Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    largest = max(len(row.envelope.encode()) for row in rows)
    monkeypatch.setattr(archive_reader, "PAGE_BYTES", 3 * largest)

    paged = pages(client, since="1h", limit=10)

    events = [event for page in paged for event in page]
    assert [len(page) for page in paged][:-1] == [3] * (len(paged) - 1)  # cut by bytes
    monkeypatch.undo()
    assert ids(events) == in_archive_order(client)  # no gap, no repeat, in order


def test_an_event_larger_than_the_page_budget_still_comes_alone(
    client: TestClient, rows: list[archive.Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_reader, "PAGE_BYTES", 1)

    first = client.get("/events", params={"since": "1h"}).json()

    monkeypatch.undo()
    assert ids(first["events"]) == in_archive_order(client)[:1] and first["next"] is not None


def test_ndjson_honours_limit_and_names_the_next_cursor_in_a_header(
    client: TestClient, rows: list[archive.Row]
) -> None:
    ndjson = {"Accept": "application/x-ndjson"}
    first = client.get("/events", params={"since": "1h", "limit": 20}, headers=ndjson)
    rest = client.get(
        "/events",
        params={"since": "1h", "limit": 100, "after": first.headers["x-next-cursor"]},
        headers=ndjson,
    )

    shown = [orjson.loads(line)["eventId"] for line in first.text.splitlines()]
    shown += [orjson.loads(line)["eventId"] for line in rest.text.splitlines()]
    assert len(first.text.splitlines()) == 20
    assert "x-next-cursor" not in rest.headers  # the range is exhausted
    assert shown == in_archive_order(client)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({}, "since is required"),
        ({"since": "yesterday"}, "not a time"),
        ({"since": "2026-11-28T12:00:00"}, "not a time"),
        ({"since": "1h", "until": "2h"}, "since is after until"),
        ({"since": "1h", "after": "garbage!"}, "not a cursor"),
        ({"since": "1h", "account": "a/b"}, "invalid account id"),
    ],
)
def test_bad_history_requests_are_422_with_a_clear_detail(
    client: TestClient, params: dict[str, str], detail: str
) -> None:
    response = client.get("/events", params=params)

    assert response.status_code == 422
    assert detail in response.json()["detail"]


def test_a_page_larger_than_the_cap_is_422_with_one_detail_line(client: TestClient) -> None:
    refused = client.get("/events", params={"since": "1h", "limit": 20_000})
    not_a_number = client.get("/events", params={"since": "1h", "limit": "many"})

    assert refused.status_code == 422 and not_a_number.status_code == 422
    # The shape of every other 422: {"detail": "<what is wrong>"}, not pydantic's list.
    assert refused.json() == {"detail": "limit: Input should be less than or equal to 10000"}
    assert not_a_number.json()["detail"].startswith("limit: Input should be a valid integer")
    assert client.get("/events", params={"since": "1h", "limit": 10_000}).status_code == 200


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"since": "999999d"}, "out of range: '999999d' reaches back before the year 1"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "out of range: '0001-01-01T00:00:00+01:00'"),
        ({"since": "1h", "until": "9999-12-31T23:59:59-01:00"}, "out of range"),
        ({"since": "1h", "after": archive.encode_cursor((2**70, 1))}, "not a cursor"),
        ({"since": "1h", "after": archive.encode_cursor((1, 2**64))}, "not a cursor"),
        ({"since": "1h", "after": archive.encode_cursor((1, -1))}, "not a cursor"),
    ],
)
def test_times_and_cursors_beyond_what_the_archive_can_hold_are_422_not_500(
    client: TestClient, params: dict[str, str], detail: str
) -> None:
    response = client.get("/events", params=params)

    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]


def test_the_earliest_and_latest_representable_times_are_a_valid_range(
    client: TestClient, rows: list[archive.Row]
) -> None:
    params = {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999Z"}

    response = client.get("/events", params={**params, "limit": 100})

    assert response.status_code == 200
    assert len(response.json()["events"]) == len(rows)


# -- access --------------------------------------------------------------------------------


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    for login, extra in (("1", []), ("2", []), ("reader", ["--role", "reader"])):
        subprocess.run(
            [sys.executable, "-m", "tracker_api", "users", "add", *([] if extra else [login])]
            + extra
            + ["--password", f"pw-{login}", "--password-file", str(path)],
            check=True,
            capture_output=True,
        )
    return path


@pytest.fixture
def guarded(
    password_file: Path, database: tuple[str, Engine], rows: list[archive.Row]
) -> Iterator[TestClient]:
    settings = load_settings(database_url=database[0], password_file=password_file)
    with TestClient(create_app(settings, FakePublisher(), database[1])) as client:
        yield client


def test_an_account_login_reads_only_its_own_history(guarded: TestClient) -> None:
    own = guarded.get("/events", params={"since": "1h"}, auth=("1", "pw-1"))
    other = guarded.get("/events", params={"since": "1h", "account": "2"}, auth=("1", "pw-1"))
    mixed = guarded.get(
        "/events", params={"since": "1h", "account": ["1", "2"]}, auth=("1", "pw-1")
    )

    assert {event["accountId"] for event in own.json()["events"]} == {"1"}
    assert other.status_code == 403 and mixed.status_code == 403
    assert "only its own" in other.json()["detail"]


def test_the_reader_sees_every_account_and_strangers_get_401(guarded: TestClient) -> None:
    reader = guarded.get("/events", params={"since": "1h"}, auth=("reader", "pw-reader"))
    wrong = guarded.get("/events", params={"since": "1h"}, auth=("1", "pw-2"))
    anonymous = guarded.get("/events", params={"since": "1h"})

    assert {event["accountId"] for event in reader.json()["events"]} == {"1", "2"}
    for refused in (wrong, anonymous):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")


def test_events_is_a_fixed_endpoint_not_an_account(guarded: TestClient) -> None:
    assert "events" in guarded.app.reserved  # type: ignore[attr-defined]


# -- retention -----------------------------------------------------------------------------


def test_retention_deletes_only_what_is_older_in_small_batches(
    database: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = database[1]
    monkeypatch.setattr(archive, "RETENTION_BATCH", 100)
    old = [envelope("1", n, NOW - timedelta(days=8, seconds=n)) for n in range(250)]
    new = [envelope("1", 1000 + n, NOW - timedelta(days=6, seconds=n)) for n in range(10)]
    archive.insert(engine, old + new)

    deleted = archive.expire(engine, timedelta(days=7), now=NOW)

    with engine.connect() as connection:
        left = connection.execute(select(archive.EVENTS.c.event_id)).scalars().all()
        assert connection.execute(select(func.count()).select_from(archive.EVENTS)).scalar() == 10
    assert deleted == 250
    assert sorted(left) == sorted(row.event_id for row in new)


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("track/1", b"not json"),
        ("track/1", b"[1]"),
        ("track/1", b'{"accountId": "1", "timestamp": "2026-11-28T12:00:00Z"}'),
        ("track/1", b'{"eventId": "e", "accountId": "2", "timestamp": "2026-11-28T12:00:00Z"}'),
        ("track/1", b'{"eventId": "e", "accountId": "1"}'),
        ("track/1", b'{"eventId": "e", "accountId": "1", "timestamp": "noon"}'),
        ("track/a/b", b'{"eventId": "e", "accountId": "a/b", "timestamp": "2026-11-28T12:00Z"}'),
    ],
)
def test_messages_that_are_not_the_topics_events_are_malformed(topic: str, payload: bytes) -> None:
    with pytest.raises(archive.Malformed):
        archive.parse(topic, payload)
