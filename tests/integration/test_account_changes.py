"""Account changes against a real tracker with two workers, on SQLite and PostgreSQL:
a deactivation (through ``tracker-api accounts`` or the admin API) stops the account's
events on every worker within ``TRACKER_ACCOUNT_CACHE_TTL``, and the admin API manages
accounts end to end, the archive's events included.

Which worker answered is told by the ``X-Request-ID`` the tracker names a request with:
a random prefix per worker process, then a counter. Each probe is a fresh connection, so
the kernel hands probes to both workers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy import Engine

from devkit.broker import Mosquitto
from devkit.postgres import PostgresCluster
from devkit.waiting import wait_until
from tests.helpers.accounts import migrated
from tests.helpers.postgres import throwaway_postgres
from tests.helpers.tracker import TrackerProcess
from tracker_api.passwords import PasswordFile

TTL = 1.0  # TRACKER_ACCOUNT_CACHE_TTL of the tracker under test
MARGIN = 1.5  # for the probes themselves on a busy 2-core machine
TRACKER = ("tracker", "svc-secret")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tracker.db'}"
    else:
        url = request.getfixturevalue("postgres").fresh_database()
    engine = migrated(url)
    yield url, engine
    engine.dispose()


@pytest.fixture
def tracker(
    broker: Mosquitto, database: tuple[str, Engine], tmp_path: Path
) -> Iterator[TrackerProcess]:
    password_file = tmp_path / "passwd"
    passwords = PasswordFile(password_file)
    passwords.set(*TRACKER)
    passwords.save()
    with TrackerProcess(
        tmp_path,
        broker.url,
        database[0],
        TRACKER_WORKERS="2",
        TRACKER_ACCOUNT_CACHE_TTL=str(TTL),
        TRACKER_PASSWORD_FILE=str(password_file),
        TRACKER_STATE_DIR=str(tmp_path / "state"),
    ) as process:
        yield process


def probe(tracker: TrackerProcess, account_id: str, count: int = 24) -> list[tuple[str, int]]:
    """(worker, status) of ``count`` event requests, each on a connection of its own."""

    def one(n: int) -> tuple[str, int]:
        response = httpx.get(f"{tracker.base_url}/{account_id}", params={"data": f"probe-{n}"})
        return response.headers["x-request-id"].rsplit("-", 1)[0], response.status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def both_workers(tracker: TrackerProcess, account_id: str) -> set[str]:
    """The two workers, once each has answered an event of ``account_id`` with 200: each
    holds the account as active in its cache."""
    seen: set[str] = set()

    def both() -> bool:
        seen.update(worker for worker, status in probe(tracker, account_id) if status == 200)
        return len(seen) == 2

    wait_until(both, timeout=20, message="one worker took every connection")
    return seen


def seconds_until_every_worker_answers(
    tracker: TrackerProcess, account_id: str, status: int, workers: set[str], since: float
) -> float:
    """How long after ``since`` a round of probes first got ``status`` from both workers
    and nothing else; fails after the TTL and the margin."""

    def everywhere() -> bool:
        answers = probe(tracker, account_id)
        return {w for w, _ in answers} == workers and {s for _, s in answers} == {status}

    wait_until(
        everywhere,
        timeout=TTL + MARGIN - (time.monotonic() - since),
        message=f"not every worker answered {status} within {TTL + MARGIN} s:\n{tracker.log()}",
    )
    return time.monotonic() - since


def settled(tracker: TrackerProcess, account_id: str, status: int, workers: set[str]) -> None:
    """No worker goes back: more fresh connections, all answered ``status``, until both
    workers have answered."""
    seen: set[str] = set()

    def both_answered() -> bool:
        answers = probe(tracker, account_id, 48)
        assert {s for _, s in answers} == {status}
        seen.update(worker for worker, _ in answers)
        return seen == workers

    wait_until(both_answered, timeout=20)


def accounts_cli(database_url: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "tracker_api", "accounts", *args],
        env={"PATH": "/usr/bin:/bin", "TRACKER_DATABASE_URL": database_url},
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_a_deactivation_through_the_cli_stops_events_on_every_worker_within_the_ttl(
    tracker: TrackerProcess, database: tuple[str, Engine]
) -> None:
    workers = both_workers(tracker, "1")

    accounts_cli(database[0], "deactivate", "1")
    stopped = seconds_until_every_worker_answers(tracker, "1", 403, workers, time.monotonic())
    settled(tracker, "1", 403, workers)
    accounts_cli(database[0], "activate", "1")
    resumed = seconds_until_every_worker_answers(tracker, "1", 200, workers, time.monotonic())
    settled(tracker, "1", 200, workers)

    assert stopped <= TTL + MARGIN and resumed <= TTL + MARGIN


def test_a_deactivation_through_the_admin_api_acts_at_once_there_and_everywhere_within_the_ttl(
    tracker: TrackerProcess,
) -> None:
    workers = both_workers(tracker, "2")

    with httpx.Client(base_url=tracker.base_url) as connection:  # one keep-alive connection
        assert connection.get("/2", params={"data": "cached"}).status_code == 200
        changed = connection.patch("/admin/accounts/2", json={"active": False}, auth=TRACKER)
        changed_at = time.monotonic()
        same_worker = connection.get("/2", params={"data": "refused"})
    stopped = seconds_until_every_worker_answers(tracker, "2", 403, workers, changed_at)
    settled(tracker, "2", 403, workers)

    assert changed.json()["changes"] == ["deactivated"]
    # The worker that made the change forgot its cached answer (fresh, valid for the TTL).
    assert same_worker.status_code == 403
    assert stopped <= TTL + MARGIN


def test_the_admin_api_of_a_real_tracker_adds_renames_and_removes_an_account_with_history(
    tracker: TrackerProcess,
) -> None:
    admin = httpx.Client(base_url=f"{tracker.base_url}/admin", auth=TRACKER)
    created = admin.post("/accounts", json={"accountId": "kitchen", "name": "Kitchen"})
    events = [httpx.get(f"{tracker.base_url}/kitchen", params={"data": str(n)}) for n in range(3)]
    renamed = admin.patch("/accounts/kitchen", json={"name": "Pantry"})
    # The archive writes the events on its own time.
    wait_until(lambda: admin.get("/accounts/kitchen").json()["archivedEvents"] == 3, timeout=10)
    refused = admin.delete("/accounts/kitchen")
    forced = admin.delete("/accounts/kitchen", params={"force": "true"})
    listed = admin.get("/accounts").json()
    anonymous = httpx.get(f"{tracker.base_url}/admin/accounts")
    admin.close()

    assert created.status_code == 201
    assert [event.status_code for event in events] == [200, 200, 200]
    assert renamed.json()["changes"] == ["renamed"]
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("Account 'kitchen' has 3 archived event(s)")
    assert forced.json()["deletedEvents"] == 3
    assert "kitchen" not in [account["accountId"] for account in listed["accounts"]]
    assert anonymous.status_code == 401
