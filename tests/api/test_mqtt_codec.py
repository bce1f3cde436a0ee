"""The MQTT codec by property: what we encode decodes back, split at any byte; no byte
string from a peer makes it raise anything but ``ProtocolError``; an oversize PUBLISH is
never held whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker_api.mqtt import Message, ProtocolError, Will
from tracker_api.mqtt.codec import (
    Acknowledged,
    Connack,
    Decoder,
    Other,
    Packet,
    Suback,
    decode_length,
    decode_packet,
    encode_connect,
    encode_length,
    encode_publish,
)

topics = st.text(min_size=1, max_size=80).filter(lambda t: "\x00" not in t)


def framed(stream: bytes, cuts: list[int], max_packet: int = 1 << 20) -> list[Packet]:
    """The packets in ``stream``, fed to a decoder in pieces of the sizes in ``cuts``."""
    packets: list[Packet] = []
    decoder = Decoder(
        lambda header, body: packets.append(decode_packet(header, body)),
        lambda mid: packets.append(Acknowledged(mid)),
        max_packet,
    )
    pos = 0
    for size in [*cuts, len(stream)]:
        decoder.feed(stream[pos : pos + size])
        pos += size
    return packets


@given(
    topic=topics,
    payload=st.binary(max_size=3000),
    qos=st.sampled_from([0, 1]),
    retain=st.booleans(),
    mid=st.integers(1, 65_535),
    cuts=st.lists(st.integers(1, 50), max_size=20),
)
@settings(max_examples=150, deadline=None)
def test_a_publish_round_trips_through_the_framing_split_anywhere(
    topic: str, payload: bytes, qos: int, retain: bool, mid: int, cuts: list[int]
) -> None:
    (message,) = framed(encode_publish(topic.encode(), payload, qos, retain, mid), cuts)

    assert isinstance(message, Message)
    assert (message.topic, message.payload, message.qos, message.retain) == (
        topic,
        payload,
        qos,
        retain,
    )
    assert message.mid == (mid if qos else 0)


@given(n=st.integers(0, 268_435_455))
def test_every_remaining_length_round_trips(n: int) -> None:
    encoded = b"\x30" + encode_length(n)
    assert decode_length(encoded) == (n, len(encoded))
    assert decode_length(encoded[:-1]) is None  # one byte short: wait for more


def test_a_remaining_length_over_four_bytes_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="four bytes"):
        decode_length(b"\x30\xff\xff\xff\xff\x01")


def test_acks_pings_and_connack_come_out_in_stream_order() -> None:
    stream = (
        b"\x20\x02\x01\x05"  # CONNACK: session present, refused (not authorised)
        + b"\x40\x02\x00\x07"  # PUBACK 7, the fast path
        + b"\x90\x04\x00\x08\x01\x80"  # SUBACK 8: granted QoS 1, then refused
        + b"\xb0\x02\x00\x09"  # UNSUBACK 9
        + b"\xd0\x00"  # PINGRESP
    )
    assert framed(stream, [1] * len(stream)) == [
        Connack(session_present=True, code=5),
        Acknowledged(7),
        Suback(8, b"\x01\x80"),
        Acknowledged(9),
        Other(0xD0),
    ]


def test_connect_packet_carries_credentials_will_and_flags() -> None:
    packet = encode_connect(
        "c1", 30, True, "user", "pw", Will("tracker/status/c1", b"offline", qos=1, retain=True)
    )

    assert packet[0] == 0x10
    assert decode_length(packet) == (len(packet) - 2, 2)
    flags = packet[2 + 7]
    assert flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02
    assert packet.endswith(b"\x00\x04user\x00\x02pw")
    assert b"\x00\x11tracker/status/c1\x00\x07offline" in packet


@given(data=st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_no_bytes_from_the_broker_raise_anything_but_a_protocol_error(data: bytes) -> None:
    try:
        packets = framed(data, [], max_packet=64)
    except ProtocolError:
        return
    assert all(isinstance(p, Message | Acknowledged | Suback | Connack | Other) for p in packets)


def test_an_oversize_publish_goes_by_without_being_held() -> None:
    dropped: list[tuple[int, bytes, int]] = []
    packets: list[Packet] = []
    decoder = Decoder(
        lambda header, body: packets.append(decode_packet(header, body)),
        lambda mid: None,
        max_packet=1024,
        on_oversize=lambda header, head, length: dropped.append((header, head, length)),
    )
    big = encode_publish(b"ingest/1", b"x" * 10_000_000, 1, False, 42)
    small = encode_publish(b"ingest/1", b"ok", 1, False, 43)
    stream, largest = big + small, 0
    for pos in range(0, len(stream), 65_536):
        decoder.feed(stream[pos : pos + 65_536])
        largest = max(largest, decoder.buffered)

    ((header, head, length),) = dropped
    assert decode_packet(header, head) == Message("ingest/1", b"x" * (len(head) - 12), 1, False, 42)
    assert length == len(big) - 5
    assert packets == [Message("ingest/1", b"ok", 1, False, 43)]
    assert largest < 1024 + 5  # the 10 MB body went by in 64 KiB reads


def test_an_oversize_packet_other_than_publish_is_a_protocol_error() -> None:
    decoder = Decoder(lambda header, body: None, lambda mid: None, 16, lambda *a: None)
    with pytest.raises(ProtocolError, match="100-byte packet 0x90"):
        decoder.feed(bytes([0x90, 100]) + b"\x00" * 10)


@pytest.mark.parametrize(
    "packet",
    [b"\x36\x00", b"\x30\x01\x00", b"\x32\x03\x00\x01t", b"\x40\x01\x00", b"\x20\x00"],
    ids=["qos-3", "no-topic", "no-packet-id", "short-puback", "short-connack"],
)
def test_malformed_packets_are_protocol_errors(packet: bytes) -> None:
    with pytest.raises(ProtocolError):
        framed(packet, [])
