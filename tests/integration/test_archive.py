"""The archive end to end: real Mosquitto, real tracker and ``tracker-api archive``
processes, real SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest
from sqlalchemy import Engine, func, select

from devkit.broker import Mosquitto
from devkit.mqtt_client import paho_client
from devkit.postgres import PostgresCluster
from devkit.waiting import wait_until
from tests.helpers.accounts import migrated
from tests.helpers.postgres import throwaway_postgres
from tests.helpers.tracker import TrackerProcess
from tracker_api.service.events import Clock
from tracker_api.storage import event_store as archive

REPO = Path(__file__).resolve().parents[2]


def count_rows(engine: Engine) -> tuple[int, int]:
    """(rows, distinct eventIds)."""
    columns = archive.EVENTS.c
    with engine.connect() as connection:
        rows = connection.execute(select(func.count()).select_from(archive.EVENTS)).scalar()
        unique = connection.execute(select(func.count(func.distinct(columns.event_id)))).scalar()
    return int(rows or 0), int(unique or 0)


class Publisher:
    """Publishes envelopes on track/<account> at QoS 1 as the tracker does; ``acked``
    holds the eventIds the broker acknowledged."""

    def __init__(self, port: int) -> None:
        self.client = paho_client("test-envelopes")
        self.client.max_inflight_messages_set(100)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.acked: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, account_id: str, event_id: str, payload: bytes | None = None) -> None:
        body = payload or orjson.dumps(
            {
                "eventId": event_id,
                "accountId": account_id,
                "timestamp": "2099-01-01T00:00:00.000Z" if event_id == "future" else now(),
                "data": event_id,
            }
        )
        info = self.client.publish(f"track/{account_id}", body, qos=1)
        info.wait_for_publish(5)
        if info.is_published():
            self.acked.append(event_id)

    def steady(self) -> None:
        def run() -> None:
            n = 0
            while not self._stop.is_set():
                self.send("1", f"steady-{n}")
                n += 1

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.client.loop_stop()
        self.client.disconnect()


now = Clock().now  # the tracker's own timestamps


def archive_state(tracker: TrackerProcess) -> str:
    return str(httpx.get(tracker.base_url + "/readyz", timeout=2).json()["archive"])


def test_events_sent_before_any_subscriber_are_archived_once_by_one_of_two_workers(
    broker: Mosquitto, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    engine = migrated(url)
    env = {"TRACKER_WORKERS": "2", "TRACKER_STATE_DIR": str(tmp_path / "state")}
    with TrackerProcess(tmp_path, broker.url, url, **env) as tracker:
        sent = []
        for n in range(30):
            account = "1" if n % 3 else "2"
            body = httpx.get(f"{tracker.base_url}/{account}", params={"data": f"e{n}"}).json()
            sent.append(body["event"])
        # Not ours: counted and skipped, never blocking what follows.
        publisher = Publisher(broker.port)
        publisher.send("1", "x", b"not json")
        publisher.send("1", "x", orjson.dumps({"eventId": "y", "accountId": "2"}))
        publisher.send("1", "last")
        publisher.stop()

        wait_until(lambda: count_rows(engine)[0] == 31, timeout=15, message=f"{count_rows(engine)}")
        first = httpx.get(f"{tracker.base_url}/events", params={"since": "5m", "limit": 20}).json()
        rest = httpx.get(
            f"{tracker.base_url}/events", params={"since": "5m", "after": first["next"]}
        ).json()
        streamed = httpx.get(
            f"{tracker.base_url}/events",
            params={"since": "5m", "account": "2"},
            headers={"Accept": "application/x-ndjson"},
        ).text.splitlines()
        # Several accounts, repeated: every one of them, not only the first.
        both = httpx.get(
            f"{tracker.base_url}/events", params={"since": "5m", "account": ["2", "1"]}
        ).json()
        # NDJSON honours limit, and names the cursor of what follows.
        limited = httpx.get(
            f"{tracker.base_url}/events",
            params={"since": "5m", "limit": 7},
            headers={"Accept": "application/x-ndjson"},
        )
        malformed = tracker.metric("tracker_archive_malformed_total")
        archived = tracker.metric("tracker_archived_total")
        states = {archive_state(tracker) for _ in range(20)}
        # Read while both workers run: at shutdown the survivor may take the lease over.
        leaders = tracker.log().count("archive: leader, consuming")
    engine.dispose()

    events = first["events"] + rest["events"]
    assert [e for e in events if e["eventId"] != "last"] == sent  # time order, as published
    assert rest["next"] is None
    assert [orjson.loads(line) for line in streamed] == [e for e in sent if e["accountId"] == "2"]
    assert [e["eventId"] for e in both["events"]] == [e["eventId"] for e in sent] + ["last"]
    assert [orjson.loads(line) for line in limited.text.splitlines()] == sent[:7]
    assert limited.headers["x-next-cursor"] == archive.encode_cursor(
        archive.decode_cursor(limited.headers["x-next-cursor"])
    )
    assert malformed == 2
    assert archived == 31  # each once, over both workers
    assert states <= {"leader", "follower"} and "leader" in states
    assert leaders == 1


def start_archive(tmp_path: Path, broker: Mosquitto, url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TRACKER_MQTT_URL": broker.url,
        "TRACKER_DATABASE_URL": url,
        "TRACKER_STATE_DIR": str(tmp_path / "state"),
    }
    with open(tmp_path / "archive.log", "ab") as log:  # the process keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "tracker_api", "archive"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def test_an_archive_killed_mid_batch_loses_and_duplicates_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    engine = migrated(url)
    first = start_archive(tmp_path, broker, url)
    # Its session exists from its first connection on: events before that are no one's.
    wait_until(lambda: "session present" in (tmp_path / "archive.log").read_text(), timeout=10)
    publisher = Publisher(broker.port)
    try:
        publisher.steady()
        wait_until(lambda: count_rows(engine)[0] >= 300, timeout=20)
        first.kill()  # SIGKILL: whatever batch it had in hand is neither committed nor acked
        first.wait(5)
        killed_at = len(publisher.acked)
        second = start_archive(tmp_path, broker, url)
        try:
            wait_until(lambda: len(publisher.acked) > killed_at + 300, timeout=20)
            publisher.stop()
            wait_until(lambda: count_rows(engine)[0] >= len(publisher.acked), timeout=20)
            assert count_rows(engine) == (len(publisher.acked), len(set(publisher.acked)))
        finally:
            stop(second)
    finally:
        publisher.stop()
        stop(first)
        engine.dispose()


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


@pytest.mark.postgres
def test_with_the_database_down_nothing_is_acknowledged_and_all_is_caught_up_after(
    broker: Mosquitto, postgres: PostgresCluster, tmp_path: Path
) -> None:
    engine = migrated(postgres.url)
    env = {"TRACKER_STATE_DIR": str(tmp_path / "state"), "wait_for": "/healthz"}
    publisher = Publisher(broker.port)
    try:
        with TrackerProcess(tmp_path, broker.url, postgres.url, **env) as tracker:
            wait_until(lambda: archive_state(tracker) == "leader", timeout=10)
            publisher.send("1", "before")
            wait_until(lambda: count_rows(engine)[0] == 1, timeout=10)
            engine.dispose()
            postgres.stop()
            for n in range(20):
                publisher.send("2", f"during-{n}")
            wait_until(
                lambda: archive_state(tracker) == "behind: database unavailable",
                timeout=15,
                message=tracker.log(),
            )
            tracker.kill()  # had it acknowledged anything, the broker would have dropped it
        postgres.start()
        with TrackerProcess(tmp_path, broker.url, postgres.url, **env) as again:
            wait_until(lambda: count_rows(engine)[0] == 21, timeout=20, message=again.log())
            assert count_rows(engine) == (21, 21)
    finally:
        publisher.stop()
        engine.dispose()
