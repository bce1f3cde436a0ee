"""The MQTT codec by property: what we encode decodes back, split at any byte, and no
byte string from a peer makes the client raise (it closes the link instead)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from tracker_api.mqtt import (
    BrokerAddress,
    Message,
    MqttClient,
    _Link,
    decode_publish,
    encode_publish,
)

topics = st.text(min_size=1, max_size=80).filter(lambda t: "\x00" not in t)


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
    stream = encode_publish(topic.encode(), payload, qos, retain, mid)

    async def feed() -> list[tuple[int, bytes]]:
        packets: list[tuple[int, bytes]] = []
        link = _Link(lambda header, body: packets.append((header, body)), lambda mid: None)
        pos = 0
        for size in [*cuts, len(stream)]:
            link.data_received(stream[pos : pos + size])
            pos += size
        return packets

    ((header, body),) = asyncio.run(feed())
    message = decode_publish(header, body)

    assert (message.topic, message.payload, message.qos, message.retain) == (
        topic,
        payload,
        qos,
        retain,
    )
    assert message.mid == (mid if qos else 0)


@given(data=st.binary(max_size=400))
@settings(max_examples=250, deadline=None)
def test_no_bytes_from_the_broker_make_the_client_raise(data: bytes) -> None:
    received: list[Message] = []

    async def feed() -> None:
        client = MqttClient(BrokerAddress(), "fuzz", on_message=received.append, max_packet=64)
        link = _Link(client._on_packet, client._on_puback, 64, client._on_oversize)
        client._link = link
        client._connack = asyncio.get_running_loop().create_future()
        link.data_received(data)  # must not raise, whatever the bytes

    asyncio.run(feed())
    assert all(isinstance(m.payload, bytes) for m in received)
