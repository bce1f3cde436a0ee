"""``TRACKER_INGEST_MODE=leader`` on a real Mosquitto with two real tracker processes: one
consumes, and when it dies the other resumes its session, held messages included."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from devkit.broker import Mosquitto
from devkit.tail import Tail
from devkit.waiting import wait_until
from tests.helpers.api import database_to_repair
from tests.helpers.tracker import TrackerProcess

from .test_ingest import Device


def ingest_state(tracker: TrackerProcess) -> str:
    return str(httpx.get(tracker.base_url + "/readyz", timeout=2).json()["ingest"])


def mqtt_events(tracker: TrackerProcess, outcome: str) -> float:
    return tracker.metric("tracker_requests_total", outcome=outcome, source="mqtt")


@pytest.mark.slow
def test_one_leader_consumes_and_the_other_takes_over_its_held_messages_when_it_dies(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # Lookups fail until repaired: the leader holds the device messages unacknowledged.
    database_url, repair = database_to_repair(tmp_path)
    env = {
        "TRACKER_INGEST_MODE": "leader",
        "TRACKER_STATE_DIR": str(tmp_path / "state"),  # one host: the lease is a lock file
        "TRACKER_ACCOUNT_CACHE_TTL": "0",
        "wait_for": "/healthz",
    }
    device = Device(broker.port)
    sent = [f"dev-1-{n}" for n in range(5)]
    with (
        Tail(tmp_path / "tail", "--json", port=broker.port) as tail,
        TrackerProcess(tmp_path, broker.url, database_url, **env) as first,
    ):
        tail.wait_subscribed()
        wait_until(lambda: ingest_state(first) == "leader", timeout=10, message=first.log())
        with TrackerProcess(tmp_path, broker.url, database_url, **env) as second:
            assert ingest_state(second) == "follower"
            for event_id in sent[:3]:
                device.send("1", orjson.dumps({"data": event_id, "eventId": event_id}))
            wait_until(lambda: mqtt_events(first, "database_unavailable") >= 1, timeout=10)
            first.kill()

            repair()
            wait_until(lambda: ingest_state(second) == "leader", timeout=10, message=second.log())
            for event_id in sent[3:]:
                device.send("1", orjson.dumps({"data": event_id, "eventId": event_id}))
            tail.wait_for_events(len(sent), timeout=15)
            assert mqtt_events(second, "accepted") == len(sent)
        device.close()

    assert sorted(tail.event_ids()) == sent  # every one, none twice
