"""A SIGKILL of the node leading a session's quorum queue loses no acknowledged message."""

from __future__ import annotations

import orjson

from devkit.waiting import wait_until
from tracker_api.ops.cluster import mqtt_session_queue

from .clients import Client, connected
from .conftest import ProvisionedCluster

N = 5_000
CLIENT_ID = "reader:durable"


def test_acknowledged_messages_survive_a_kill_of_the_queue_leader(
    rabbit: ProvisionedCluster,
) -> None:
    cluster, passwords = rabbit.cluster, rabbit.passwords
    first = cluster.nodes[0]
    with connected(
        first.mqtt_port, "reader", passwords["reader"], client_id=CLIENT_ID, clean=False
    ) as reader:
        assert reader.subscribe("track/#") == 1
    with connected(first.mqtt_port, "tracker", passwords["tracker"]) as tracker:
        mids = [tracker.publish(f"track/{i % 10}", orjson.dumps({"id": i})) for i in range(N)]
        wait_until(
            lambda: tracker.acked >= set(mids),
            timeout=60,
            message=f"{len(tracker.acked)} of {N} PUBACKs",
        )

    leader = cluster.queue_leader(mqtt_session_queue(CLIENT_ID))
    killed = cluster.kill(leader)
    assert cluster.pid(leader) is None and killed > 0
    survivor = next(node for node in cluster.nodes if node != leader)
    reader = Client(
        survivor.mqtt_port, "reader", passwords["reader"], client_id=CLIENT_ID, clean=False
    )
    try:
        # The queue elects a new leader within seconds; until then the node may refuse.
        wait_until(lambda: reconnects(reader), timeout=30, interval=0.5)
        assert reader.session_present, "the session was not resumed"
        wait_until(
            lambda: len(reader.received()) >= N,
            timeout=60,
            message=f"{len(reader.received())} of {N} delivered",
        )
        ids = {orjson.loads(payload)["id"] for _, payload in reader.received()}
        assert ids == set(range(N))
    finally:
        reader.close()

    cluster.restart(leader)
    assert leader.name in cluster.cluster_nodes(survivor, running=True)


def reconnects(client: Client) -> bool:
    """Whether ``client`` is now connected; a refused or lost attempt is reset for another."""
    if client.connack == 0 and not client.lost.is_set():
        return True
    client.close()
    client.connack = None
    client.lost.clear()
    try:
        return client.connect() == 0
    except (OSError, AssertionError):
        return False
