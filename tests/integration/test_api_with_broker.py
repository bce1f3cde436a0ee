"""The tracker against a real Mosquitto: what a 200 and a 503 mean on the wire."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from devkit.broker import Mosquitto
from devkit.waiting import wait_until
from tests.helpers.api import api_client
from tests.helpers.mqtt_peer import Peer
from tracker_api.service.broker import STATUS_TOPIC


@pytest.fixture
def api(broker: Mosquitto, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(tmp_path, broker.url, publish_timeout=0.5, mqtt_keepalive=2) as client:
        yield client


def ready(api: TestClient) -> bool:
    return api.get("/readyz").status_code == 200


def test_accepted_event_arrives_on_the_account_topic_exactly_as_answered(
    api: TestClient, broker: Mosquitto
) -> None:
    with Peer(broker.port, "track/#") as peer:
        response = api.get("/1", params={"data": "héllo 👋"})

        assert response.status_code == 200
        (message,) = peer.wait_for(1)

    assert message.topic == "track/1"
    assert message.qos == 1
    assert message.retain is False
    assert orjson.loads(message.payload) == response.json()["event"]
    assert message.event["data"] == "héllo 👋"


def test_broker_down_gives_503_within_a_second_and_recovers_without_restart(
    api: TestClient, broker: Mosquitto
) -> None:
    assert ready(api)
    broker.stop()

    wait_until(lambda: api.get("/readyz").status_code == 503, timeout=5)
    started = time.monotonic()
    response = api.get("/1", params={"data": "while down"})
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert elapsed < 1.0

    broker.start()
    wait_until(lambda: ready(api), timeout=10, message="tracker did not reconnect")
    assert api.get("/1", params={"data": "back"}).status_code == 200


def test_an_event_refused_with_503_is_never_delivered_later(
    api: TestClient, broker: Mosquitto
) -> None:
    # A persistent subscriber: anything the broker ever accepted would reach it.
    with Peer(broker.port, "track/#", client_id="witness", clean=False):
        pass
    broker.stop()
    wait_until(lambda: not ready(api), timeout=5)
    refused = api.get("/1", params={"data": "refused"})
    assert refused.status_code == 503

    broker.start()
    wait_until(lambda: ready(api), timeout=10)
    marker = api.get("/1", params={"data": "marker"})
    assert marker.status_code == 200

    with Peer(broker.port, "track/#", client_id="witness", clean=False) as witness:
        wait_until(lambda: "marker" in [e["data"] for e in witness.events()], timeout=5)
        data = [event["data"] for event in witness.events()]

    assert "refused" not in data
    assert data.count("marker") == 1


def test_tracker_announces_online_and_leaves_offline_retained(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # Each connection has its status: the publishing one, and the archive's (one per
    # cluster, under its own client id).
    with api_client(tmp_path, broker.url), Peer(broker.port, "tracker/status/+") as peer:
        online = peer.wait_for_topics(2)
    with Peer(broker.port, "tracker/status/+") as after:
        offline = after.wait_for_topics(2)

    assert STATUS_TOPIC.format(client_id="tracker:archive") in online
    assert {topic: status.payload for topic, status in online.items()} == dict.fromkeys(
        online, b"online"
    )
    assert {topic: (status.payload, status.retain) for topic, status in offline.items()} == (
        dict.fromkeys(online, (b"offline", True))
    )


def test_every_acknowledged_event_is_delivered_exactly_once(
    api: TestClient, broker: Mosquitto
) -> None:
    with Peer(broker.port, "track/#") as peer:
        ids = [
            api.get("/2", params={"data": str(n)}).json()["event"]["eventId"] for n in range(300)
        ]
        peer.wait_for(300)
        delivered = peer.event_ids()

    assert sorted(delivered) == sorted(ids)
