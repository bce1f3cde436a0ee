"""The history API under a hostile or merely heavy reader, against a real tracker process
and a real SQLite archive of 10,000 events of 16 kB each (160 MB of envelopes).

- Memory: an account's own login reads its whole history, as JSON pages and as NDJSON;
  the worker's resident memory (``/proc/<pid>/status``) may grow by at most 256 MiB at
  its peak and must be back within 64 MiB of where it was once the reads are done.
- Capacity: event requests whose account is looked up in the database every time
  (``TRACKER_ACCOUNT_CACHE_TTL=0``) keep their latency while big history pages are
  served, and while history reads are stuck on the database (a real PostgreSQL, its
  events table locked): the history runs on threads and connections of its own.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest
from sqlalchemy import Engine, text

from devkit.broker import Mosquitto
from devkit.postgres import PostgresCluster
from devkit.waiting import wait_until
from tests.helpers.accounts import migrated
from tests.helpers.postgres import throwaway_postgres
from tests.helpers.tracker import TrackerProcess
from tracker_api.passwords import PasswordFile
from tracker_api.storage import event_store

EVENTS, EVENT_BYTES = 10_000, 16 * 1024
MiB = 1024 * 1024
PEAK_BOUND, AFTER_BOUND = 256 * MiB, 64 * MiB
LOGIN = ("1", "one-secret")


def fill(engine: Engine, account: str, count: int, size: int) -> None:
    """``count`` archived events of ``account``, ``size`` bytes of data each, in the last
    half hour: what the archive would hold after a busy device sent them."""
    start = datetime.now(UTC) - timedelta(minutes=30)
    batch: list[event_store.Row] = []
    for n in range(count):
        at = start + timedelta(milliseconds=n)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        envelope = {"eventId": f"big-{n:06d}", "accountId": account, "timestamp": stamp}
        payload = orjson.dumps({**envelope, "data": f"{n:06d}" + "x" * (size - 6)})
        batch.append(event_store.parse(f"track/{account}", payload))
        if len(batch) == 500:
            event_store.insert(engine, batch)
            batch.clear()
    if batch:
        event_store.insert(engine, batch)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A migrated SQLite database holding the big history, and the password file with
    account 1's login (an ordinary account, not a role)."""
    workdir = tmp_path_factory.mktemp("history-bounds")
    url = f"sqlite:///{workdir / 'tracker.db'}"
    engine = migrated(url)
    try:
        fill(engine, "1", EVENTS, EVENT_BYTES)
    finally:
        engine.dispose()
    passwords = PasswordFile(workdir / "passwd")
    passwords.set(*LOGIN)
    passwords.save()
    return workdir, url


@pytest.fixture
def tracker(
    archive: tuple[Path, str], broker: Mosquitto, tmp_path: Path
) -> Iterator[TrackerProcess]:
    workdir, url = archive
    env = {
        "TRACKER_PASSWORD_FILE": str(workdir / "passwd"),
        "TRACKER_STATE_DIR": str(tmp_path / "state"),
        "TRACKER_ARCHIVE": "false",  # the table is filled by the fixture; nothing to consume
        "TRACKER_ACCOUNT_CACHE_TTL": "0",  # every event request looks its account up
    }
    with TrackerProcess(tmp_path, broker.url, url, **env) as process:
        yield process


# -- memory --------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def memory_cost(pid: int, work: Callable[[], object]) -> tuple[int, int]:
    """What ``work`` costs the process in resident memory: (peak, after), in bytes above
    what it held before. The peak is the kernel's high-water mark, reset first."""
    before = status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    work()
    peak = status_kib(pid, "VmHWM")
    after = status_kib(pid, "VmRSS")
    return (peak - before) * 1024, (after - before) * 1024


def read_json_pages(base_url: str) -> int:
    """Every event of the history through JSON pages of the largest ``limit``."""
    seen, after = 0, None
    with httpx.Client(base_url=base_url, auth=LOGIN, timeout=120) as client:
        while True:
            params = {"since": "1h", "limit": "10000", **({"after": after} if after else {})}
            response = client.get("/events", params=params)
            assert response.status_code == 200, response.text[:200]
            body = response.json()
            seen += len(body["events"])
            after = body["next"]
            if after is None:
                return seen


def read_ndjson(base_url: str) -> int:
    """Every event of the history as one NDJSON stream, read as it comes."""
    seen = 0
    headers = {"Accept": "application/x-ndjson"}
    with httpx.stream(
        "GET", f"{base_url}/events", params={"since": "1h"}, headers=headers, auth=LOGIN,
        timeout=120,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        for line in response.iter_lines():
            seen += bool(line)
    return seen


def test_an_accounts_own_login_cannot_make_a_worker_hold_its_whole_history(
    tracker: TrackerProcess,
) -> None:
    assert tracker.process is not None
    pid = tracker.process.pid  # one worker: uvicorn serves in this very process
    read_json_pages(tracker.base_url)  # warm: imports, caches, pools

    counts: dict[str, int] = {}
    json_peak, json_after = memory_cost(
        pid, lambda: counts.__setitem__("json", read_json_pages(tracker.base_url))
    )
    ndjson_peak, ndjson_after = memory_cost(
        pid, lambda: counts.__setitem__("ndjson", read_ndjson(tracker.base_url))
    )

    print(  # noqa: T201 - the measured figures
        f"history of {EVENTS} x {EVENT_BYTES // 1024} kB: JSON pages peak +{json_peak / MiB:.0f} "
        f"MiB, after +{json_after / MiB:.0f} MiB; NDJSON peak +{ndjson_peak / MiB:.0f} MiB, "
        f"after +{ndjson_after / MiB:.0f} MiB"
    )
    assert counts == {"json": EVENTS, "ndjson": EVENTS}
    assert json_peak < PEAK_BOUND and ndjson_peak < PEAK_BOUND
    assert json_after < AFTER_BOUND and ndjson_after < AFTER_BOUND


# -- capacity ------------------------------------------------------------------------------

EVENT_REQUESTS = 300
HISTORY_READERS = 6


def event_latencies(base_url: str, count: int) -> list[float]:
    """Seconds each of ``count`` event requests took, two at a time; each must be a 200."""
    latencies: list[float] = []

    def send(offset: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for n in range(offset, count, 2):
                started = time.perf_counter()
                response = client.get("/2", params={"data": f"latency {n}"})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

    threads = [threading.Thread(target=send, args=(offset,)) for offset in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(latencies) == count
    return latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def test_event_requests_keep_their_latency_while_big_history_pages_are_served(
    tracker: TrackerProcess,
) -> None:
    base_url = tracker.base_url
    event_latencies(base_url, 50)  # warm
    quiet = p99(event_latencies(base_url, EVENT_REQUESTS))

    stop = threading.Event()
    received = [0]

    def read_history() -> None:
        params = {"since": "1h", "limit": "10000"}
        with httpx.Client(base_url=base_url, auth=LOGIN, timeout=120) as client:
            while not stop.is_set():
                with client.stream("GET", "/events", params=params) as response:
                    assert response.status_code == 200
                    for chunk in response.iter_bytes():
                        received[0] += len(chunk)
                        if stop.is_set():
                            break

    readers = [threading.Thread(target=read_history) for _ in range(HISTORY_READERS)]
    for reader in readers:
        reader.start()
    try:
        busy = p99(event_latencies(base_url, EVENT_REQUESTS))
        served = received[0]
    finally:
        stop.set()
        for reader in readers:
            reader.join(120)

    print(  # noqa: T201 - the measured figures
        f"event p99: {quiet * 1000:.1f} ms alone, {busy * 1000:.1f} ms beside "
        f"{HISTORY_READERS} history readers ({served / MiB:.0f} MiB of history served meanwhile)"
    )
    assert served > 16 * MiB, "the history was not busy while events were measured"
    assert busy < max(10 * quiet, 0.25)


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


STUCK_READS = 8  # more than asyncio's default executor has threads on a small machine


@pytest.mark.postgres
def test_history_reads_stuck_on_the_database_leave_event_requests_their_capacity(
    postgres: PostgresCluster, broker: Mosquitto, tmp_path: Path
) -> None:
    engine = migrated(postgres.url)
    env = {
        "TRACKER_STATE_DIR": str(tmp_path / "state"),
        "TRACKER_ARCHIVE": "false",
        "TRACKER_ACCOUNT_CACHE_TTL": "0",
    }
    answers: list[int] = []
    try:
        with TrackerProcess(tmp_path, broker.url, postgres.url, **env) as tracker:
            with engine.connect() as holder:
                # A long maintenance transaction: every read of the archive waits for it,
                # the accounts table does not.
                holder.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))

                def read_history() -> None:
                    response = httpx.get(
                        f"{tracker.base_url}/events", params={"since": "1h"}, timeout=60
                    )
                    answers.append(response.status_code)

                readers = [threading.Thread(target=read_history) for _ in range(STUCK_READS)]
                for reader in readers:
                    reader.start()
                wait_until(lambda: waiting_on_locks(engine) >= 2, timeout=10)

                latencies, statuses = timed_events(tracker.base_url, 40)
                holder.rollback()  # the maintenance ends: the history goes on
            for reader in readers:
                reader.join(60)
    finally:
        engine.dispose()

    print(  # noqa: T201 - the measured figure
        f"event p99 with {STUCK_READS} history reads stuck on a lock: "
        f"{p99(latencies) * 1000:.1f} ms"
    )
    assert statuses == [200] * 40
    assert p99(latencies) < 0.25
    assert answers == [200] * STUCK_READS  # served once the lock was gone


def waiting_on_locks(engine: Engine) -> int:
    """Queries of other sessions waiting for a lock right now."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    with engine.connect() as connection:
        return int(connection.execute(text(query)).scalar_one())


def timed_events(base_url: str, count: int) -> tuple[list[float], list[int]]:
    """Latency and status of ``count`` event requests in a row (0: no answer in 3 s)."""
    latencies, statuses = [], []
    with httpx.Client(base_url=base_url, timeout=3) as client:
        for n in range(count):
            started = time.perf_counter()
            try:
                statuses.append(client.get("/2", params={"data": f"beside {n}"}).status_code)
            except httpx.TimeoutException:
                statuses.append(0)
            latencies.append(time.perf_counter() - started)
    return latencies, statuses
