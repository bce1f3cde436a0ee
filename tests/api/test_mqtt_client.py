"""The lean MQTT client: wire encoding, framing, and behaviour against real and silent peers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.helpers.broker import Mosquitto
from tests.helpers.silent_broker import SilentBroker
from tests.helpers.waiting import wait_until
from tracker_api.mqtt import (
    BrokerAddress,
    ConnectionLost,
    InflightFull,
    Message,
    MqttClient,
    MqttError,
    NotConnected,
    Will,
    _Link,
    _remaining_length,
    encode_connect,
    encode_publish,
)


def test_connect_packet_carries_credentials_will_and_flags() -> None:
    packet = encode_connect(
        "c1", 30, True, "user", "pw", Will("tracker/status/c1", b"offline", qos=1, retain=True)
    )

    assert packet[0] == 0x10
    flags = packet[2 + 7]
    assert flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02
    assert packet.endswith(b"\x00\x04user\x00\x02pw")
    assert b"\x00\x11tracker/status/c1\x00\x07offline" in packet


def test_publish_packet_with_a_large_payload_has_a_multibyte_length() -> None:
    payload = b"x" * 200_000
    packet = encode_publish(b"track/1", payload, 1, False, 7)

    length, start = _remaining_length(bytearray(packet), 1, len(packet))  # type: ignore[misc]
    assert packet[0] == 0x32
    assert length == len(packet) - start == 2 + 7 + 2 + 200_000


def test_remaining_length_needs_more_bytes_or_rejects_garbage() -> None:
    assert _remaining_length(bytearray(b"\x30\x80"), 1, 2) is None
    assert _remaining_length(bytearray(b"\x30\xff\xff\xff\xff\x01"), 1, 6) == (-1, 5)


def test_link_reassembles_packets_split_at_any_byte() -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        packets: list[tuple[int, bytes]] = []
        link = _Link(
            lambda header, body: packets.append((header, body)),
            lambda mid: packets.append((0x40, mid.to_bytes(2, "big"))),
        )
        stream = encode_publish(b"t", b"a" * 300, 1, False, 1) + b"\x40\x02\x00\x01\xd0\x00"
        for i in range(len(stream)):
            link.data_received(stream[i : i + 1])
        return packets

    packets = asyncio.run(scenario())
    assert [header for header, _ in packets] == [0x32, 0x40, 0xD0]
    assert packets[0][1].endswith(b"a" * 300)


@asynccontextmanager
async def running(client: MqttClient, connect: bool = True) -> AsyncIterator[MqttClient]:
    client.start()
    if connect:
        assert await client.wait_connected(5)
    try:
        yield client
    finally:
        await client.stop()


def make_client(port: int, **options: object) -> MqttClient:
    defaults: dict[str, object] = {"keepalive": 5, "backoff": (0.05, 0.2)}
    return MqttClient(BrokerAddress(port=port), "test-client", **{**defaults, **options})  # type: ignore[arg-type]


@asynccontextmanager
async def one_delivered(port: int) -> AsyncIterator[tuple[MqttClient, MqttClient, Message]]:
    """A reader subscribed to ``ingest/#`` and a writer; once the reader's subscription is in
    place, the writer publishes one message: yields (reader, writer, the message received)."""
    received: list[Message] = []
    reader = make_client(port, subscriptions=[("ingest/#", 1)], on_message=received.append)
    reader.client_id = "reader"
    async with running(reader), running(make_client(port)) as writer:
        await asyncio.to_thread(wait_until, lambda: reader.inflight == 0, timeout=5)  # SUBACK
        await asyncio.wait_for(writer.publish("ingest/1", b"payload"), 2)
        await asyncio.to_thread(wait_until, lambda: bool(received), timeout=5)
        assert len(received) == 1
        yield reader, writer, received[0]


def test_publish_resolves_on_puback_and_incoming_messages_wait_for_our_ack(
    broker: Mosquitto,
) -> None:
    async def scenario() -> Message:
        async with one_delivered(broker.port) as (reader, writer, message):
            assert reader.ack(message)
            assert writer.stats.acked >= 1
            return message

    message = asyncio.run(scenario())
    assert (message.topic, message.payload, message.qos) == ("ingest/1", b"payload", 1)


def test_publish_without_a_connection_is_refused_at_once(broker: Mosquitto) -> None:
    broker.stop()

    async def scenario() -> None:
        async with running(make_client(broker.port), connect=False) as client:
            # It tried to connect:
            await asyncio.to_thread(wait_until, lambda: bool(client.stats.last_error), timeout=5)
            with pytest.raises(NotConnected):
                client.publish("track/1", b"x")
            assert client.status.startswith("unreachable: ")
            assert "Connect call failed" in client.status

    asyncio.run(scenario())


def test_keepalive_detects_a_silent_broker_and_reconnects() -> None:
    silent = SilentBroker()

    async def scenario() -> None:
        async with silent.serving() as port:
            async with running(make_client(port, keepalive=1)) as client:
                await asyncio.to_thread(wait_until, lambda: silent.connections >= 2, timeout=5)
                assert client.stats.disconnects >= 1
                assert b"\xc0\x00" in silent.received  # it did ping first

    asyncio.run(scenario())


def test_inflight_window_is_bounded_and_unacked_messages_fail_on_disconnect() -> None:
    silent = SilentBroker()

    async def scenario() -> None:
        async with silent.serving() as port:
            async with running(make_client(port, max_inflight=3)) as client:
                pending = [client.publish("track/1", b"x") for _ in range(3)]
                with pytest.raises(InflightFull):
                    client.publish("track/1", b"x")
                client.drop_connection("test")
                results = await asyncio.gather(*pending, return_exceptions=True)
                assert all(isinstance(r, ConnectionLost) for r in results)

    asyncio.run(scenario())


def test_refused_credentials_are_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    refusing = SilentBroker(connack_code=5)

    async def scenario() -> None:
        async with refusing.serving() as port:
            async with running(make_client(port), connect=False) as client:
                await asyncio.to_thread(wait_until, lambda: refusing.connections >= 2, timeout=5)
                assert not client.connected
                assert client.status == "refused: not authorised"

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert "refused: not authorised" in caplog.text
    assert "unreachable" not in caplog.text


def test_invalid_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_inflight"):
        MqttClient(BrokerAddress(), "x", max_inflight=70_000)


def test_a_message_from_a_dropped_connection_is_not_acknowledged_on_the_next(
    broker: Mosquitto,
) -> None:
    async def scenario() -> None:
        async with one_delivered(broker.port) as (reader, _writer, old):
            reader.drop_connection("test")
            await asyncio.to_thread(
                wait_until, lambda: reader.stats.connects >= 2 and reader.connected, timeout=5
            )

            assert reader.ack(old) is False

    asyncio.run(scenario())


def test_overdue_publishes_fail_even_when_the_event_loop_runs_late() -> None:
    silent = SilentBroker()

    async def hog(stop: asyncio.Event) -> None:
        while not stop.is_set():
            time.sleep(0.2)  # a handler that blocks the loop: every tick comes late
            await asyncio.sleep(0)

    async def scenario() -> float:
        async with silent.serving() as port:
            async with running(make_client(port, ack_timeout=0.3)) as client:
                stop = asyncio.Event()
                hogging = asyncio.create_task(hog(stop))
                started = time.monotonic()
                with pytest.raises(MqttError):
                    await client.publish("track/1", b"x")
                stop.set()
                await hogging
                return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def test_an_oversize_publish_is_skipped_as_it_arrives_acknowledged_and_counted() -> None:
    received: list[Message] = []

    async def scenario() -> tuple[MqttClient, RecordingTransport, int]:
        client = MqttClient(BrokerAddress(), "c", on_message=received.append, max_packet=1024)
        link = _Link(client._on_packet, client._on_puback, 1024, client._on_oversize)
        transport = RecordingTransport()
        link.connection_made(transport)
        client._link, client._connected = link, True
        big = encode_publish(b"ingest/1", b"x" * 10_000_000, 1, False, 42)
        small = encode_publish(b"ingest/1", b"ok", 1, False, 43)
        stream, largest = big + small, 0
        for pos in range(0, len(stream), 65_536):
            link.data_received(stream[pos : pos + 65_536])
            largest = max(largest, len(link._buffer))
        await asyncio.sleep(0)  # let the coalesced PUBACK go out
        return client, transport, largest

    client, transport, largest = asyncio.run(scenario())

    assert client.stats.oversize == 1
    assert [m.payload for m in received] == [b"ok"]
    assert bytes(transport.written) == b"\x40\x02\x00\x2a"  # PUBACK for the dropped one
    assert largest == 0  # never held: the 10 MB body went by in 64 KiB reads
    assert not transport.aborted


def test_an_oversize_packet_other_than_publish_closes_the_link() -> None:
    async def scenario() -> RecordingTransport:
        link = _Link(lambda header, body: None, lambda mid: None, 16, lambda *a: None)
        transport = RecordingTransport()
        link.connection_made(transport)
        link.data_received(bytes([0x90, 100]) + b"\x00" * 10)  # a 100-byte SUBACK
        return transport

    assert asyncio.run(scenario()).aborted


def test_malformed_packets_from_the_broker_close_the_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> RecordingTransport:
        client = MqttClient(BrokerAddress(), "c")
        link = _Link(client._on_packet, client._on_puback)
        transport = RecordingTransport()
        link.connection_made(transport)
        client._link = link
        link.data_received(bytes([0x36, 0]))  # PUBLISH with QoS 3 and no topic
        return transport

    assert asyncio.run(scenario()).aborted
    assert "QoS 3" in caplog.text
