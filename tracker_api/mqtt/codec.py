"""MQTT 3.1.1 packets to bytes and back: no I/O, no clock (like h11 for HTTP).

``encode_*`` build packets; ``Decoder`` frames a byte stream into packets, whatever the
cuts, and skips a PUBLISH over its size limit as the bytes arrive, never holding it whole;
``decode_packet`` turns one packet into a value. Anything malformed raises
``ProtocolError``, and nothing else is raised whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tracker_api.mqtt.errors import ProtocolError

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x82, 0x90, 0xA2, 0xB0
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0
PINGREQ_PACKET = bytes([PINGREQ, 0])
DISCONNECT_PACKET = bytes([DISCONNECT, 0])
# The largest remaining length the protocol can express (four length bytes).
MAX_PACKET = 268_435_455
# Of a packet too large to take in, what is kept: its topic and packet id, at most.
OVERSIZE_HEAD = 2 + 65_535 + 2


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int = 0
    link: object = None  # the connection it came on: packet ids mean nothing on another


@dataclass(frozen=True)
class Connack:
    session_present: bool
    code: int


@dataclass(frozen=True)
class Acknowledged:
    """A PUBACK or UNSUBACK: the packet id it releases."""

    mid: int


@dataclass(frozen=True)
class Suback:
    mid: int
    codes: bytes  # one per topic, in order; 0x80 is a refusal


@dataclass(frozen=True)
class Other:
    """A packet a client has no use for (PINGRESP) or should never get."""

    header: int


Packet = Connack | Acknowledged | Suback | Message | Other


def encode_length(n: int) -> bytes:
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
    return bytes([CONNECT]) + encode_length(len(body)) + body


def encode_publish(topic: bytes, payload: bytes, qos: int, retain: bool, mid: int) -> bytes:
    header = PUBLISH | (qos << 1) | (1 if retain else 0)
    mid_bytes = mid.to_bytes(2, "big") if qos else b""
    length = 2 + len(topic) + len(mid_bytes) + len(payload)
    return b"".join(
        (
            bytes([header]),
            encode_length(length),
            len(topic).to_bytes(2, "big"),
            topic,
            mid_bytes,
            payload,
        )
    )


def encode_puback(mid: int) -> bytes:
    return bytes([PUBACK, 2]) + mid.to_bytes(2, "big")


def encode_subscribe(mid: int, topics: Sequence[tuple[str, int]]) -> bytes:
    body = mid.to_bytes(2, "big") + b"".join(_string(t.encode()) + bytes([q]) for t, q in topics)
    return bytes([SUBSCRIBE]) + encode_length(len(body)) + body


def encode_unsubscribe(mid: int, topics: Sequence[str]) -> bytes:
    body = mid.to_bytes(2, "big") + b"".join(_string(t.encode()) for t in topics)
    return bytes([UNSUBSCRIBE]) + encode_length(len(body)) + body


def decode_length(buf: bytes | bytearray, pos: int = 1) -> tuple[int, int] | None:
    """The remaining length starting at ``buf[pos]``: ``(length, body start)``, or None
    while more bytes are needed; ``ProtocolError`` past the four bytes MQTT allows."""
    length, shift, end = 0, 0, len(buf)
    while pos < end:
        byte = buf[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, pos
        shift += 7
        if shift > 21:
            raise ProtocolError("remaining length longer than four bytes")
    return None


def decode_publish(header: int, body: bytes, link: object = None) -> Message:
    """The message in a PUBLISH packet's body."""
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


def decode_packet(header: int, body: bytes, link: object = None) -> Packet:
    """One packet from the broker as a value; ``link`` is stamped on a ``Message``."""
    kind = header & 0xF0
    if kind == PUBLISH:
        return decode_publish(header, body, link)
    if kind in (PUBACK, SUBACK, UNSUBACK, CONNACK) and len(body) < 2:
        raise ProtocolError(f"packet 0x{header:02x} shorter than 2 bytes")
    if kind in (PUBACK, UNSUBACK):
        return Acknowledged(int.from_bytes(body[:2], "big"))
    if kind == SUBACK:
        return Suback(int.from_bytes(body[:2], "big"), body[2:])
    if kind == CONNACK:
        return Connack(bool(body[0] & 1), body[1])
    return Other(header)


@dataclass
class _Skipped:
    """A packet over the size limit, discarded as its bytes arrive."""

    header: int
    length: int
    left: int
    head: bytearray = field(default_factory=bytearray)


class Decoder:
    """Frames bytes into packets: ``on_packet(header, body)`` for each, except PUBACKs
    (one per event published: the hot path), which go straight to ``on_puback(mid)``.

    A PUBLISH over ``max_packet`` goes to ``on_oversize(header, head, length)`` with only
    its first bytes (topic and packet id) once it has gone by; any other packet that large
    is a ``ProtocolError``."""

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

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        pos, end = 0, len(buf)
        if self._skipped is not None:
            pos = self._skip(buf, pos, end)
        on_puback = self._on_puback
        while end - pos >= 2:
            if buf[pos] == PUBACK and buf[pos + 1] == 2:
                if end - pos < 4:
                    break
                on_puback((buf[pos + 2] << 8) | buf[pos + 3])
                pos += 4
                continue
            header = decode_length(buf, pos + 1)
            if header is None:
                break  # incomplete packet: wait for more bytes
            length, start = header
            if length > self.max_packet:
                # Decided on the fixed header alone: the body is never held whole.
                if buf[pos] & 0xF0 != PUBLISH or self._on_oversize is None:
                    raise ProtocolError(f"{length}-byte packet 0x{buf[pos]:02x} from the broker")
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
        room = OVERSIZE_HEAD - len(skipped.head)
        if room > 0:
            skipped.head += buf[pos : pos + min(take, room)]
        skipped.left -= take
        if skipped.left == 0:
            self._skipped = None
            assert self._on_oversize is not None
            self._on_oversize(skipped.header, bytes(skipped.head), skipped.length)
        return pos + take
