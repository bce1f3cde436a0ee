import random
import socket
from typing import Any

import pytest
from paho.mqtt.client import ConnectFlags
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from subscriber.session import Backoff, BufferedSocket, ConnectOptions, Refused, Session


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


def test_buffered_socket_reads_in_chunks_and_holds_writes_until_flush() -> None:
    left, right = socket.socketpair()
    with left, right:
        wrapped = BufferedSocket(left)
        right.sendall(b"abcdef")
        assert wrapped.recv(2) == b"ab"
        assert wrapped.pending() == 4
        assert wrapped.recv(10) == b"cdef"
        assert wrapped.send(b"xy") == 2
        assert wrapped.wants_flush()
        wrapped.flush()
        assert right.recv(10) == b"xy"
        assert wrapped.fileno() == left.fileno()
        wrapped.send(b"bye")
        wrapped.close()
        assert right.recv(10) == b"bye"


def session() -> Session:
    return Session(ConnectOptions(port=1, client_id="t", topics=["track/1", "track/2"]), Recorder())


def test_a_refused_subscription_is_fatal() -> None:
    tail = session()
    granted = ReasonCode(PacketTypes.SUBACK, identifier=1)
    refused = ReasonCode(PacketTypes.SUBACK, identifier=0x80)
    tail._on_subscribe(tail._client, None, 1, [granted, refused], None)
    with pytest.raises(Refused, match="subscription to track/2 refused"):
        tail.run(lambda: False)


def test_bad_credentials_are_fatal_but_server_unavailable_is_retried() -> None:
    tail = session()
    flags: Any = ConnectFlags(session_present=False)
    tail._on_connect(
        tail._client, None, flags, ReasonCode(PacketTypes.CONNACK, identifier=136), None
    )
    assert tail._refused is None
    tail._on_connect(
        tail._client, None, flags, ReasonCode(PacketTypes.CONNACK, identifier=134), None
    )
    with pytest.raises(Refused, match="bad username or password"):
        tail.run(lambda: False)


def test_the_socket_says_how_the_connection_ended() -> None:
    left, right = socket.socketpair()
    with left:
        closed = BufferedSocket(left)
        right.close()
        assert closed.recv(1) == b""
        assert closed.lost == "closed by the broker"
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        pending = BufferedSocket(left)
        with pytest.raises(BlockingIOError):
            pending.recv(1)
        assert pending.lost is None  # nothing to read yet is not an ending
        left.close()
        with pytest.raises(OSError):
            pending.recv(1)
        assert pending.lost is not None and pending.lost.startswith("network error: ")
        with pytest.raises(OSError):
            pending.send(b"x")
            pending.flush()


def test_a_lost_connection_is_described_in_words() -> None:
    tail = session()
    keepalive = ReasonCode(PacketTypes.DISCONNECT, "Keep alive timeout")
    unspecified = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
    assert tail._lost(keepalive) == (
        "connection lost: no answer from the broker within the keepalive (5 s)"
    )
    assert tail._lost(unspecified) == "connection lost (Unspecified error)"
