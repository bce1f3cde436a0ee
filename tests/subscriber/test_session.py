"""The session through its public interface, against a broker that answers as scripted."""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from subscriber.session import Backoff, ConnectOptions, Refused, Session


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def on_message(self, topic: str, payload: bytes | bytearray) -> bool:
        self.messages.append((topic, bytes(payload)))
        return True

    def on_batch_end(self) -> bool:
        return True

    def on_tick(self, now: float) -> None:
        pass


class ScriptedBroker:
    """Speaks just enough MQTT 3.1.1 to answer one way: a CONNACK code per connection
    (the last one repeats), SUBACK codes, then an ending: ``close`` (end of file),
    ``reset`` (after the first ping) or ``silent`` (reads and never answers)."""

    def __init__(
        self, connacks: Sequence[int] = (0,), suback: Sequence[int] = (1,), then: str = "silent"
    ) -> None:
        self.connacks = connacks
        self.suback = bytes(suback)
        self.then = then
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.port = self._server.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def __enter__(self) -> ScriptedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self._answer(conn)
                except OSError:
                    pass

    def _answer(self, conn: socket.socket) -> None:
        code = self.connacks[min(self.connections, len(self.connacks) - 1)]
        self.connections += 1
        _read_packet(conn)  # CONNECT
        conn.sendall(bytes([0x20, 2, 0, code]))
        if code:
            return
        packet_id = _read_packet(conn)[:2]  # SUBSCRIBE
        conn.sendall(bytes([0x90, 2 + len(self.suback)]) + packet_id + self.suback)
        if self.then == "reset":
            _read_packet(conn)  # the first ping: the client has taken the SUBACK in
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.then == "silent":
            while conn.recv(1024):
                pass


def _read_packet(conn: socket.socket) -> bytes:
    """One packet's body (after the fixed header)."""
    conn.recv(1, socket.MSG_WAITALL)
    length, shift = 0, 0
    while True:
        byte = conn.recv(1, socket.MSG_WAITALL)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return conn.recv(length, socket.MSG_WAITALL) if length else b""


def session(port: int) -> Session:
    settings = ConnectOptions(
        nodes=[("127.0.0.1", port)], client_id="t", topics=["track/1", "track/2"], keepalive=1,
        reconnect_min=0.01,
        reconnect_max=0.05,
    )  # fmt: skip
    return Session(settings, Recorder())


def within(seconds: float, done: Callable[[], bool] = lambda: False) -> Callable[[], bool]:
    """A stop condition: ``done()``, or the deadline as a safety net."""
    deadline = time.monotonic() + seconds
    return lambda: done() or time.monotonic() > deadline


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    delays = [backoff.next() for _ in range(8)]
    caps = [0.5, 1, 2, 4, 4, 4, 4, 4]
    assert all(cap / 2 <= delay <= cap for delay, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next() <= 0.5
    with pytest.raises(ValueError):
        Backoff(2, 1)


def test_a_refused_subscription_is_fatal() -> None:
    with ScriptedBroker(suback=(1, 0x80)) as broker:
        tail = session(broker.port)
        with pytest.raises(Refused, match="subscription to track/2 refused") as refused:
            tail.run(within(10))
    assert refused.value.kind == "subscription"


def test_bad_credentials_are_fatal_but_server_unavailable_is_retried() -> None:
    with ScriptedBroker(connacks=(3, 4)) as broker:
        tail = session(broker.port)
        with pytest.raises(Refused, match="bad username or password") as refused:
            tail.run(within(10))
    assert refused.value.kind == "login"
    assert broker.connections == 2


@pytest.mark.parametrize(
    ("then", "said"),
    [
        ("close", "connection lost: closed by the broker; reconnecting"),
        ("reset", "connection lost: network error: Connection reset by peer; reconnecting"),
        ("silent", "connection lost: no answer from the broker within the keepalive (1 s)"),
    ],
)
def test_a_lost_connection_is_described_in_words(
    then: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="subscriber.session")
    with ScriptedBroker(then=then) as broker:
        tail = session(broker.port)
        tail.run(within(10, lambda: "connection lost" in caplog.text))
    assert said in caplog.text
    assert "subscribed to track/1, track/2" in caplog.text
