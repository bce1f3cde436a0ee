"""Shared checks for fault tests that depend on the broker's on-disk state."""

from __future__ import annotations

import os
import uuid

import paho.mqtt.client as mqtt

from devkit.broker import Mosquitto
from devkit.mqtt_client import paho_client
from devkit.waiting import wait_until

DB_NAME = "mosquitto.db"


def db_save_stamp(broker: Mosquitto) -> tuple[int, int] | None:
    """Identifies one save of the broker's database, or None before the first one.

    Mosquitto writes ``mosquitto.db.new`` and renames it over ``mosquitto.db``, so every
    save gives the file a new inode and a new mtime.
    """
    try:
        stat = os.stat(broker.data_dir / DB_NAME)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def wait_for_saves(broker: Mosquitto, count: int = 1, timeout: float = 6.0) -> tuple[int, int]:
    """Wait until the broker has completed ``count`` more saves than it had at the call.

    Two saves guarantee that one *started* after the call (the first may have been in
    progress already); with ``autosave_interval 1`` Mosquitto 2.0.11 saves every 2 s.
    """
    stamp = db_save_stamp(broker)
    for n in range(count):

        def saved(previous: tuple[int, int] | None = stamp) -> tuple[int, int] | None:
            current = db_save_stamp(broker)
            return current if current is not None and current != previous else None

        stamp = wait_until(
            saved,
            timeout=timeout,
            message=f"{broker.data_dir / DB_NAME} was not saved ({n} of {count} saves seen "
            f"within {timeout} s); the broker cannot write its data dir? log:\n{broker.log()}",
        )
    assert stamp is not None
    return stamp


def assert_broker_saves(
    broker: Mosquitto,
    timeout: float = 6.0,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Fail unless the broker writes its database to its data dir within ``timeout`` s.

    A broker started as root drops to the ``mosquitto`` user; if that user cannot write
    the data dir, Mosquitto keeps running and reports each failed save only as a log
    line ("Error: Permission denied."), which may itself be unwritable. So look at the
    file: queue one QoS-1 message for a throwaway offline session (a change to save even
    under ``autosave_on_changes``), wait for a save, then discard the session again.
    """
    probe_id = f"durability-probe-{uuid.uuid4().hex[:8]}"
    topic = f"durability-probe/{probe_id}"

    def connected(client_id: str, clean: bool) -> mqtt.Client:
        client = paho_client(client_id, clean=clean, username=username, password=password)
        client.connect(broker.host, broker.port, keepalive=10)
        client.loop_start()
        wait_until(client.is_connected, timeout=5, message="durability probe could not connect")
        return client

    def close(client: mqtt.Client) -> None:
        client.disconnect()
        client.loop_stop()

    subscribed: list[int] = []
    session = connected(probe_id, clean=False)
    try:
        session.on_subscribe = lambda *args: subscribed.append(1)
        session.subscribe(topic, qos=1)
        wait_until(lambda: subscribed, timeout=5, message="durability probe could not subscribe")
    finally:
        close(session)
    publisher = connected(f"{probe_id}-pub", clean=True)
    try:
        sent = publisher.publish(topic, b"probe", qos=1)
        sent.wait_for_publish(timeout=5)
        assert sent.is_published(), "durability probe: no PUBACK"
    finally:
        close(publisher)
    try:
        wait_for_saves(broker, count=1, timeout=timeout)
    finally:
        close(connected(probe_id, clean=True))  # a clean connect discards the probe session
