"""A session belongs to its login on the RabbitMQ cluster too, and a dotted account works
end to end there (HTTP, device ingest, archive, history, mqtt-tail).

RabbitMQ 3.10 keeps a session in the queue ``mqtt-subscription-<clientId>qos1``; the
roles give each login configure, read and write on its own session queues only
(tracker_api/ops/cluster_roles.py), and the session owner plugin (deploy/rabbitmq/plugin)
refuses a login another login's client id while it logs in, before RabbitMQ registers the
id cluster-wide (which would close the owner's connection). A takeover attempt is answered
"not authorised", reads nothing, and the owner's connection and queued events stay.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx2 as httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devkit.tail import Tail
from devkit.waiting import wait_until
from tests.helpers.accounts import migrated, seeded_sqlite
from tests.helpers.tracker import TrackerProcess
from tracker_api.ops.cluster import Cluster, ClusterError, Layout
from tracker_api.ops.cluster_roles import apply_logins

from .clients import Client, connected
from .conftest import ProvisionedCluster

DOTTED = "acme.eu-1"  # an active account of tests.helpers.accounts


def queue_events(rabbit: ProvisionedCluster, port: int, topic: str, count: int) -> list[bytes]:
    payloads = [f"queued-{i}-{secrets.token_hex(4)}".encode() for i in range(count)]
    with connected(port, "tracker", rabbit.passwords["tracker"]) as tracker:
        mids = [tracker.publish(topic, payload) for payload in payloads]
        wait_until(lambda: set(mids) <= tracker.acked, message="no PUBACK for the tracker")
    return payloads


def test_another_login_can_neither_resume_read_nor_empty_a_session(
    rabbit: ProvisionedCluster,
) -> None:
    port = rabbit.layout.nodes[0].mqtt_port
    owner_id = "reader:tail-owned"
    with connected(
        port, "reader", rabbit.passwords["reader"], client_id=owner_id, clean=False
    ) as o:
        assert o.subscribe("track/#") == 1
    queued = queue_events(rabbit, port, "track/2", 10)

    for clean in (False, True):  # resume it, or wipe it with a clean start
        attacker = Client(port, "1", rabbit.passwords["1"], client_id=owner_id, clean=clean)
        try:
            assert attacker.connect() != 0, f"clean={clean}: login 1 took the reader's session"
            assert attacker.received() == []
        finally:
            attacker.close()

    with connected(
        port, "reader", rabbit.passwords["reader"], client_id=owner_id, clean=False
    ) as o:
        assert o.session_present
        wait_until(lambda: len(o.received()) == len(queued), message=f"got {o.received()}")
        assert sorted(payload for _, payload in o.received()) == sorted(queued)


def test_another_logins_id_is_refused_at_login_and_the_owner_is_never_touched(
    rabbit: ProvisionedCluster,
) -> None:
    """The session owner plugin refuses the login itself (CONNACK 5, not authorised), before
    RabbitMQ registers the client id: the owner's connection stays up through every attempt,
    on every node, and it receives live what is published meanwhile."""
    ports = [node.mqtt_port for node in rabbit.layout.nodes]
    # Its own ids, persistent sessions: allowed.
    for own in ("1", "1:phone"):
        with connected(ports[1], "1", rabbit.passwords["1"], client_id=own, clean=False) as mine:
            assert mine.subscribe("track/1") == 1
    owner_id = "reader:tail-online"
    reader = rabbit.passwords["reader"]
    with connected(ports[1], "reader", reader, client_id=owner_id, clean=False) as owner:
        assert owner.subscribe("track/#") == 1
        refusals = []
        for port in ports:  # the client id registry is cluster-wide: try it on every node
            for clean in (False, True):
                attacker = Client(port, "1", rabbit.passwords["1"], client_id=owner_id, clean=clean)
                try:
                    refusals.append(attacker.connect())
                finally:
                    attacker.close()
        assert [str(code) for code in refusals] == ["Not authorized"] * 6
        published = queue_events(rabbit, ports[0], "track/2", 5)
        wait_until(lambda: len(owner.received()) == len(published), message=f"{owner.received()}")
        assert not owner.lost.is_set(), "the owner's connection was closed by an attempt"
    assert sorted(payload for _, payload in owner.received()) == sorted(published)


def test_no_login_may_connect_without_a_client_id_of_its_own(rabbit: ProvisionedCluster) -> None:
    """Another login's ids, and a prefix of the login itself without the ``:`` (another
    login's id), are refused; so is an empty client id, for which the broker would make one
    up that no login owns."""
    port = rabbit.layout.nodes[0].mqtt_port
    system_ids = (  # every id the system's own connections use, and a reader's tails
        "tracker:api-vm-0",
        "tracker:ingest",
        "tracker:archive",
        "reader:mqtt-tail-root-vm-a318c242",
        "reader:mine",
    )
    for client_id in ("1x", "10", "reader", *system_ids):
        for clean in (True, False):
            attacker = Client(port, "1", rabbit.passwords["1"], client_id=client_id, clean=clean)
            try:
                assert str(attacker.connect()) == "Not authorized", (client_id, clean)
            finally:
                attacker.close()
    answers: list[str] = []
    anonymous = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)
    anonymous.username_pw_set("1", rabbit.passwords["1"])
    anonymous.on_connect = lambda _c, _u, _f, code, _p: answers.append(str(code))
    anonymous.connect("127.0.0.1", port)
    anonymous.loop_start()
    try:
        wait_until(lambda: answers, message="no CONNACK")
    finally:
        anonymous.disconnect()
        anonymous.loop_stop()
    assert answers == ["Not authorized"]


def test_a_dotted_account_works_end_to_end_on_the_cluster(
    rabbit: ProvisionedCluster, tmp_path: Path
) -> None:
    device_password = secrets.token_urlsafe(12)
    apply_logins(rabbit.layout, rabbit.layout.nodes[0], {DOTTED: device_password})
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    migrated(url).dispose()
    port = rabbit.layout.nodes[0].mqtt_port
    mqtt_url = f"mqtt://tracker:{rabbit.passwords['tracker']}@127.0.0.1:{port}"
    env = {
        "TRACKER_INGEST_MODE": "leader",
        "TRACKER_STATE_DIR": str(tmp_path / "state"),
        # Sessions of its own: the other tests of the package own tracker:ingest's queue.
        "TRACKER_INGEST_CLIENT_ID": "tracker:ingest-dotted",
        "TRACKER_ARCHIVE_CLIENT_ID": "tracker:archive-dotted",
    }
    reader = {"MQTT_TAIL_USERNAME": "reader", "MQTT_TAIL_PASSWORD": rabbit.passwords["reader"]}
    owner = {"MQTT_TAIL_USERNAME": DOTTED, "MQTT_TAIL_PASSWORD": device_password}
    with (
        TrackerProcess(tmp_path, mqtt_url, url, **env) as tracker,
        Tail(tmp_path, "--json", "--clean", port=port, env=reader) as everything,
        Tail(tmp_path, "--json", "--clean", "--account", DOTTED, port=port, env=owner) as own,
        connected(port, DOTTED, device_password, client_id=f"{DOTTED}:sensor") as device,
    ):
        everything.wait_subscribed()
        own.wait_subscribed()
        wait_until(lambda: httpx.get(tracker.base_url + "/readyz").json()["ingest"] == "leader")
        answer = httpx.get(f"{tracker.base_url}/{DOTTED}", params={"data": "over http"})
        assert answer.status_code == 200, answer.text
        device.publish(f"ingest/{DOTTED}", orjson.dumps({"data": "from the device"}))
        everything.wait_for_events(2)
        own.wait_for_events(2)

        def archived() -> list[str]:
            page = httpx.get(
                f"{tracker.base_url}/events", params={"account": DOTTED, "since": "1h"}
            ).json()
            return sorted(event["data"] for event in page["events"])

        wait_until(lambda: archived() == ["from the device", "over http"], message=tracker.log())

    for tail in (everything, own):
        records = tail.records()
        assert {r["accountId"] for r in records} == {DOTTED}
        assert sorted(r["data"] for r in records) == ["from the device", "over http"]
    assert "malformed" not in tracker.log()


def test_a_plugin_that_cannot_be_built_stops_the_start_with_the_reason(tmp_path: Path) -> None:
    """A source folder without the plugin is named before any node starts."""
    cluster = Cluster(Layout.free(tmp_path / "cluster"), session_owner=tmp_path / "missing")
    with pytest.raises(ClusterError, match="cannot build the session owner plugin"):
        cluster.prepare()
    assert cluster.processes == {}


def test_a_built_plugin_is_enabled_and_chained_after_the_internal_backend(
    rabbit: ProvisionedCluster,
) -> None:
    node = rabbit.layout.nodes[0]
    assert "rabbitmq_session_owner" in (node.directory / "enabled_plugins").read_text()
    chain = "[rabbit_auth_backend_internal, rabbit_auth_backend_session_owner]"
    assert chain in (node.directory / "advanced.config").read_text()
    assert "rabbitmq_session_owner" in rabbit.cluster.ctl(node, "eval", "rabbit_plugins:active().")
