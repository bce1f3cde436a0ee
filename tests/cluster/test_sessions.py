"""A session belongs to its login on the RabbitMQ cluster too, and a dotted account works
end to end there (HTTP, device ingest, archive, history, mqtt-tail).

RabbitMQ 3.10 keeps a session in the queue ``mqtt-subscription-<clientId>qos1``; the
roles give each login configure, read and write on its own session queues only
(tracker_api/ops/cluster_roles.py). A takeover attempt is answered with a refused CONNACK and
reads nothing; the owner's queued events stay. What RabbitMQ 3.10 still does, before it
looks at any permission, is close the owner's connection (its client id registry is
global): the owner reconnects and loses nothing, as the last test shows
(docs/security.md).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx2 as httpx
import orjson

from tests.helpers.accounts import migrated, seeded_sqlite
from tests.helpers.tail import Tail
from tests.helpers.tracker import TrackerProcess
from tests.helpers.waiting import wait_until
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


def test_a_login_may_use_its_own_ids_only_and_the_owner_loses_nothing_to_a_kick(
    rabbit: ProvisionedCluster,
) -> None:
    port = rabbit.layout.nodes[1].mqtt_port
    # Its own ids, persistent sessions: allowed.
    for own in ("1", "1:phone"):
        with connected(port, "1", rabbit.passwords["1"], client_id=own, clean=False) as mine:
            assert mine.subscribe("track/1") == 1
    # Another login's session, while the owner is connected: refused; RabbitMQ drops the
    # owner's connection on the way, and its session keeps every event meanwhile.
    owner_id = "reader:tail-online"
    reader = rabbit.passwords["reader"]
    with connected(port, "reader", reader, client_id=owner_id, clean=False) as owner:
        assert owner.subscribe("track/#") == 1
        attacker = Client(port, "1", rabbit.passwords["1"], client_id=owner_id, clean=False)
        try:
            assert attacker.connect() != 0
        finally:
            attacker.close()
        queued = queue_events(rabbit, port, "track/2", 5)
        before = owner.received()
    with connected(port, "reader", reader, client_id=owner_id, clean=False) as again:
        wait_until(lambda: len(before) + len(again.received()) >= len(queued))
        shown = {payload for _, payload in before + again.received()}
    assert shown == set(queued)


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
