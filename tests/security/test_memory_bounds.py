"""What one request may cost a worker in memory, measured on a real tracker process.

Each test starts the real ``tracker-api`` (one worker) against a real Mosquitto, sends
what an attacker would, and reads the worker's resident set from ``/proc``: its peak
while the requests run (VmHWM) and what it still holds afterwards. No request may cost
more than +256 MiB at its peak or leave more than +64 MiB behind. The figures measured
are in docs/security.md ("Memory bounds").
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from devkit.broker import Mosquitto
from devkit.waiting import wait_until
from tests.helpers.accounts import seeded_sqlite
from tests.helpers.memory import Memory
from tests.helpers.tracker import TrackerProcess
from tracker_api.http.batch import NDJSON, max_body_bytes
from tracker_api.passwords import PasswordFile

logger = logging.getLogger(__name__)

PEAK_MIB = 256
RETAINED_MIB = 64
GIVEN_BACK_MIB = 24  # after the largest legal batch: +5 measured, +48 without malloc_trim
MIB = 1024 * 1024
MAX_BODY = max_body_bytes(1000, 4096)  # the defaults' largest POST body


@pytest.fixture
def tracker(broker: Mosquitto, tmp_path: Path) -> Iterator[TrackerProcess]:
    """A tracker with logins on (account 1's login), as compose runs it."""
    password_file = tmp_path / "passwd"
    with PasswordFile.edit(password_file) as passwords:
        passwords.set("1", "one-secret")
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    with TrackerProcess(
        tmp_path,
        broker.url,
        url,
        TRACKER_INGEST="false",
        TRACKER_ARCHIVE="false",
        TRACKER_HTTP_AUTH="true",
        TRACKER_PASSWORD_FILE=str(password_file),
        TRACKER_HTTP_AUTH_CACHE_TTL="1",
    ) as tracker:
        yield tracker


@pytest.fixture
def open_tracker(broker: Mosquitto, tmp_path: Path) -> Iterator[TrackerProcess]:
    """A tracker without logins, as `make run` starts it: anyone may POST."""
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    with TrackerProcess(
        tmp_path, broker.url, url, TRACKER_INGEST="false", TRACKER_ARCHIVE="false"
    ) as tracker:
        yield tracker


def settles_within_bound(tracker: TrackerProcess, memory: Memory) -> bool:
    """One more (valid) request, then: is what the worker holds back within the bound?"""
    httpx.get(tracker.base_url + "/healthz", timeout=5)
    return memory.retained() <= RETAINED_MIB


def report(name: str, memory: Memory) -> str:
    growth = memory.growth
    return f"{name}: peak +{growth.peak:.0f} MiB, retained +{growth.retained:.0f} MiB"


def test_three_hundred_junk_logins_of_1_mib_are_refused_and_leave_nothing_behind(
    tracker: TrackerProcess,
) -> None:
    memory = Memory.of(tracker.process)
    statuses: Counter[int] = Counter()
    with memory.measure(), httpx.Client(base_url=tracker.base_url, timeout=10) as http:
        for n in range(300):
            junk = f"Basic {n:04d}" + secrets.token_urlsafe(MIB)[:MIB]
            statuses[http.post("/1", json=[], headers={"Authorization": junk}).status_code] += 1

    wait_until(lambda: settles_within_bound(tracker, memory), timeout=5, message=report("", memory))
    logger.info(report("300 x 1 MiB Authorization", memory))
    assert statuses == {431: 300}
    assert memory.growth.peak <= PEAK_MIB


@pytest.mark.slow
def test_ten_thousand_distinct_wrong_logins_under_the_header_limit_are_not_kept(
    tracker: TrackerProcess,
) -> None:
    memory = Memory.of(tracker.process)
    statuses: Counter[int] = Counter()
    with memory.measure(), httpx.Client(base_url=tracker.base_url, timeout=10) as http:
        filler = "x" * 12_000
        for n in range(10_000):
            junk = f"Junk {n:05d}{filler}"  # not even Basic: no key derivation, no throttle
            statuses[http.post("/1", json=[], headers={"Authorization": junk}).status_code] += 1

    wait_until(lambda: settles_within_bound(tracker, memory), timeout=5, message=report("", memory))
    logger.info(report("10,000 x 12 kB Authorization", memory))
    assert statuses == {401: 10_000}
    assert memory.growth.peak <= PEAK_MIB


def test_a_64_mib_header_is_refused_as_it_arrives(tracker: TrackerProcess) -> None:
    memory = Memory.of(tracker.process)
    with memory.measure():
        junk = "Basic " + "A" * (64 * MIB)
        response = httpx.post(
            tracker.base_url + "/1", json=[], headers={"Authorization": junk}, timeout=30
        )

    wait_until(lambda: settles_within_bound(tracker, memory), timeout=5, message=report("", memory))
    logger.info(report("one 64 MiB Authorization", memory))
    assert response.status_code == 431
    assert memory.growth.peak <= 32  # the header limit plus a read or two, not the header


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" + b"{}," * (MAX_BODY // 3 - 1) + b"{}]", "application/json"),
        (b"{}\n" * (MAX_BODY // 3), NDJSON),
        (b"1\n" * (MAX_BODY // 2), NDJSON),
    ],
    ids=["json-array-of-empty-objects", "ndjson-empty-objects", "ndjson-numbers"],
)
def test_a_body_of_millions_of_tiny_items_is_refused_before_they_are_built(
    open_tracker: TrackerProcess, body: bytes, content_type: str
) -> None:
    assert len(body) <= MAX_BODY
    memory = Memory.of(open_tracker.process)
    with memory.measure():
        response = httpx.post(
            open_tracker.base_url + "/1",
            content=body,
            headers={"Content-Type": content_type},
            timeout=30,
        )

    wait_until(
        lambda: settles_within_bound(open_tracker, memory), timeout=5, message=report("", memory)
    )
    logger.info(report(f"{len(body) / MIB:.1f} MiB of tiny items ({content_type})", memory))
    assert response.status_code == 413
    assert memory.growth.peak <= PEAK_MIB


def test_the_largest_legal_batch_stays_within_the_bound(open_tracker: TrackerProcess) -> None:
    # 1000 events of 4096 control characters: each \u0001 takes six bytes of JSON.
    body = orjson.dumps([{"data": "\x01" * 4096} for _ in range(1000)])
    memory = Memory.of(open_tracker.process)
    with memory.measure():
        response = httpx.post(
            open_tracker.base_url + "/1",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )

    wait_until(
        lambda: settles_within_bound(open_tracker, memory), timeout=5, message=report("", memory)
    )
    logger.info(report(f"the largest legal batch ({len(body) / MIB:.1f} MiB)", memory))
    assert response.status_code == 200, response.text
    assert len(response.json()["events"]) == 1000
    assert memory.growth.peak <= PEAK_MIB
    # The freed heap is given back (trim.py): glibc alone kept +48 MiB of it.
    wait_until(lambda: memory.retained() <= GIVEN_BACK_MIB, timeout=5, message=report("", memory))


# -- the limits themselves ----------------------------------------------------------------


def test_header_fields_within_the_limit_pass_and_beyond_it_are_431_on_every_route(
    tracker: TrackerProcess,
) -> None:
    login = ("1", "one-secret")
    with httpx.Client(base_url=tracker.base_url, auth=login, timeout=10) as http:
        under = {"X-Padding": "p" * 15_500}  # with httpx's own fields: under 16,384
        over = {"X-Padding": "p" * 16_500}
        event = http.post("/1", json={"data": "a"}, headers=under)
        history = http.get("/events", params={"since": "1m"}, headers=under)
        refused = [
            http.post("/1", json={"data": "b"}, headers=over),  # the fast path
            http.get("/events", params={"since": "1m"}, headers=over),  # FastAPI
        ]

    assert (event.status_code, history.status_code) == (200, 200)
    for response in refused:
        assert response.status_code == 431
        assert response.json() == {
            "detail": "The request header fields are larger than 16384 bytes in total"
        }
        assert response.headers["connection"] == "close"


def test_many_small_header_fields_count_as_much_as_one_large_one(
    tracker: TrackerProcess,
) -> None:
    fields = [(f"x-{n}".encode(), b"v") for n in range(3000)]  # ~3000 * 9 bytes as sent
    response = httpx.post(
        tracker.base_url + "/1", json={"data": "a"}, headers=fields, auth=("1", "one-secret")
    )

    assert response.status_code == 431


def test_a_request_target_longer_than_a_legal_event_needs_is_414(
    open_tracker: TrackerProcess,
) -> None:
    longest = "%01" * 4096  # the largest data, every byte percent-encoded
    legal = httpx.get(f"{open_tracker.base_url}/1?data={longest}&eventId=e-1")
    too_long = httpx.get(f"{open_tracker.base_url}/1?data={longest}&pad={'x' * 3000}")

    assert legal.status_code == 200, legal.text
    assert too_long.status_code == 414
    assert too_long.json() == {"detail": "The request target is longer than 14336 bytes"}
