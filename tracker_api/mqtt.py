"""A lean asyncio MQTT 3.1.1 client for the tracker's hot path.

Why not a general-purpose library: the tracker needs a QoS-1 publish whose PUBACK it can
await, refused at once while disconnected and never replayed later (a 503 must stay a
503), with a bounded in-flight window and many publishes coalesced into one socket write.
paho-mqtt/aiomqtt ran at about 13k awaited publishes/s here and gmqtt replays unacked
messages after a reconnect; this client does about 70k/s. See docs/adr/0002-mqtt-client.md.

It speaks only what the tracker uses: CONNECT (credentials, will, TLS), PUBLISH QoS 0/1 out,
PUBLISH QoS 0/1 in with manual PUBACK, SUBSCRIBE, PINGREQ and DISCONNECT. The supervisor
reconnects forever with capped exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

logger = logging.getLogger(__name__)

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x82, 0x90, 0xA2, 0xB0
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0
# The largest remaining length the protocol can express (four length bytes).
MAX_PACKET = 268_435_455
# Of a packet too large to take in, what is kept: its topic and packet id, at most.
_OVERSIZE_HEAD = 2 + 65_535 + 2

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttError(Exception):
    """Base of the errors raised by this client."""


class NotConnected(MqttError):
    """The client has no live connection; nothing was sent."""


class InflightFull(MqttError):
    """The in-flight window is full; nothing was sent."""


class PublishTimeout(MqttError):
    """No PUBACK within the acknowledgement timeout."""


class ConnectionLost(MqttError):
    """The connection dropped before the broker acknowledged the message."""


class ConnectionRefused(MqttError):
    """The broker answered CONNECT with a refusal (bad login, not authorised, ...)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.reason = CONNACK_REASONS.get(code, f"code {code}")
        super().__init__(f"refused: {self.reason}")


class ProtocolError(MqttError):
    """The broker sent a packet that breaks MQTT 3.1.1."""


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    cafile: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.cafile)


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int = 0
    link: object = None  # the connection it came on: packet ids mean nothing on another


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def encode_connect(
    client_id: str,
    keepalive: int,
    clean_session: bool,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _string(client_id.encode())
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _string(will.topic.encode()) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _string(password.encode())
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + keepalive.to_bytes(2, "big") + payload
    return bytes([CONNECT]) + _varint(len(body)) + body


def encode_publish(topic: bytes, payload: bytes, qos: int, retain: bool, mid: int) -> bytes:
    header = PUBLISH | (qos << 1) | (1 if retain else 0)
    mid_bytes = mid.to_bytes(2, "big") if qos else b""
    length = 2 + len(topic) + len(mid_bytes) + len(payload)
    return b"".join(
        (bytes([header]), _varint(length), len(topic).to_bytes(2, "big"), topic, mid_bytes, payload)
    )


def encode_subscribe(mid: int, topics: Sequence[tuple[str, int]]) -> bytes:
    body = mid.to_bytes(2, "big") + b"".join(_string(t.encode()) + bytes([q]) for t, q in topics)
    return bytes([SUBSCRIBE]) + _varint(len(body)) + body


def encode_unsubscribe(mid: int, topics: Sequence[str]) -> bytes:
    body = mid.to_bytes(2, "big") + b"".join(_string(t.encode()) for t in topics)
    return bytes([UNSUBSCRIBE]) + _varint(len(body)) + body


def decode_publish(header: int, body: bytes, link: object = None) -> Message:
    """The message in a PUBLISH packet's body; ``ProtocolError`` when malformed."""
    qos = (header >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if len(body) < 2:
        raise ProtocolError("PUBLISH without a topic")
    topic_end = 2 + int.from_bytes(body[:2], "big")
    pos = topic_end + (2 if qos else 0)
    if len(body) < pos:
        raise ProtocolError("PUBLISH shorter than its topic and packet id")
    topic = body[2:topic_end].decode("utf-8", "replace")
    mid = int.from_bytes(body[topic_end:pos], "big") if qos else 0
    return Message(topic, body[pos:], qos, bool(header & 1), mid, link)


@dataclass
class _Skipped:
    """A packet over the size limit, discarded as its bytes arrive."""

    header: int
    length: int
    left: int
    head: bytearray = field(default_factory=bytearray)


class _Link(asyncio.Protocol):
    """One TCP (or TLS) connection: frames packets in, coalesces writes out."""

    def __init__(
        self,
        on_packet: Callable[[int, bytes], None],
        on_puback: Callable[[int], None],
        max_packet: int = MAX_PACKET,
        on_oversize: Callable[[int, bytes, int], None] | None = None,
    ) -> None:
        self._on_packet = on_packet
        self._on_puback = on_puback
        self.max_packet = max_packet
        self._on_oversize = on_oversize
        self._skipped: _Skipped | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_received = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, packet: bytes) -> None:
        # Everything written during one pass of the event loop leaves in one send().
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        buf = self._buffer
        buf += data
        pos, end = 0, len(buf)
        if self._skipped is not None:
            pos = self._skip(buf, pos, end)
        on_puback = self._on_puback
        while end - pos >= 2:
            if buf[pos] == PUBACK and buf[pos + 1] == 2:
                # The hot path: one PUBACK per event published.
                if end - pos < 4:
                    break
                on_puback((buf[pos + 2] << 8) | buf[pos + 3])
                pos += 4
                continue
            header = _remaining_length(buf, pos + 1, end)
            if header is None:
                break  # incomplete packet: wait for more bytes
            length, start = header
            if length < 0:
                logger.error("malformed packet from broker; closing the connection")
                self.abort()
                return
            if length > self.max_packet:
                # Decided on the fixed header alone: the body is never held whole.
                if buf[pos] & 0xF0 != PUBLISH or self._on_oversize is None:
                    logger.error("%d-byte packet from broker; closing the connection", length)
                    self.abort()
                    return
                self._skipped = _Skipped(buf[pos], length, length)
                pos = self._skip(buf, start, end)
                continue
            if end - start < length:
                break
            self._on_packet(buf[pos], bytes(buf[start : start + length]))
            pos = start + length
        del buf[:pos]

    def _skip(self, buf: bytearray, pos: int, end: int) -> int:
        """Discard the oversize packet's bytes in ``buf[pos:end]``; the new position."""
        skipped = self._skipped
        assert skipped is not None
        take = min(end - pos, skipped.left)
        room = _OVERSIZE_HEAD - len(skipped.head)
        if room > 0:
            skipped.head += buf[pos : pos + min(take, room)]
        skipped.left -= take
        if skipped.left == 0:
            self._skipped = None
            assert self._on_oversize is not None
            self._on_oversize(skipped.header, bytes(skipped.head), skipped.length)
        return pos + take


def _remaining_length(buf: bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """Decode the 1-4 byte remaining length at ``pos``: (length, body start), None when
    more bytes are needed, a negative length when malformed."""
    length, multiplier = 0, 1
    while pos < end:
        byte = buf[pos]
        pos += 1
        length += (byte & 0x7F) * multiplier
        if byte < 0x80:
            return length, pos
        multiplier *= 128
        if multiplier > 128**3:
            return -1, pos
    return None


@dataclass
class _Subscription:
    topic: str
    qos: int = 1


@dataclass
class ClientStats:
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    received: int = 0
    oversize: int = 0  # incoming messages dropped for their size
    last_error: str = ""  # "refused: <CONNACK reason>" or "unreachable: <why>"
    state_listeners: list[Callable[[bool], None]] = field(default_factory=list)


class MqttClient:
    """A supervised connection to one broker.

    ``publish`` returns a future resolved by the broker's PUBACK (QoS 1) and raises
    ``NotConnected`` or ``InflightFull`` at once instead of queueing: the caller decides
    what a refusal means. Incoming messages go to ``on_message(message)``; for QoS 1 the
    caller must call ``ack(message)`` once it is done with the message.
    """

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        *,
        keepalive: int = 15,
        clean_session: bool = True,
        will: Will | None = None,
        max_inflight: int = 10_000,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: Callable[[Message], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        backoff: tuple[float, float] = (0.1, 5.0),
        connect_timeout: float = 5.0,
        ack_timeout: float | None = None,
        max_packet: int = MAX_PACKET,
    ) -> None:
        if not 0 < max_inflight < 65_535:
            raise ValueError("max_inflight must be between 1 and 65534")
        self.address = address
        self.client_id = client_id
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.will = will
        self.max_inflight = max_inflight
        self.subscriptions = [_Subscription(t, q) for t, q in subscriptions]
        self.on_message = on_message
        self.on_connect = on_connect
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.max_packet = max_packet
        self.stats = ClientStats()
        self._link: _Link | None = None
        self._connected = False
        self._connack: asyncio.Future[tuple[bool, int]] | None = None
        self._inflight: dict[int, asyncio.Future[None]] = {}
        # (deadline, future) in publish order: one sweep replaces a timer per publish.
        self.ack_timeout = ack_timeout
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._next_mid = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._ssl = address.ssl_context()
        self._topic_cache: dict[str, bytes] = {}

    # -- state -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def status(self) -> str:
        """``connected``, ``connecting``, ``refused: <reason>`` or ``unreachable: <why>``."""
        if self._connected:
            return "connected"
        return self.stats.last_error or "connecting"

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _set_connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            for listener in self.stats.state_listeners:
                listener(value)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"mqtt-{self.client_id}"
            )

    async def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self._connected

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Wait (bounded) for in-flight acknowledgements, then DISCONNECT cleanly."""
        self._stopping = True
        deadline = time.monotonic() + drain_timeout
        while self._connected and time.monotonic() < deadline:
            if all(future.done() for future in self._inflight.values()):
                break
            await asyncio.sleep(0.01)
        link = self._link
        if link is not None and self._connected:
            link.write(bytes([DISCONNECT, 0]))
            link.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            self._supervisor = None
        self._drop_link(ConnectionLost("client stopped"))

    # -- outgoing ----------------------------------------------------------------------

    def _allocate_mid(self) -> int:
        mid = self._next_mid
        while True:
            mid = mid % 65_535 + 1
            if mid not in self._inflight:
                self._next_mid = mid
                return mid

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Send one message; the future resolves on PUBACK (at once for QoS 0)."""
        link = self._link
        if not self._connected or link is None:
            raise NotConnected("not connected to the broker")
        encoded_topic = self._topic_cache.get(topic)
        if encoded_topic is None:
            encoded_topic = topic.encode()
            if len(self._topic_cache) < 100_000:
                self._topic_cache[topic] = encoded_topic
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if qos == 0:
            link.write(encode_publish(encoded_topic, payload, 0, retain, 0))
            future.set_result(None)
        else:
            if len(self._inflight) >= self.max_inflight:
                raise InflightFull(f"{len(self._inflight)} messages await acknowledgement")
            mid = self._allocate_mid()
            self._inflight[mid] = future
            if self.ack_timeout is not None:
                self._deadlines.append((time.monotonic() + self.ack_timeout, future))
            link.write(encode_publish(encoded_topic, payload, 1, retain, mid))
        self.stats.published += 1
        return future

    def holds(self, message: Message) -> bool:
        """Whether ``message`` came on the current connection: only then can it still be
        acknowledged; otherwise the broker hands it over again after the reconnect."""
        return self._connected and message.link is self._link

    def ack(self, message: Message) -> bool:
        """Acknowledge an incoming QoS-1 message; False when its connection is gone."""
        link = self._link
        if message.qos == 0:
            return True
        if link is None or not self._connected or message.link is not link:
            # That connection is gone; the broker redelivers the message on this one.
            return False
        link.write(bytes([PUBACK, 2]) + message.mid.to_bytes(2, "big"))
        return True

    def unsubscribe(self, topics: Sequence[str]) -> asyncio.Future[None]:
        """Stop receiving ``topics``; the future resolves on the broker's UNSUBACK."""
        link = self._link
        if not self._connected or link is None:
            raise NotConnected("not connected to the broker")
        self.subscriptions = [s for s in self.subscriptions if s.topic not in topics]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        mid = self._allocate_mid()
        self._inflight[mid] = future
        link.write(encode_unsubscribe(mid, topics))
        return future

    def drop_connection(self, reason: str) -> None:
        """Abort the current connection (the supervisor reconnects)."""
        if self._link is not None:
            logger.warning("dropping the broker connection: %s", reason)
            self._link.abort()

    # -- incoming ----------------------------------------------------------------------

    def _on_puback(self, mid: int) -> None:
        future = self._inflight.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)
        self.stats.acked += 1

    def _on_packet(self, header: int, body: bytes) -> None:
        try:
            self._dispatch(header, body)
        except ProtocolError as error:
            logger.error("%s; closing the connection", error)
            if self._link is not None:
                self._link.abort()

    def _dispatch(self, header: int, body: bytes) -> None:
        kind = header & 0xF0
        if kind in (PUBACK, SUBACK, UNSUBACK) and len(body) < 2:
            raise ProtocolError(f"packet 0x{header:02x} without a packet id")
        if kind in (PUBACK, UNSUBACK):
            self._on_puback(int.from_bytes(body[:2], "big"))
        elif kind == PUBLISH:
            self._on_publish(decode_publish(header, body, self._link))
        elif kind == CONNACK:
            if len(body) < 2:
                raise ProtocolError("CONNACK shorter than 2 bytes")
            if self._connack is not None and not self._connack.done():
                session_present, code = bool(body[0] & 1), body[1]
                if code == 0:
                    # The broker may send redelivered messages in the same read: whoever
                    # handles them must already see a connected client that can publish.
                    self._set_connected(True)
                self._connack.set_result((session_present, code))
        elif kind == SUBACK:
            self._inflight.pop(int.from_bytes(body[:2], "big"), None)
            refused = [
                t.topic
                for t, code in zip(self.subscriptions, body[2:], strict=False)
                if code == 0x80
            ]
            if refused:
                logger.error("broker refused subscription to %s", ", ".join(refused))
        elif kind != PINGRESP:
            logger.warning("unexpected packet type 0x%02x from broker", header)

    def _on_publish(self, message: Message) -> None:
        self.stats.received += 1
        if self.on_message is None:
            self.ack(message)
            return
        try:
            self.on_message(message)
        except Exception:
            logger.exception(
                "message handler failed for %s; acknowledged to avoid a loop", message.topic
            )
            self.ack(message)

    def _on_oversize(self, header: int, head: bytes, length: int) -> None:
        """A PUBLISH over ``max_packet``: acknowledged (so it is not redelivered forever)
        and dropped, counted in ``stats.oversize``."""
        self.stats.oversize += 1
        try:
            message = decode_publish(header, head, self._link)
        except ProtocolError:
            message = None
        topic = message.topic if message is not None else "?"
        logger.warning(
            "dropped a %d-byte message on %s: over the %d-byte limit",
            length,
            topic,
            self.max_packet,
        )
        if message is not None:
            self.ack(message)

    # -- supervisor --------------------------------------------------------------------

    def _drop_link(self, error: MqttError) -> None:
        self._set_connected(False)
        self._link = None
        inflight, self._inflight = self._inflight, {}
        self._deadlines.clear()
        for future in inflight.values():
            if not future.done():
                future.set_exception(error)
                # Nobody may be waiting any more (timed out); don't log "never retrieved".
                future.exception()

    async def _supervise(self) -> None:
        delay = self.backoff[0]
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await self._run_connection(loop)
                delay = self.backoff[0]  # it was connected: start the backoff afresh
            except ConnectionRefused as exc:
                reason = str(exc)
                if reason != self.stats.last_error:
                    logger.error(
                        "broker %s:%s %s (check the login in TRACKER_MQTT_URL); "
                        "retrying with backoff up to %.1f s",
                        self.address.host,
                        self.address.port,
                        reason,
                        self.backoff[1],
                    )
                self.stats.last_error = reason
            except (TimeoutError, OSError, MqttError) as exc:
                reason = f"unreachable: {str(exc) or type(exc).__name__}"
                if reason != self.stats.last_error:
                    logger.warning(
                        "broker %s:%s %s; retrying with backoff up to %.1f s",
                        self.address.host,
                        self.address.port,
                        reason,
                        self.backoff[1],
                    )
                self.stats.last_error = reason
            except Exception:  # a bug or an odd platform error: log it, never stop trying
                logger.exception("unexpected error in the broker connection; retrying")
                self.stats.last_error = "unexpected error"
            if self._stopping:
                break
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.backoff[1])

    async def _run_connection(self, loop: asyncio.AbstractEventLoop) -> None:
        address = self.address
        _, link = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Link(self._on_packet, self._on_puback, self.max_packet, self._on_oversize),
                address.host,
                address.port,
                ssl=self._ssl,
                server_hostname=address.host if self._ssl else None,
            ),
            self.connect_timeout,
        )
        self._link = link
        try:
            self._connack = loop.create_future()
            link.write(
                encode_connect(
                    self.client_id,
                    self.keepalive,
                    self.clean_session,
                    address.username,
                    address.password,
                    self.will,
                )
            )
            closed_early = asyncio.ensure_future(asyncio.shield(link.closed))
            waiters: set[asyncio.Future[Any]] = {self._connack, closed_early}
            done, _ = await asyncio.wait(
                waiters,
                timeout=self.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            closed_early.cancel()
            if self._connack not in done:
                raise ConnectionLost("no CONNACK from the broker")
            session_present, code = self._connack.result()
            if code:
                raise ConnectionRefused(code)
            if self.subscriptions:
                link.write(
                    encode_subscribe(
                        self._allocate_mid_for_control(),
                        [(s.topic, s.qos) for s in self.subscriptions],
                    )
                )
            self.stats.connects += 1
            self.stats.last_error = ""
            logger.info(
                "connected to broker %s:%s as %s (session present: %s)",
                address.host,
                address.port,
                self.client_id,
                session_present,
            )
            if self.on_connect is not None:
                self.on_connect()
            await self._keep_alive(link)
        finally:
            was_connected = self._connected
            link.abort()
            self._drop_link(ConnectionLost("connection to the broker lost"))
            if was_connected and not self._stopping:
                self.stats.disconnects += 1
                logger.warning("disconnected from broker %s:%s", address.host, address.port)

    def _allocate_mid_for_control(self) -> int:
        # SUBSCRIBE shares the packet-id space; reserve the id until the connection ends.
        mid = self._allocate_mid()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        self._inflight[mid] = done
        return mid

    async def _keep_alive(self, link: _Link) -> None:
        """Return when the connection must go: closed by the peer, silent for 1.5 x
        keepalive despite our PINGREQs (half-open), or silent while publishes time out."""
        ping_every = max(self.keepalive / 2, 0.05)
        tick = min(ping_every, 0.05) if self.ack_timeout is not None else ping_every
        last_ping = last_tick = time.monotonic()
        skipped_late = False
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(link.closed), tick)
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            late, last_tick = now - last_tick > tick * 2 + 0.1, now
            # Overdue publishes fail even when our loop runs late: their callers must get
            # an answer within about the timeout either way.
            expired = self._expire(now)
            if late and not skipped_late:
                # Our own loop was blocked: what the broker sent may still sit unread in
                # the socket, so don't judge the link on this tick (but on the next one).
                skipped_late = True
                continue
            skipped_late = False
            silent = now - link.last_received
            if silent > self.keepalive * 1.5:
                logger.warning("broker silent for %.1f s: connection is half-open", silent)
                return
            if expired and silent >= self.ack_timeout:  # type: ignore[operator]
                # Nothing at all from the broker while acknowledgements are overdue:
                # don't wait for the keepalive to notice.
                logger.warning("no answer from the broker for %.1f s: dropping the link", silent)
                return
            if now - last_ping >= ping_every:
                link.write(bytes([PINGREQ, 0]))
                last_ping = now

    def _expire(self, now: float) -> bool:
        """Fail publishes whose PUBACK is overdue (their packet ids stay reserved until
        the PUBACK or the end of the connection); True when any was still waiting."""
        deadlines = self._deadlines
        expired = False
        while deadlines and deadlines[0][0] <= now:
            _, future = deadlines.popleft()
            if not future.done():
                future.set_exception(PublishTimeout("no PUBACK within the timeout"))
                expired = True
        return expired
