"""The real server process: several workers, each its own MQTT client, last will on crash."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from devkit.broker import Mosquitto
from devkit.waiting import wait_until
from tests.helpers.accounts import seeded_sqlite
from tests.helpers.mqtt_peer import Peer
from tests.helpers.tracker import TrackerProcess


@pytest.fixture
def verbose_broker(tmp_path: Path) -> Mosquitto:
    # Debug logging names the client of every PUBLISH the broker receives.
    broker = Mosquitto(tmp_path / "broker", extra="log_type debug\n")
    broker.start()
    yield broker  # type: ignore[misc]
    broker.kill()


ARCHIVE = "tracker:archive"


def clients_of(broker: Mosquitto) -> set[str]:
    return set(re.findall(r"as (tracker:\S+)", broker.log()))


def workers(broker: Mosquitto) -> set[str]:
    return clients_of(broker) - {ARCHIVE}


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
            lambda: len(workers(verbose_broker)) >= 2,
            timeout=20,
            message="two tracker clients did not connect",
        )

        def publishers() -> set[str]:
            log = verbose_broker.log()
            return set(re.findall(r"Received PUBLISH from (tracker:\S+) .*'track/1'", log))

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

    clients = workers(verbose_broker)
    assert len(clients) == 2
    # The archive consumes once for the whole deployment, not once per worker.
    assert clients_of(verbose_broker) == clients | {ARCHIVE}
    assert publishers() == clients
    assert sorted(delivered) == sorted(ids)


def test_a_killed_tracker_is_reported_offline_by_its_last_will(
    broker: Mosquitto, tmp_path: Path
) -> None:
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    tracker = TrackerProcess(tmp_path, broker.url, url, TRACKER_MQTT_KEEPALIVE="2")
    with tracker, Peer(broker.port, "tracker/status/+") as peer:
        # Its two connections (publishing, archive), each with its own will.
        online = peer.wait_for_topics(2)
        assert [status.payload for status in online.values()] == [b"online", b"online"]
        tracker.kill()
        wait_until(
            lambda: [m.payload for m in peer.latest().values()] == [b"offline", b"offline"],
            timeout=10,
        )
