"""The real server process: several workers, each its own MQTT client, last will on crash."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.helpers.accounts import seeded_sqlite
from tests.helpers.broker import Mosquitto
from tests.helpers.mqtt_peer import Peer
from tests.helpers.tracker import TrackerProcess
from tests.helpers.waiting import wait_until


@pytest.fixture
def verbose_broker(tmp_path: Path) -> Mosquitto:
    # Debug logging names the client of every PUBLISH the broker receives.
    broker = Mosquitto(tmp_path / "broker", extra="log_type debug\n")
    broker.start()
    yield broker  # type: ignore[misc]
    broker.kill()


def test_two_workers_each_publish_with_their_own_client_id(
    verbose_broker: Mosquitto, tmp_path: Path
) -> None:
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    with (
        Peer(verbose_broker.port, "track/#") as peer,
        TrackerProcess(tmp_path, verbose_broker.url, url, TRACKER_WORKERS="2") as tracker,
    ):
        wait_until(
            lambda: len(set(re.findall(r"as (tracker-\S+)", verbose_broker.log()))) >= 2,
            timeout=20,
            message="two tracker clients did not connect",
        )

        def publishers() -> set[str]:
            log = verbose_broker.log()
            return set(re.findall(r"Received PUBLISH from (tracker-\S+) .*'track/1'", log))

        # Which worker accepts a connection is the kernel's choice: a fresh connection per
        # request, in rounds until both workers have published (or the deadline).
        ids: list[str] = []

        def send(n: int) -> str:
            response = httpx.get(f"{tracker.base_url}/1", params={"data": str(n)})
            assert response.status_code == 200
            return str(response.json()["event"]["eventId"])

        def a_round_reached_both() -> bool:
            with ThreadPoolExecutor(16) as pool:
                ids.extend(pool.map(send, range(len(ids), len(ids) + 100)))
            return len(publishers()) >= 2

        wait_until(a_round_reached_both, timeout=30, message="one worker took every request")
        peer.wait_for(len(ids), timeout=10)
        delivered = peer.event_ids()

    clients = set(re.findall(r"as (tracker-\S+)", verbose_broker.log()))
    assert len(clients) == 2
    assert publishers() == clients
    assert sorted(delivered) == sorted(ids)


def test_a_killed_tracker_is_reported_offline_by_its_last_will(
    broker: Mosquitto, tmp_path: Path
) -> None:
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    tracker = TrackerProcess(tmp_path, broker.url, url, TRACKER_MQTT_KEEPALIVE="2")
    with tracker, Peer(broker.port, "tracker/status/+") as peer:
        wait_until(lambda: [m.payload for m in peer.messages] == [b"online"], timeout=5)
        tracker.kill()
        wait_until(
            lambda: [m.payload for m in peer.messages] == [b"online", b"offline"], timeout=10
        )
