"""MQTT-native ingestion against a real broker: devices publish to ingest/<accountId>."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from devkit import metrics
from devkit.broker import REPO, Mosquitto
from devkit.mqtt_client import paho_client
from devkit.tail import Tail
from devkit.waiting import wait_until
from tests.helpers.api import api_client, database_to_repair, seeded_database
from tests.helpers.mqtt_peer import Peer
from tests.helpers.tracker import TrackerProcess
from tracker_api.config import Settings
from tracker_contract import limits

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class Device:
    """A device publishing at QoS 1 and waiting for the broker's acknowledgement."""

    def __init__(self, port: int) -> None:
        self.client = paho_client()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, account_id: str, payload: bytes | str) -> None:
        self.client.publish(f"ingest/{account_id}", payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(broker: Mosquitto) -> Iterator[Device]:
    device = Device(broker.port)
    yield device
    device.close()


@pytest.fixture
def tracker(broker: Mosquitto, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(tmp_path, broker.url, max_data_bytes=64) as client:
        yield client


def test_raw_device_message_is_republished_as_an_envelope(
    tracker: TestClient, broker: Mosquitto, device: Device
) -> None:
    with Peer(broker.port, "track/#") as peer:
        device.send("1", "temperature=21.5 °C")
        (message,) = peer.wait_for(1)

    assert message.topic == "track/1"
    assert set(message.event) == {"eventId", "accountId", "timestamp", "data"}
    assert message.event["accountId"] == "1"
    assert message.event["data"] == "temperature=21.5 °C"


def test_json_device_message_keeps_its_event_id(
    tracker: TestClient, broker: Mosquitto, device: Device
) -> None:
    with Peer(broker.port, "track/#") as peer:
        device.send("2", orjson.dumps({"data": "door open", "eventId": "dev-2-000017"}))
        (message,) = peer.wait_for(1)

    assert (message.event["eventId"], message.event["data"]) == ("dev-2-000017", "door open")


def test_invalid_device_messages_are_counted_and_never_propagated(
    tracker: TestClient, broker: Mosquitto, device: Device
) -> None:
    with Peer(broker.port, "track/#") as peer:
        device.send("999", "unknown account")
        device.send("10", "inactive account")
        device.send(".bad", "malformed account id")
        device.send("1", b"\xff\xfe not utf-8")
        device.send("1", "x" * 65)  # over max_data_bytes=64
        device.send("1", b"x" * 1000)  # over the largest legal message: refused before decoding
        device.send("1", orjson.dumps({"data": 5}))
        device.send("1", "marker")
        peer.wait_for(1)
        wait_until(
            lambda: _mqtt_refusals(tracker.get("/metrics").text) == 7,
            timeout=5,
        )
        events = peer.events()

    assert [e["data"] for e in events] == ["marker"]


def _mqtt_refusals(text: str) -> float:
    return sum(
        value
        for labels, value in metrics.samples(text, "tracker_requests_total", source="mqtt")
        if labels["outcome"] != "accepted"
    )


@pytest.mark.slow
def test_tracker_killed_before_republishing_loses_nothing_once_restarted(
    broker: Mosquitto, tmp_path: Path, device: Device
) -> None:
    # Lookups fail: the tracker holds the message.
    database_url, repair = database_to_repair(tmp_path)
    env = {"TRACKER_CLIENT_ID": "tracker:ingest-test", "TRACKER_ACCOUNT_CACHE_TTL": "0"}

    with Peer(broker.port, "track/#") as peer:
        first = TrackerProcess(tmp_path, broker.url, database_url, wait_for="/healthz", **env)
        with first:
            device.send("1", "held while the database is down")
            # The tracker received it and is holding it (unacknowledged) while it retries.
            wait_until(
                lambda: (
                    first.metric(
                        "tracker_requests_total", outcome="database_unavailable", source="mqtt"
                    )
                    >= 1
                ),
                timeout=10,
            )
            first.kill()
        assert peer.events() == []

        repair()
        with TrackerProcess(tmp_path, broker.url, database_url, **env):
            (message,) = peer.wait_for(1, timeout=10)

    assert message.event["data"] == "held while the database is down"


def test_device_event_reaches_mqtt_tail_as_an_envelope(
    tracker: TestClient, broker: Mosquitto, device: Device, tmp_path: Path
) -> None:
    with Tail(tmp_path / "tail", "--json", "--account", "2", port=broker.port) as tail:
        tail.wait_subscribed()
        device.send("2", orjson.dumps({"data": "pressure=1013", "eventId": "dev-2-42"}))

        assert tail.wait_for_events(1) == ["dev-2-42"]
        (record,) = tail.records()

    assert (record["accountId"], record["data"]) == ("2", "pressure=1013")
    assert TIMESTAMP.fullmatch(record["timestamp"])


def _attempts_without_database(api: TestClient) -> float:
    return metrics.value(
        api.get("/metrics").text,
        "tracker_requests_total",
        outcome="database_unavailable",
        source="mqtt",
    )


@pytest.mark.slow
def test_a_device_message_held_while_the_database_is_down_is_published_when_it_returns(
    broker: Mosquitto, tmp_path: Path, device: Device
) -> None:
    database_url, repair = database_to_repair(tmp_path)
    with (
        api_client(
            tmp_path,
            broker.url,
            wait_ready=False,
            database_url=database_url,
            account_cache_ttl=0,
        ) as api,
        Peer(broker.port, "track/#") as peer,
    ):
        device.send("1", "sent while the database was down")
        # More attempts than a bounded retry would make: the broker connection stays up,
        # so nothing would redeliver the message; the tracker must keep trying.
        wait_until(lambda: _attempts_without_database(api) >= 7, timeout=15)
        repair()
        (message,) = peer.wait_for(1, timeout=10)

    assert message.event["data"] == "sent while the database was down"


def _dropped(api: TestClient, reason: str) -> float:
    return metrics.value(api.get("/metrics").text, "tracker_ingest_dropped_total", reason=reason)


def test_a_retained_device_message_becomes_one_event_not_one_per_resubscription(
    broker: Mosquitto, tmp_path: Path, device: Device
) -> None:
    database_url = seeded_database(tmp_path)

    def tracker(client_id: str = "tracker-retained-test") -> AbstractContextManager[TestClient]:
        return api_client(tmp_path, broker.url, client_id=client_id, database_url=database_url)

    with Peer(broker.port, "track/#") as peer:
        with tracker() as api:
            before = _dropped(api, "retained")
            device.client.publish("ingest/1", "retained reading", qos=1, retain=True)
            peer.wait_for(1)
        # A restart resumes the session and subscribes again: the broker replays the
        # retained copy, which must be acknowledged and dropped.
        with tracker() as api:
            wait_until(lambda: _dropped(api, "retained") >= before + 1, timeout=5)
            device.send("1", "live after restart")
            peer.wait_for(2)
        # A member new to the group gets the retained copy too.
        with tracker("tracker-retained-new") as api:
            wait_until(lambda: _dropped(api, "retained") >= before + 2, timeout=5)

    assert [e["data"] for e in peer.events()] == ["retained reading", "live after restart"]


def test_an_oversize_device_message_is_refused_by_the_broker(
    tracker: TestClient, broker: Mosquitto, device: Device
) -> None:
    disconnected: list[object] = []
    device.client.on_disconnect = lambda *args: disconnected.append(args)

    with Peer(broker.port, "track/#") as peer:
        device.client.publish("ingest/1", b"x" * 1_000_000, qos=1)
        # Mosquitto drops a client whose packet is over max_packet_size.
        wait_until(lambda: disconnected, timeout=5)
        sender = Device(broker.port)
        try:
            sender.send("1", "small")
            (message,) = peer.wait_for(1)
        finally:
            sender.close()

    assert message.event["data"] == "small"
    assert "disconnected due to oversize packet" in broker.log()


def test_every_broker_configuration_takes_its_size_limits_from_the_largest_message() -> None:
    shared = REPO / "mqtt" / "conf.d" / "limits.conf"
    settings = dict(
        line.split() for line in shared.read_text().splitlines() if line and line[0] != "#"
    )
    max_data = Settings.model_fields["max_data_bytes"].default

    assert int(settings["message_size_limit"]) == limits.largest_message(max_data)
    assert int(settings["max_packet_size"]) == limits.largest_packet(max_data)
    # Every broker the project starts loads that directory: production (and compose,
    # which mounts it there), make run, the tests and the benchmark (devkit's broker).
    assert "include_dir /mosquitto/config/conf.d" in (REPO / "mqtt/mosquitto.conf").read_text()
    assert "./mqtt/conf.d:/mosquitto/config/conf.d" in (REPO / "docker-compose.yml").read_text()
    assert "include_dir {REPO / 'mqtt' / 'conf.d'}" in (REPO / "scripts/devstack.py").read_text()
    assert "include_dir {SHARED_CONF_DIR}" in (REPO / "devkit/broker.py").read_text()
    assert "from devkit.broker import" in (REPO / "bench/stack.py").read_text()


def test_qos0_device_messages_are_dropped_and_counted_while_the_database_is_down(
    broker: Mosquitto, tmp_path: Path, device: Device
) -> None:
    database_url, _ = database_to_repair(tmp_path)
    with api_client(
        tmp_path, broker.url, wait_ready=False, database_url=database_url, account_cache_ttl=0
    ) as api:
        wait_until(lambda: api.get("/readyz").json()["broker"], timeout=5)
        before = _dropped(api, "unavailable")
        for i in range(50):
            device.client.publish("ingest/1", f"qos0-{i}", qos=0)
        # Every one finished (dropped), none left retrying.
        wait_until(lambda: _dropped(api, "unavailable") - before == 50, timeout=10)


@pytest.mark.slow
def test_retiring_a_removed_member_republishes_every_device_event_it_held(
    broker: Mosquitto, tmp_path: Path, device: Device
) -> None:
    database_url = seeded_database(tmp_path)
    members = [
        TrackerProcess(tmp_path, broker.url, database_url, TRACKER_CLIENT_ID=f"tracker:api-{name}")
        for name in "ab"
    ]
    with Peer(broker.port, "track/#") as peer, members[0]:
        with members[1]:
            pass  # joined the group, then removed (scale-down): its session stays
        for i in range(6):
            device.send("1", f"reading-{i}")
        # The removed member's share is held in its session, not delivered.
        wait_until(lambda: len(peer.events()) >= 1, timeout=5)
        assert len(peer.events()) < 6

        retired = subprocess.run(
            [
                sys.executable,
                "-m",
                "tracker_api",
                "retire-member",
                "tracker:api-b",
                "--quiet",
                "0.5",
            ],
            env=members[1].env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert retired.returncode == 0, retired.stderr
        wait_until(lambda: len(peer.events()) == 6, timeout=5)
        # The member is gone from the group: everything new goes to the live one.
        for i in range(6, 10):
            device.send("1", f"reading-{i}")
        wait_until(lambda: len(peer.events()) == 10, timeout=5)

    assert sorted(e["data"] for e in peer.events()) == sorted(f"reading-{i}" for i in range(10))
    assert "retired tracker:api-b" in retired.stdout


@pytest.mark.parametrize("qos", [0, 1])
def test_device_messages_share_the_accounts_rate_limit_and_the_excess_is_dropped_and_counted(
    broker: Mosquitto, tmp_path: Path, device: Device, qos: int
) -> None:
    def mqtt_requests(outcome: str) -> float:
        text = api.get("/metrics").text
        return metrics.value(text, "tracker_requests_total", source="mqtt", outcome=outcome)

    with (
        Peer(broker.port, "track/#") as peer,
        api_client(tmp_path, broker.url, rate_limit=5) as api,
    ):
        # Counters live as long as the test process: count from here.
        before = {o: mqtt_requests(o) for o in ("accepted", "rate_limited")}
        dropped_before = _dropped(api, "rate_limited")
        sent = 200
        for i in range(sent):
            device.client.publish("ingest/1", f"flood-{i}", qos=qos)

        def accepted() -> float:
            return mqtt_requests("accepted") - before["accepted"]

        def limited() -> float:
            return mqtt_requests("rate_limited") - before["rate_limited"]

        wait_until(lambda: accepted() + limited() == sent, timeout=15)
        # One second of events passes (the burst), the rest is refused for good.
        assert 5 <= accepted() <= 7
        assert _dropped(api, "rate_limited") - dropped_before == limited()
        # HTTP spends from the same bucket: the account is out of tokens for now.
        assert api.get("/1", params={"data": "http"}).status_code == 429
        wait_until(lambda: len(peer.events()) == accepted(), timeout=5)
    assert all(event["data"].startswith("flood-") for event in peer.events())


def test_retire_member_refuses_the_archive_and_an_online_member(
    broker: Mosquitto, tmp_path: Path
) -> None:
    database_url = seeded_database(tmp_path)

    def retire(env: dict[str, str], client_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracker_api", "retire-member", client_id],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    member = TrackerProcess(tmp_path, broker.url, database_url, TRACKER_CLIENT_ID="tracker:api-m")
    with Peer(broker.port, "tracker/status/#") as status, member:
        status.wait_for_topics(2)  # the member and the archive are online
        for not_a_member in ("tracker:archive", "tracker:ingest", "reader:tail", "tracker:api-"):
            refused = retire(member.env, not_a_member)
            assert refused.returncode == 1
            assert f"{not_a_member} is not an ingest group member" in refused.stderr
        online = retire(member.env, "tracker:api-m")
        assert online.returncode == 1
        assert "tracker:api-m is online: stop its tracker first" in online.stderr
        assert member.get_ok("/readyz")  # its session was never touched
    assert "Traceback" not in refused.stderr + online.stderr
