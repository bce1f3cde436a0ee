"""Device ingest on the RabbitMQ cluster: ``leader`` mode with PostgreSQL through a tracker
kill and a broker node kill; ``shared`` mode (no ``$share`` there) says it is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from devkit.broker import REPO
from devkit.postgres import PostgresCluster
from devkit.waiting import wait_until
from tests.helpers.postgres import throwaway_postgres
from tests.helpers.tracker import TrackerProcess
from tracker_api.ops.cluster import mqtt_session_queue

from .clients import Client, connected
from .conftest import ProvisionedCluster

INGEST_ID = "tracker:ingest"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    for cluster in throwaway_postgres():
        subprocess.run(
            [sys.executable, str(REPO / "data" / "seed.py"), "--database-url", cluster.url],
            capture_output=True,
            timeout=60,
            check=True,
        )
        yield cluster


def tracker_url(rabbit: ProvisionedCluster, node: int) -> str:
    port = rabbit.layout.nodes[node].mqtt_port
    return f"mqtt://tracker:{rabbit.passwords['tracker']}@127.0.0.1:{port}"


def readyz(tracker: TrackerProcess) -> httpx.Response:
    return httpx.get(tracker.base_url + "/readyz", timeout=3)


def test_shared_mode_reports_the_refusal_and_still_serves_http_events(
    rabbit: ProvisionedCluster, postgres: PostgresCluster, tmp_path: Path
) -> None:
    env = {"TRACKER_INGEST_MODE": "shared", "TRACKER_STATE_DIR": str(tmp_path / "state")}
    with TrackerProcess(tmp_path, tracker_url(rabbit, 0), postgres.url, **env) as tracker:
        ingest = wait_until(
            lambda: (state := readyz(tracker).json()["ingest"]).startswith("refused") and state,
            timeout=10,
            message=tracker.log(),
        )
        assert "$share/tracker/ingest/+" in ingest
        # The last refusal closed the connection: ready once it is back, without it.
        wait_until(lambda: readyz(tracker).status_code == 200, timeout=10)
        assert httpx.get(tracker.base_url + "/1", params={"data": "x"}).status_code == 200
    assert "refused subscription to $share/tracker/ingest/+" in tracker.log()


def test_leader_mode_delivers_every_device_event_through_a_tracker_kill_and_a_node_kill(
    rabbit: ProvisionedCluster, postgres: PostgresCluster, tmp_path: Path
) -> None:
    cluster, passwords = rabbit.cluster, rabbit.passwords
    trackers_node, queue_node, device_node = cluster.nodes
    # The session queue is led by the node that declares it: declare it on the node to
    # kill, so that the trackers' node survives (they connect to one node only).
    with connected(
        queue_node.mqtt_port, "tracker", passwords["tracker"], client_id=INGEST_ID, clean=False
    ) as declaring:
        assert declaring.subscribe("ingest/+") == 1
    assert cluster.queue_leader(mqtt_session_queue(INGEST_ID)) == queue_node

    env = {"TRACKER_INGEST_MODE": "leader", "wait_for": "/healthz"}
    url = tracker_url(rabbit, 0)
    sent: list[str] = []

    def send(device: Client, count: int) -> None:
        for _ in range(count):
            event_id = f"dev-1-{len(sent)}"
            sent.append(event_id)
            device.publish("ingest/1", orjson.dumps({"data": event_id, "eventId": event_id}))

    def delivered() -> set[str]:
        return {orjson.loads(payload)["eventId"] for _, payload in reader.received()}

    def wait_delivered() -> None:
        wait_until(
            lambda: delivered() >= set(sent),
            timeout=30,
            message=f"missing {set(sent) - delivered()}",
        )

    with (
        connected(trackers_node.mqtt_port, "reader", passwords["reader"]) as reader,
        connected(device_node.mqtt_port, "1", passwords["1"]) as device,
        TrackerProcess(
            tmp_path, url, postgres.url, TRACKER_STATE_DIR=str(tmp_path / "a"), **env
        ) as a,
        TrackerProcess(
            tmp_path, url, postgres.url, TRACKER_STATE_DIR=str(tmp_path / "b"), **env
        ) as b,
    ):
        assert reader.subscribe("track/#") == 1
        states = wait_until(
            lambda: sorted(readyz(t).json()["ingest"] for t in (a, b)) == ["follower", "leader"],
            timeout=15,
            message=a.log() + b.log(),
        )
        assert states
        send(device, 5)
        wait_delivered()

        leader, follower = (a, b) if readyz(a).json()["ingest"] == "leader" else (b, a)
        leader.kill()
        send(device, 5)  # while nobody leads: kept in the session
        wait_until(lambda: readyz(follower).json()["ingest"] == "leader", timeout=15)
        wait_delivered()

        cluster.kill(queue_node)
        try:
            send(device, 5)
            wait_delivered()
        finally:
            cluster.restart(queue_node)

    assert sorted(delivered()) == sorted(sent)
