"""The broker's security model with real clients: logins, roles from mqtt/acl."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from data.seed import upsert
from devkit.broker import REPO, Mosquitto
from devkit.metrics import value
from devkit.mqtt_client import paho_client
from devkit.waiting import wait_until
from tests.helpers.accounts import seeded_sqlite
from tests.helpers.api import api_client
from tests.helpers.mqtt_peer import Peer
from tracker_api.errors import InvalidRequest
from tracker_api.passwords import PasswordFile
from tracker_api.service.broker import STATUS_TOPIC
from tracker_api.storage.models import Account
from tracker_contract.roles import ROLES

PASSWORDS = {"tracker": "t-secret", "reader": "r-secret", "1": "one-secret", "2": "two-secret"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Mosquitto]:
    passwords = PasswordFile(tmp_path / "passwd")
    for user, password in PASSWORDS.items():
        passwords.set(user, password)
    passwords.save()
    broker = Mosquitto(
        tmp_path / "broker", password_file=passwords.path, acl_file=REPO / "mqtt" / "acl"
    )
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def tracker(secured: Mosquitto, tmp_path: Path) -> Iterator[TestClient]:
    mqtt_url = f"mqtt://tracker:{PASSWORDS['tracker']}@127.0.0.1:{secured.port}"
    with api_client(tmp_path, mqtt_url) as client:
        yield client


def login(user: str) -> dict[str, str]:
    return {"username": user, "password": PASSWORDS[user]}


class Client:
    def __init__(self, port: int, username: str | None = None, password: str | None = None):
        self.results: list[str] = []
        self.client = paho_client(username=username, password=password)
        self.client.on_connect = lambda c, u, f, rc, p: self.results.append(str(rc))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(lambda: self.results, timeout=5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize(
    ("username", "password"), [(None, None), ("reader", "wrong"), ("nobody", "x")]
)
def test_anonymous_and_wrong_logins_are_refused(
    secured: Mosquitto, username: str | None, password: str | None
) -> None:
    client = Client(secured.port, username, password)
    client.close()

    assert client.results == ["Not authorized"]


def test_readers_cannot_publish_events(secured: Mosquitto, tracker: TestClient) -> None:
    with Peer(secured.port, "track/#", **login("reader")) as watcher:
        forger = Client(secured.port, **login("reader"))
        forger.publish("track/1", b'{"eventId":"forged"}')
        forger.close()
        marker = tracker.get("/1", params={"data": "genuine"}).json()["event"]
        wait_until(lambda: watcher.events(), timeout=5)
        events = watcher.events()

    assert events == [marker]


def test_an_account_reader_sees_only_its_own_account(
    secured: Mosquitto, tracker: TestClient
) -> None:
    with (
        Peer(secured.port, "track/#", **login("1")) as own,
        Peer(secured.port, "track/#", **login("reader")) as everything,
    ):
        for account in ("2", "1", "2"):
            tracker.get(f"/{account}", params={"data": f"for {account}"})
        everything.wait_for(3)
        wait_until(lambda: own.events(), timeout=5)
        mine = own.events()

    assert [event["accountId"] for event in mine] == ["1"]


def test_a_device_can_ingest_only_for_its_own_account(
    secured: Mosquitto, tracker: TestClient
) -> None:
    with Peer(secured.port, "track/#", **login("reader")) as watcher:
        device = Client(secured.port, **login("1"))
        device.publish("ingest/2", b"impersonating account 2")
        device.publish("ingest/1", b"from device 1")
        device.close()
        wait_until(lambda: watcher.events(), timeout=5)
        events = watcher.events()

    assert [(e["accountId"], e["data"]) for e in events] == [("1", "from device 1")]


def test_the_tracker_announces_its_status_to_readers(
    secured: Mosquitto, tracker: TestClient
) -> None:
    with Peer(secured.port, "tracker/status/+", **login("reader")) as watcher:
        statuses = watcher.wait_for_topics(2)

    assert STATUS_TOPIC.format(client_id="tracker:archive") in statuses
    assert [status.payload for status in statuses.values()] == [b"online", b"online"]
    assert all(orjson.dumps(topic).startswith(b'"tracker/status/') for topic in statuses)


@pytest.fixture
def roles_as_accounts(tmp_path: Path) -> str:
    """A database from before role names were reserved: accounts named like the roles."""
    url, engine = seeded_sqlite(tmp_path / "legacy.db")
    with Session(engine) as session:
        session.add_all(Account(account_id=role, account_name=role) for role in ROLES)
        session.commit()
    engine.dispose()
    return url


def test_role_logins_never_act_as_accounts(
    secured: Mosquitto, roles_as_accounts: str, tmp_path: Path
) -> None:
    mqtt_url = f"mqtt://tracker:{PASSWORDS['tracker']}@127.0.0.1:{secured.port}"
    with (
        api_client(tmp_path, mqtt_url, database_url=roles_as_accounts) as api,
        Peer(secured.port, "track/#", **login("reader")) as watcher,
    ):
        invalid_before = value(
            api.get("/metrics").text, "tracker_requests_total", outcome="invalid"
        )
        # mqtt/acl's pattern lines apply to every login: the reader may publish ingest/reader.
        device = Client(secured.port, **login("reader"))
        device.publish("ingest/reader", b"the reader posing as an account")
        device.close()
        wait_until(
            lambda: (
                value(api.get("/metrics").text, "tracker_requests_total", outcome="invalid")
                > invalid_before
            ),
            timeout=5,
        )
        answers = {role: api.get(f"/{role}", params={"data": "x"}) for role in ROLES}
        marker = api.get("/1", params={"data": "genuine"}).json()["event"]
        wait_until(lambda: watcher.events(), timeout=5)
        events = watcher.events()

    assert events == [marker]
    for role, answer in answers.items():
        assert answer.status_code == 422
        assert answer.json() == {
            "detail": f"Invalid account id: {role!r} is the name of a broker role"
        }


def test_the_seed_refuses_role_names_and_writes_nothing(tmp_path: Path) -> None:
    url, engine = seeded_sqlite(tmp_path / "seed.db")
    with Session(engine) as session, pytest.raises(InvalidRequest, match="broker role"):
        upsert(session, [Account(account_id="77", account_name="ok"),
                         Account(account_id="tracker", account_name="no")])  # fmt: skip
    with Session(engine) as session:
        assert session.get(Account, "77") is None and session.get(Account, "tracker") is None
    engine.dispose()
