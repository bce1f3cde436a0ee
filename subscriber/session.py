"""The MQTT side of mqtt-tail: connect, resubscribe, reconnect forever, acknowledge late.

One thread drives paho's primitives (``loop_read``/``loop_write``/``loop_misc``) from our
own loop rather than ``loop_forever``, because the delivery guarantee needs control over
*when* PUBACKs go out: messages are handed to the handler, the handler writes and flushes
the whole batch, and only then is the batch acknowledged (``manual_ack=True``). A crash
before the flush leaves the messages unacknowledged, so the broker redelivers them.

Speed: paho reads a packet with three ``recv`` calls and writes every PUBACK with its own
``send``. The socket wrapper below reads 64 KiB at a time and coalesces the PUBACKs of a
batch into one write, which takes the drain rate from about 20k to 30k messages/s.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

logger = logging.getLogger(__name__)

READ_CHUNK = 65536
BATCH_MAX = 2000
"""Messages handled before a flush and an acknowledgement, at most. The broker's own
window (``max_inflight_messages``) is usually smaller; paho's 65,535 message ids are not
at risk because nothing is held for longer than one batch."""
POLL_INTERVAL = 0.2
"""Longest wait in select(): how quickly a stop request or a timer is noticed."""

# CONNACK codes (as paho reports them for MQTT 3.1.1) that retrying cannot fix: what the
# broker said, and which kind of refusal it is (the CLI gives a hint per kind).
_REFUSED = {
    132: ("the broker does not support MQTT 3.1.1", "protocol"),
    133: ("the broker rejected the client id", "client-id"),
    134: ("bad username or password", "login"),
    135: ("not authorised", "login"),
}


class Refused(Exception):
    """The broker said no (credentials, ACL, client id): not a network error, no retry.

    ``kind`` is ``"login"``, ``"client-id"``, ``"protocol"`` or ``"subscription"``.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Handler(Protocol):
    def on_message(self, topic: str, payload: bytes | bytearray) -> bool:
        """Process one message; False leaves it unacknowledged (the broker keeps it)."""

    def on_batch_end(self) -> bool:
        """Flush what the batch produced; False means it could not be delivered."""

    def on_tick(self, now: float) -> None:
        """Called at least every POLL_INTERVAL seconds, connected or not."""


@dataclass(frozen=True)
class ConnectOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "mqtt-tail"
    topics: Sequence[str] = ("track/+",)
    clean: bool = False
    username: str | None = None
    password: str | None = None
    tls: bool = False
    cafile: str | None = None
    keepalive: int = 5
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0


class Backoff:
    """Exponential backoff with jitter: each delay is drawn from the upper half of
    ``min * 2**attempt`` capped at ``max``, so a fleet of tails does not reconnect in step."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if minimum <= 0 or maximum < minimum:
            raise ValueError("need 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        cap = min(self.maximum, self.minimum * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return self._rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0


class BufferedSocket:
    """Wraps the broker socket for paho: buffered reads, writes held until ``flush()``."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.lost: str | None = None
        """How the connection ended, in words, once it did (paho only says "Unspecified")."""
        self._in = b""
        self._pos = 0
        self._out = bytearray()

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._in):
            try:
                self._in = self._sock.recv(max(READ_CHUNK, size))
            except _NOT_YET:
                raise
            except OSError as error:
                self.lost = f"network error: {_reason(error)}"
                raise
            if not self._in:
                self.lost = "closed by the broker"
            self._pos = 0
        chunk = self._in[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk

    def pending(self) -> int:
        """Bytes already read but not yet consumed (paho then skips select())."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._in) - self._pos + int(inner)

    def send(self, data: bytes | bytearray) -> int:
        self._out += data
        return len(data)

    def wants_flush(self) -> bool:
        return bool(self._out)

    def flush(self) -> None:
        """Send what paho wrote; a full socket keeps the rest for the next call."""
        while self._out:
            try:
                sent = self._sock.send(self._out)
            except _NOT_YET:
                return
            except OSError as error:
                self.lost = f"network error: {_reason(error)}"
                raise
            del self._out[:sent]

    def close(self) -> None:
        # paho closes right after queueing DISCONNECT: send it first, best effort.
        try:
            self._sock.settimeout(1.0)
            self._sock.sendall(bytes(self._out))
        except OSError:
            pass
        self._out.clear()
        self._sock.close()

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_NOT_YET = (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError)


class _Client(mqtt.Client):
    buffered: BufferedSocket | None = None
    """The latest connection's socket; paho forgets it before reporting a disconnect."""

    def _create_socket(self) -> Any:
        self.buffered = BufferedSocket(super()._create_socket())
        return self.buffered


class Session:
    """Keeps a persistent MQTT session alive and feeds its messages to a handler.

    ``run(stop)`` returns when ``stop()`` is true, after a clean DISCONNECT (the broker
    keeps the session), or raises ``Refused``.
    """

    def __init__(self, options: ConnectOptions, handler: Handler) -> None:
        self.options = options
        self.handler = handler
        self.backoff = Backoff(options.reconnect_min, options.reconnect_max)
        self.connected = False
        self.subscribed = False
        self.connections = 0
        self._wipe = options.clean
        self._refused: Refused | None = None
        self._pending: list[int] = []
        self._reported_down = False
        self._client = self._new_client(clean=self._wipe)

    def _new_client(self, *, clean: bool) -> _Client:
        options = self.options
        client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            clean_session=clean,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if options.tls or options.cafile:
            client.tls_set(ca_certs=options.cafile)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        # With a write callback registered, paho queues packets instead of sending each
        # one at once; our loop flushes them together (see module docstring).
        client.on_socket_register_write = _ignore
        client.connect_async(options.host, options.port, options.keepalive)
        return client

    # -- paho callbacks (run inside our loop, on our thread) ---------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            if reason.value in _REFUSED:
                said, kind = _REFUSED[reason.value]
                self._refused = Refused(f"connection refused: {said}", kind)
            else:
                logger.warning("connection refused by the broker: %s; retrying", reason)
            return
        self.backoff.reset()
        self._reported_down = False
        where = f"{self.options.host}:{self.options.port}"
        if self._wipe:
            logger.info("connected to %s; discarding the stored session (--clean)", where)
            client.disconnect()
            return
        self.connected = True
        self.connections += 1
        if flags.session_present:
            logger.info("connected to %s as %s, session resumed", where, self.options.client_id)
        elif self.connections == 1:
            logger.info("connected to %s as %s, new session", where, self.options.client_id)
        else:
            logger.warning(
                "connected to %s as %s, but the broker has no session for it: "
                "events published while disconnected may have been missed",
                where,
                self.options.client_id,
            )
        client.subscribe([(topic, 1) for topic in self.options.topics])

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Any,
    ) -> None:
        for topic, reason in zip(self.options.topics, reasons, strict=False):
            if reason.is_failure:
                self._refused = Refused(
                    f"subscription to {topic} refused by the broker (ACL?)", "subscription"
                )
                return
        if not self.subscribed:
            logger.info("subscribed to %s", ", ".join(self.options.topics))
        self.subscribed = True

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if self.connected and not self._stopping:
            logger.warning("%s; reconnecting", self._lost(reason))
        self.connected = False
        # PUBACKs for this connection's messages must not go out on the next one: the
        # broker redelivers them and the deduplicator drops the copies.
        self._pending.clear()

    def _lost(self, reason: ReasonCode) -> str:
        if reason == "Keep alive timeout":
            return (
                "connection lost: no answer from the broker within the keepalive "
                f"({self.options.keepalive} s)"
            )
        transport = self._client.buffered
        if transport is not None and transport.lost:
            return f"connection lost: {transport.lost}"
        return f"connection lost ({reason})"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.handler.on_message(message.topic, message.payload) and message.qos:
            self._pending.append(message.mid)

    # -- the loop ----------------------------------------------------------------------

    _stopping = False

    def run(self, stop: Callable[[], bool]) -> None:
        next_attempt = 0.0
        while not stop():
            now = time.monotonic()
            self.handler.on_tick(time.time())
            if self._refused:
                self._close()
                raise self._refused
            sock = self._client.socket()
            if sock is None:
                if now < next_attempt:
                    time.sleep(min(POLL_INTERVAL, next_attempt - now))
                    continue
                if self._connect():
                    continue
                delay = self.backoff.next()
                next_attempt = time.monotonic() + delay
                logger.debug("next connection attempt in %.1f s", delay)
                continue
            self._service(sock)
            if self._client.socket() is None:
                if self._wipe and not self._refused:
                    # The clean-session connection ended: from now on, a persistent one.
                    self._wipe = False
                    self._client = self._new_client(clean=False)
                    next_attempt = 0.0
                else:
                    next_attempt = time.monotonic() + self.backoff.next()
        self._shutdown()

    def _connect(self) -> bool:
        where = f"{self.options.host}:{self.options.port}"
        try:
            self._client.reconnect()
        except (OSError, ssl.SSLError) as error:
            if not self._reported_down:
                logger.warning("broker %s unreachable (%s); retrying", where, _reason(error))
                self._reported_down = True
            return False
        return True

    def _service(self, sock: Any) -> None:
        client = self._client
        if not sock.pending():
            wants = client.want_write() or sock.wants_flush()
            readable, _, _ = select.select([sock], [sock] if wants else [], [], POLL_INTERVAL)
        else:
            readable = [sock]
        if readable:
            for _ in range(BATCH_MAX):
                if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                if client.socket() is None or not sock.pending():
                    break
        self._end_batch()
        if client.socket() is not None:
            client.loop_write()
            self._flush(sock)
        if client.socket() is not None:
            client.loop_misc()
            if client.socket() is not None:
                client.loop_write()
                self._flush(sock)

    def _end_batch(self) -> None:
        delivered = self.handler.on_batch_end()
        pending, self._pending = self._pending, []
        if delivered:
            for mid in pending:
                self._client.ack(mid, 1)

    def _flush(self, sock: Any) -> None:
        try:
            sock.flush()
        except OSError as error:
            logger.debug("write failed: %s", error)
            # paho notices on its next read or keepalive check.

    def _shutdown(self) -> None:
        """Acknowledge what was shown, then DISCONNECT: the broker keeps the session."""
        self._stopping = True
        client = self._client
        sock = client.socket()
        self._end_batch()
        if sock is not None:
            client.disconnect()
            client.loop_write()
            if client.socket() is not None:
                self._flush(sock)
        self._close()

    def _close(self) -> None:
        self._stopping = True
        sock = self._client.socket()
        if sock is not None:
            sock.close()


def _ignore(*args: object) -> None:
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host: {error.strerror}"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
