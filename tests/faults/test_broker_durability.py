"""The broker is durable (docs/durability.md), measured against a real Mosquitto.

A persistent subscriber session goes offline, a publisher gets a PUBACK for every event,
the broker stops or crashes, and the subscriber comes back with the same client id.
A SIGTERM loses nothing; a SIGKILL loses at most what was acknowledged after the last
autosave, which with ``autosave_interval 1`` happens every 2 s in Mosquitto 2.0.11.
The numbers behind docs/durability.md come from these scenarios; to see them:
``pytest tests/faults/test_broker_durability.py -o log_cli=true --log-cli-level=INFO``.
"""

from __future__ import annotations

import getpass
import itertools
import logging
import os
import pwd
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from devkit.broker import SHARED_CONF_DIR, Mosquitto
from devkit.mqtt_client import paho_client
from devkit.waiting import wait_until
from tests.faults.conftest import assert_broker_saves, db_save_stamp, wait_for_saves

logger = logging.getLogger(__name__)
SUBSCRIBER_ID = "durable-subscriber"
SENTINEL = "sentinel-00000000"
_client_ids = itertools.count()


def envelope(n: int, prefix: str) -> tuple[str, bytes]:
    """A tracker-shaped event (about 130 bytes) on ``track/<accountId>``."""
    account = str(n % 7)
    event_id = f"{prefix}-{n:08d}"
    payload = orjson.dumps(
        {
            "eventId": event_id,
            "accountId": account,
            "timestamp": "2026-11-28T12:00:00.000Z",
            "data": f"lat=52.{n:06d};lon=13.{n:06d}",
        }
    )
    return event_id, payload


class Publisher:
    """QoS-1 publisher that returns, per eventId, the wall-clock time of its PUBACK."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = paho_client(f"durability-publisher-{next(_client_ids)}")
        # paho loses messages beyond 65,535 outstanding (its message-id space): every
        # batch below is smaller and fully acknowledged before the next one starts.
        self.client.max_inflight_messages_set(1000)
        self._acked: dict[int, float] = {}
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self._acked.__setitem__(
            mid, time.time()
        )
        self.broker = broker

    def __enter__(self) -> Publisher:
        self.client.connect(self.broker.host, self.broker.port, keepalive=10)
        self.client.loop_start()
        wait_until(self.client.is_connected, timeout=5, message="publisher could not connect")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, start: int, count: int, prefix: str) -> dict[str, float]:
        assert count < 65_000
        self._acked.clear()
        sent: list[tuple[str, int]] = []
        for n in range(start, start + count):
            event_id, payload = envelope(n, prefix)
            info = self.client.publish(f"track/{n % 7}", payload, qos=1)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
            sent.append((event_id, info.mid))
        wait_until(
            lambda: len(self._acked) >= count,
            timeout=30,
            message=f"only {len(self._acked)} of {count} PUBACKs",
        )
        return {event_id: self._acked[mid] for event_id, mid in sent}


class Subscriber:
    """One connection of the persistent session ``client_id`` (clean_session=False)."""

    def __init__(self, broker: Mosquitto, client_id: str = SUBSCRIBER_ID) -> None:
        self.ids: set[str] = set()
        self.deliveries = 0
        self.session_present: bool | None = None
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = paho_client(client_id, clean=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.broker = broker

    def _on_connect(self, _c: mqtt.Client, _u: object, flags: object, _rc: object, _p: object):
        self.session_present = bool(flags.session_present)  # type: ignore[attr-defined]

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        event_id = orjson.loads(message.payload)["eventId"]
        with self._lock:
            self.ids.add(event_id)
            self.deliveries += 1

    def has(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self.ids

    def forget(self, event_id: str) -> None:
        with self._lock:
            self.ids.discard(event_id)

    def count(self) -> int:
        with self._lock:
            return len(self.ids)

    def wait_for(self, count: int, timeout: float = 20) -> None:
        wait_until(
            lambda: self.count() >= count,
            timeout=timeout,
            message=f"subscriber has {self.count()} of {count} events",
        )


@contextmanager
def subscriber(broker: Mosquitto, *, subscribe: bool = False) -> Iterator[Subscriber]:
    """Connect the persistent session; subscribe only when creating it, so that receiving
    anything afterwards proves the broker kept the subscription itself."""
    sub = Subscriber(broker)
    sub.client.connect(broker.host, broker.port, keepalive=10)
    sub.client.loop_start()
    try:
        wait_until(sub.client.is_connected, timeout=5, message="subscriber could not connect")
        if subscribe:
            sub.client.subscribe("track/#", qos=1)
            wait_until(sub.subscribed.is_set, timeout=5, message="subscriber: no SUBACK")
        yield sub
    finally:
        sub.client.disconnect()
        sub.client.loop_stop()


def create_offline_session(broker: Mosquitto) -> None:
    with subscriber(broker, subscribe=True) as sub:
        assert sub.session_present is False


def publish_backlog(broker: Mosquitto, count: int, prefix: str) -> dict[str, float]:
    acked: dict[str, float] = {}
    with Publisher(broker) as publisher:
        for start in range(0, count, 10_000):
            acked |= publisher.publish(start, min(10_000, count - start), prefix)
    return acked


def drain_with_sentinel(broker: Mosquitto, sub: Subscriber) -> None:
    """Wait until the broker has delivered everything it still holds for ``sub``.

    Mosquitto delivers one session's QoS-1 messages in order, so once an event published
    after the reconnect arrives, every restored event before it has arrived too.
    """
    with Publisher(broker) as publisher:
        publisher.publish(0, 1, "sentinel")
    wait_until(lambda: sub.has(SENTINEL), timeout=30, message="no sentinel")
    sub.forget(SENTINEL)


def test_shared_config_persists_saves_every_second_and_expires_abandoned_sessions() -> None:
    settings = {}
    for line in (SHARED_CONF_DIR / "durability.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            settings[key] = value.strip()
    assert settings["persistence"] == "true"
    assert settings["autosave_interval"] == "1"
    assert settings.get("autosave_on_changes", "false") == "false"
    # The promised outage: one hour at 100 events/s for an offline persistent subscriber.
    assert int(settings["max_queued_messages"]) >= 3600 * 100
    assert int(settings["max_queued_bytes"]) == 256 * 1024 * 1024
    match = re.fullmatch(r"(\d+)([hdwmy])", settings["persistent_client_expiration"])
    assert match, settings["persistent_client_expiration"]
    hours = int(match[1]) * {"h": 1, "d": 24, "w": 168, "m": 720, "y": 8760}[match[2]]
    assert 24 <= hours <= 30 * 24, "abandoned sessions expire, but not before a long weekend"


def test_the_test_broker_saves_its_database(broker: Mosquitto) -> None:
    assert_broker_saves(broker)


def assert_backlog_delivered(broker: Mosquitto, acked: Iterable[str], timeout: float = 20) -> None:
    """The persistent session survived and hands over exactly the acknowledged events."""
    expected = set(acked)
    with subscriber(broker) as sub:
        assert sub.session_present is True
        sub.wait_for(len(expected), timeout=timeout)
        drain_with_sentinel(broker, sub)
        assert sub.ids == expected


def test_sigterm_keeps_every_acknowledged_event_for_an_offline_persistent_session(
    broker: Mosquitto,
) -> None:
    create_offline_session(broker)
    acked = publish_backlog(broker, 5000, "term")
    stopping = time.monotonic()
    broker.stop()  # SIGTERM: Mosquitto writes its database before exiting
    logger.info("SIGTERM with 5000 queued: stopped in %.3f s", time.monotonic() - stopping)
    broker.start()
    assert_backlog_delivered(broker, acked)


@pytest.mark.slow
def test_raised_queue_limit_keeps_a_backlog_larger_than_mosquittos_default_1000(
    broker: Mosquitto,
) -> None:
    create_offline_session(broker)
    acked = publish_backlog(broker, 20_000, "big")
    broker.stop()
    broker.start()
    assert_backlog_delivered(broker, acked, timeout=30)
    assert "dropped" not in broker.log()


def test_default_queue_limit_of_1000_drops_acknowledged_events_silently(
    tmp_path: Path,
) -> None:
    """The control for the test above: it can fail, and this is how."""
    broker = Mosquitto(tmp_path / "broker", extra="max_queued_messages 1000\n")
    broker.start()
    try:
        create_offline_session(broker)
        acked = publish_backlog(broker, 3000, "limited")  # every one acknowledged...
        with subscriber(broker) as sub:
            drain_with_sentinel(broker, sub)
            assert sub.count() == 1000  # ...but two thirds are gone
        assert "Outgoing messages are being dropped" in broker.log()
        assert len(acked) == 3000
    finally:
        broker.kill()


@pytest.mark.slow
def test_sigkill_after_an_autosave_loses_nothing(broker: Mosquitto) -> None:
    create_offline_session(broker)
    acked = publish_backlog(broker, 5000, "saved")
    wait_for_saves(broker, count=2)  # the second save started after the last PUBACK
    broker.kill()
    broker.start()
    assert_backlog_delivered(broker, acked)


@pytest.mark.slow
def test_sigkill_right_after_the_last_puback_loses_at_most_the_autosave_window(
    broker: Mosquitto,
) -> None:
    create_offline_session(broker)
    acked: dict[str, float] = {}
    with Publisher(broker) as publisher:
        started = time.time()
        first_save = db_save_stamp(broker)
        # Publish in acknowledged batches for 3 s, past at least one autosave, then crash
        # the broker the moment the last PUBACK is in.
        while time.time() - started < 3.0 or db_save_stamp(broker) == first_save:
            acked |= publisher.publish(len(acked), 500, "crash")
        broker.kill()
        killed = time.time()
    last_save = db_save_stamp(broker)
    assert last_save is not None
    saved_at = last_save[1] / 1e9
    broker.start()
    with subscriber(broker) as sub:
        drain_with_sentinel(broker, sub)
        received = set(sub.ids)
    lost = {event_id: t for event_id, t in acked.items() if event_id not in received}
    rate = len(acked) / (killed - started)
    numbers = {
        "acknowledged": len(acked),
        "publish_rate_per_s": round(rate),
        "lost": len(lost),
        "seconds_from_last_save_to_kill": round(killed - saved_at, 3),
        "oldest_lost_ack_age_s": round(killed - min(lost.values()), 3) if lost else 0.0,
        "acknowledged_in_last_2s": sum(1 for t in acked.values() if t >= killed - 2.0),
    }
    logger.info("SIGKILL right after the last PUBACK: %s", numbers)
    assert received <= set(acked), "nothing invented"
    # Mosquitto 2.0.11 saves when `now > last_save + autosave_interval` in whole seconds,
    # i.e. every 2 s with autosave_interval 1.
    assert killed - saved_at <= 2.5, numbers
    # Everything acknowledged before the last save started is there (0.25 s allows for
    # the save's own duration); only the tail after it may be lost.
    assert all(t >= saved_at - 0.25 for t in lost.values()), numbers
    assert all(t >= killed - 2.5 for t in lost.values()), numbers


def _drops_to_mosquitto_user() -> str | None:
    if os.geteuid() != 0:
        return "needs root: only a broker started as root drops to the `mosquitto` user"
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        return "no `mosquitto` user on this machine"
    return None


def _as_broker_user(broker: Mosquitto) -> Mosquitto:
    """Remove the fixture's ``user <us>`` line: Mosquitto, started as root, now drops to
    its default ``mosquitto`` user, as the packaged service does."""
    conf = broker.conf_path.read_text()
    broker.conf_path.write_text(conf.replace(f"user {getpass.getuser()}\n", ""))
    return broker


def _process_user(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M)[1])  # type: ignore[index]
    return pwd.getpwuid(uid).pw_name


@pytest.mark.skipif(_drops_to_mosquitto_user() is not None, reason=str(_drops_to_mosquitto_user()))
def test_a_data_dir_the_mosquitto_user_cannot_write_is_caught_by_assert_broker_saves(
    tmp_path: Path,
) -> None:
    os.chmod(tmp_path, 0o700)  # root-only, like pytest's and mkdtemp's directories
    broker = _as_broker_user(Mosquitto(tmp_path / "broker"))
    broker.start()
    try:
        assert broker.process is not None
        assert _process_user(broker.process.pid) == "mosquitto"
        assert broker.running, "the broker runs happily without a writable data dir..."
        with pytest.raises(AssertionError, match="was not saved"):
            assert_broker_saves(broker, timeout=4.5)  # ...but never saves
        assert not (broker.data_dir / "mosquitto.db").exists()
    finally:
        broker.kill()


@pytest.mark.skipif(_drops_to_mosquitto_user() is not None, reason=str(_drops_to_mosquitto_user()))
def test_a_data_dir_owned_by_the_mosquitto_user_is_saved_after_dropping_root() -> None:
    top = Path(tempfile.mkdtemp(prefix="mosquitto-durable-"))
    try:
        os.chmod(top, 0o755)  # every parent must be traversable by `mosquitto`
        broker = _as_broker_user(Mosquitto(top / "broker"))
        user = pwd.getpwnam("mosquitto")
        for path in (broker.workdir, broker.data_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
        broker.start()
        try:
            assert broker.process is not None
            assert _process_user(broker.process.pid) == "mosquitto"
            assert_broker_saves(broker)
        finally:
            broker.kill()
    finally:
        shutil.rmtree(top)
