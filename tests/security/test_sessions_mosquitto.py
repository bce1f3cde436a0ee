"""A session belongs to its login, on Mosquitto: the hostile tenant's view.

Account 1's own device login tries to take over every session the system uses: each
tracker connection (API worker, archive, ingest leader), a reader's mqtt-tail with its
default id and with ``--client-id``. It knows every id (they are in the broker's log and on
``tracker/status/#``). Each attempt must be refused at CONNECT, and afterwards every owner
still has every acknowledged event: the tails show each once, the archive holds each.
Everything runs for real: the project's broker configuration, ACL and plugin, the tracker
and ``mqtt-tail`` as processes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import text

from devkit.broker import REPO, Mosquitto
from devkit.tail import Tail
from devkit.waiting import wait_until
from tests.helpers.accounts import migrated, seeded_sqlite
from tests.helpers.mqtt_peer import Peer
from tests.helpers.tail import assert_exactly_once
from tests.helpers.tracker import TrackerProcess
from tracker_api.passwords import PasswordFile
from tracker_api.storage.db import make_engine
from tracker_contract.ids import client_id_allowed

PASSWORDS = {"tracker": "t-secret", "reader": "r-secret", "1": "one-secret", "2": "two-secret"}
NOT_AUTHORISED = 135  # CONNACK 5 of MQTT 3.1.1, as paho reports it (reason code 0x87)


def connack(port: int, username: str, client_id: str, *, clean: bool) -> int:
    """The CONNACK code the broker answers ``username`` connecting as ``client_id``
    (an empty one included: then the broker assigns one)."""
    codes: list[int] = []
    # Not paho_client: given no id, it would pick one of the login's own.
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
        protocol=mqtt.MQTTv311,
    )  # fmt: skip
    client.username_pw_set(username, PASSWORDS[username])
    client.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc.value)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(lambda: codes, timeout=5, message=f"no CONNACK for {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    workdir = tmp_path_factory.mktemp("sessions")
    passwords = PasswordFile(workdir / "passwd")
    for user, password in PASSWORDS.items():
        passwords.set(user, password)
    passwords.save()
    broker = Mosquitto(
        workdir / "broker", password_file=passwords.path, acl_file=REPO / "mqtt" / "acl"
    )
    broker.start()
    yield broker
    broker.kill()


@pytest.mark.parametrize(
    ("login", "client_id", "allowed"),
    [
        ("1", "1", True),
        ("1", "1:phone", True),
        ("reader", "reader:mqtt-tail-me", True),
        ("1", "1-x", False),  # account 1-x's login, not account 1's
        ("1", "10", False),
        ("1", "reader:mqtt-tail-me", False),
        ("1", "tracker:archive", False),
        ("1", "x1", False),
        ("reader", "tracker:api-host-0", False),
    ],
)
def test_the_broker_enforces_the_same_rule_the_code_states(
    secured: Mosquitto, login: str, client_id: str, allowed: bool
) -> None:
    assert client_id_allowed(login, client_id) is allowed
    for clean in (False, True):
        code = connack(secured.port, login, client_id, clean=clean)
        assert code == (0 if allowed else NOT_AUTHORISED), (client_id, clean)


def test_a_login_without_a_client_id_of_its_own_is_refused(secured: Mosquitto) -> None:
    # An empty id gets one assigned by the broker (auto-…), which no login owns.
    assert connack(secured.port, "reader", "", clean=True) == NOT_AUTHORISED


def test_no_login_takes_over_any_session_of_the_system_and_no_event_is_lost(
    secured: Mosquitto, tmp_path: Path
) -> None:
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    migrated(url).dispose()
    mqtt_url = f"mqtt://tracker:{PASSWORDS['tracker']}@127.0.0.1:{secured.port}"
    reader = {"MQTT_TAIL_USERNAME": "reader", "MQTT_TAIL_PASSWORD": PASSWORDS["reader"]}
    with (
        Peer(secured.port, "tracker/status/+", username="reader", password="r-secret") as status,
        TrackerProcess(tmp_path, mqtt_url, url, TRACKER_STATE_DIR=str(tmp_path / "s")) as tracker,
        Tail(tmp_path, "--json", "--account", "2", port=secured.port, env=reader) as default,
        Tail(
            tmp_path,
            "--json",
            "--account",
            "2",
            "--client-id",
            "reader:mine",
            port=secured.port,
            env=reader,
        ) as named,  # fmt: skip
    ):
        default.wait_subscribed()
        named.wait_subscribed()
        statuses = status.wait_for_topics(2)
        tracker_ids = {topic.rsplit("/", 1)[1] for topic in statuses}
        (default_id,) = re.findall(r"client id (\S+)", default.stderr())
        victims = sorted(tracker_ids | {"tracker:ingest", default_id, "reader:mine"})
        assert default_id.startswith("reader:") and "tracker:archive" in tracker_ids

        acknowledged: list[str] = []

        def send(n: int) -> None:
            body = orjson.dumps([{"data": f"event-{len(acknowledged) + i}"} for i in range(n)])
            answer = httpx.post(f"{tracker.base_url}/2", content=body, timeout=10)
            assert answer.status_code == 200, answer.text
            acknowledged.extend(event["eventId"] for event in answer.json()["events"])

        send(5)
        for victim in victims:
            for clean in (False, True):
                assert connack(secured.port, "1", victim, clean=clean) == NOT_AUTHORISED
                send(5)

        default.wait_for_events(len(acknowledged))
        named.wait_for_events(len(acknowledged))
        archive = make_engine(url)

        def archived() -> set[str]:
            with archive.connect() as connection:
                query = text("select event_id from events where account_id = '2'")
                return {row[0] for row in connection.execute(query)}

        wait_until(lambda: archived() == set(acknowledged), timeout=10)
        archive.dispose()
        # Nobody was kicked off: each owner kept its one connection.
        assert "connection lost" not in default.stderr() + named.stderr()
        assert tracker.metric("tracker_requests_total", outcome="broker_unavailable") == 0

    assert len(acknowledged) == 5 + 10 * len(victims)
    assert_exactly_once(default.event_ids(), set(acknowledged))
    assert_exactly_once(named.event_ids(), set(acknowledged))
    log = secured.log()
    assert log.count("session_owner: refused login 1") >= 2 * len(victims)
