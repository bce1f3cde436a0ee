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

from subscriber.session import Backoff, ConnectOptions, Refused, Session, State


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


class CatchUpOnce:
    """A catch-up due on the first connection only; notes the session's state as it runs."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.ran_in: list[State] = []

    def due(self, *, first: bool, session_present: bool) -> bool:
        return first

    def run(self, stop: Callable[[], bool]) -> None:
        assert self.session is not None
        self.ran_in.append(self.session.state)


SUBSCRIBE, DISCONNECT = 0x82, 0xE0


class ScriptedBroker:
    """Speaks just enough MQTT 3.1.1 to answer one way: a CONNACK code per connection
    (the last one repeats), SUBACK codes, then an ending: ``close`` (end of file),
    ``reset`` (after the first ping) or ``silent`` (reads and never answers). Whenever
    the client sends DISCONNECT instead, it closes the connection, as a broker does."""

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
        kind, body = _read_packet(conn)
        if kind != SUBSCRIBE:
            return
        conn.sendall(bytes([0x90, 2 + len(self.suback)]) + body[:2] + self.suback)
        if self.then == "reset":
            _read_packet(conn)  # the first ping: the client has taken the SUBACK in
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.then == "silent":
            while _read_packet(conn)[0] not in (0, DISCONNECT):
                pass


def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
    """One packet: the first byte of its fixed header (0 at end of file) and its body."""
    first = conn.recv(1, socket.MSG_WAITALL)
    if not first:
        return 0, b""
    length, shift = 0, 0
    while True:
        byte = conn.recv(1, socket.MSG_WAITALL)[0]
        length += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first[0], conn.recv(length, socket.MSG_WAITALL) if length else b""


def session(port: int, *, clean: bool = False, catch_up: CatchUpOnce | None = None) -> Session:
    settings = ConnectOptions(
        nodes=[("127.0.0.1", port)], client_id="t", topics=["track/1", "track/2"], keepalive=1,
        reconnect_min=0.01,
        reconnect_max=0.05,
        clean=clean,
    )  # fmt: skip
    tail = Session(settings, Recorder(), catch_up)
    if catch_up is not None:
        catch_up.session = tail
    return tail


def path(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The states a session went through, from the first, as its debug log says."""
    moves = [
        record.getMessage().removeprefix("state ").split(" -> ")
        for record in caplog.records
        if record.name == "subscriber.session" and record.getMessage().startswith("state ")
    ]
    return [moves[0][0], *(after for _, after in moves)] if moves else []


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


def test_a_refused_subscription_is_fatal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="subscriber.session")
    with ScriptedBroker(suback=(1, 0x80)) as broker:
        tail = session(broker.port)
        with pytest.raises(Refused, match="subscription to track/2 refused") as refused:
            tail.run(within(10))
    assert refused.value.kind == "subscription"
    assert path(caplog) == ["connecting", "subscribing", "refused"]


def test_bad_credentials_are_fatal_but_server_unavailable_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="subscriber.session")
    with ScriptedBroker(connacks=(3, 4)) as broker:
        tail = session(broker.port)
        with pytest.raises(Refused, match="bad username or password") as refused:
            tail.run(within(10))
    assert refused.value.kind == "login"
    assert broker.connections == 2
    assert path(caplog) == ["connecting", "refused"]


def test_a_session_goes_live_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="subscriber.session")
    with ScriptedBroker() as broker:
        tail = session(broker.port)
        tail.run(within(10, lambda: tail.state is State.LIVE))
    assert path(caplog) == ["connecting", "subscribing", "live", "stopping"]
    assert broker.connections == 1


def test_clean_discards_the_session_then_connects_persistent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="subscriber.session")
    with ScriptedBroker() as broker:
        tail = session(broker.port, clean=True)
        tail.run(within(10, lambda: tail.state is State.LIVE))
    assert "discarding the stored session (--clean)" in caplog.text
    assert path(caplog) == ["wiping", "connecting", "subscribing", "live", "stopping"]
    assert broker.connections == 2


def test_a_due_catch_up_runs_off_the_broker_between_suback_and_going_live(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="subscriber.session")
    catch_up = CatchUpOnce()
    with ScriptedBroker() as broker:
        tail = session(broker.port, catch_up=catch_up)
        tail.run(within(10, lambda: tail.state is State.LIVE))
    assert catch_up.ran_in == [State.CATCHING_UP]
    assert path(caplog) == [
        "connecting", "holding", "handing-over", "catching-up",
        "connecting", "subscribing", "live", "stopping",
    ]  # fmt: skip
    assert broker.connections == 2


def test_a_client_id_taken_over_again_and_again_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="subscriber.session")
    with ScriptedBroker(then="close") as broker:
        tail = session(broker.port)
        with pytest.raises(Refused, match="client id t is in use") as refused:
            tail.run(within(10))
    assert refused.value.kind == "taken-over"
    assert path(caplog) == [
        "connecting", *["subscribing", "live", "connecting"] * 2, "subscribing", "live", "refused",
    ]  # fmt: skip
    assert broker.connections == 3


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
