"""The lean MQTT client through its public API, against real Mosquitto and scripted peers
(the wire format itself is tested in test_mqtt_codec.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devkit.broker import Mosquitto
from devkit.net import free_port
from devkit.waiting import wait_until
from tests.helpers.silent_broker import SilentBroker
from tracker_api.mqtt import (
    BrokerAddress,
    ConnectionLost,
    InflightFull,
    Message,
    MqttClient,
    MqttError,
    NotConnected,
)
from tracker_api.mqtt.codec import encode_publish
from tracker_contract.nodes import Rotation


@asynccontextmanager
async def running(client: MqttClient, connect: bool = True) -> AsyncIterator[MqttClient]:
    async with client:
        if connect:
            assert await client.wait_connected(5)
        yield client


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

    # Far below the 7.5 s the keepalive (5 s) would take to give up on the link.
    assert asyncio.run(scenario()) < 4.0


def test_an_oversize_publish_is_acknowledged_counted_and_dropped() -> None:
    received: list[Message] = []
    big = encode_publish(b"ingest/1", b"x" * 2_000_000, 1, False, 42)
    peer = SilentBroker(script=big + encode_publish(b"ingest/1", b"ok", 1, False, 43))

    async def scenario() -> MqttClient:
        async with peer.serving() as port:
            client = make_client(port, on_message=received.append, max_packet=1024)
            async with running(client):
                await asyncio.to_thread(wait_until, lambda: bool(received), timeout=5)
                assert client.ack(received[0])
                await asyncio.to_thread(
                    wait_until, lambda: b"\x40\x02\x00\x2b" in peer.received, timeout=5
                )
                return client

    client = asyncio.run(scenario())
    assert client.stats.oversize == 1
    assert [m.payload for m in received] == [b"ok"]
    assert b"\x40\x02\x00\x2a" in peer.received  # PUBACK for the dropped one: no loop
    assert client.stats.connects == 1  # the link was kept


def test_a_malformed_packet_from_the_broker_closes_the_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = SilentBroker(script=bytes([0x36, 0]))  # PUBLISH with QoS 3 and no topic

    async def scenario() -> None:
        async with peer.serving() as port, running(make_client(port), connect=False):
            await asyncio.to_thread(
                wait_until, lambda: peer.connections >= 2, timeout=5
            )  # and dialled again

    asyncio.run(scenario())
    assert "QoS 3" in caplog.text


def test_leaving_the_context_waits_for_the_acknowledgements_in_flight(broker: Mosquitto) -> None:
    async def scenario() -> list[object]:
        async with running(make_client(broker.port)) as client:
            pending = [client.publish("track/1", b"x") for _ in range(500)]
        assert not client.connected
        return await asyncio.gather(*pending, return_exceptions=True)

    assert asyncio.run(scenario()) == [None] * 500


def test_waiting_for_a_connection_answers_when_it_comes_or_at_the_timeout(
    broker: Mosquitto,
) -> None:
    async def scenario() -> tuple[bool, bool]:
        broker.stop()
        async with make_client(broker.port) as client:
            down = await client.wait_connected(0.2)
            await asyncio.to_thread(broker.start)
            up = await client.wait_connected(10)
        return down, up

    assert asyncio.run(scenario()) == (False, True)


class RefusingSubscriptions(SilentBroker):
    """Accepts every connection and refuses its SUBSCRIBE: with a SUBACK 0x80, or (as
    RabbitMQ does) by hanging up; stays connected otherwise."""

    def __init__(self, hang_up: bool) -> None:
        super().__init__()
        self.hang_up = hang_up
        self.subscribes = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(bytes([0x20, 2, 0, 0]))
        while chunk := await reader.read(65536):
            if chunk[0] >> 4 == 8:  # SUBSCRIBE: packet id in bytes 2-3 (short packets)
                self.subscribes += 1
                if self.hang_up:
                    break
                writer.write(bytes([0x90, 3]) + chunk[2:4] + b"\x80")
        writer.close()


@pytest.mark.parametrize(
    ("hang_up", "reason"),
    [(False, "SUBACK 0x80"), (True, "the broker closes the connection on SUBSCRIBE")],
)
def test_a_refused_subscription_is_reported_and_never_retried_while_publishing_goes_on(
    hang_up: bool, reason: str
) -> None:
    broker = RefusingSubscriptions(hang_up)

    async def scenario() -> None:
        async with broker.serving() as port:
            options = {"subscriptions": [("$share/tracker/ingest/+", 1)]}
            async with running(make_client(port, **options)) as client:
                await asyncio.to_thread(wait_until, lambda: client.refused, timeout=5)
                assert client.refused == {"$share/tracker/ingest/+": reason}
                assert await client.wait_connected(5)
                connects = client.stats.connects
                client.publish("track/1", b"x", qos=0)  # the connection still publishes
                await asyncio.sleep(0.3)  # no reconnect loop: nothing to wait for
                assert client.stats.connects == connects and client.connected
                assert broker.subscribes == (2 if hang_up else 1)

    asyncio.run(scenario())


# -- several nodes of one cluster ------------------------------------------------------

SLOW_BACKOFF = (5.0, 5.0)
"""Any wait between nodes would take 2.5 s or more: answers within 2 s prove none."""


def nodes(*ports: int) -> list[BrokerAddress]:
    return [BrokerAddress(port=port) for port in ports]


def test_a_refusing_and_an_unreachable_node_are_passed_over_at_once(broker: Mosquitto) -> None:
    refusing = SilentBroker(connack_code=3)

    async def scenario() -> None:
        async with refusing.serving() as refusing_port:
            client = MqttClient(
                nodes(refusing_port, free_port(), broker.port), "c", backoff=SLOW_BACKOFF
            )
            async with running(client, connect=False):
                assert await client.wait_connected(2.0), client.status
                assert client.status == f"connected to 127.0.0.1:{broker.port}"
                await asyncio.wait_for(client.publish("track/1", b"x"), 2)

    asyncio.run(scenario())


def test_losing_the_node_moves_to_the_next_at_once(broker: Mosquitto, tmp_path: Path) -> None:
    other = Mosquitto(tmp_path / "other")
    other.start()
    by_port = {broker.port: broker, other.port: other}

    async def scenario() -> None:
        client = MqttClient(nodes(broker.port, other.port), "c", backoff=SLOW_BACKOFF)
        async with running(client):
            first = client.address.port
            by_port[first].kill()
            await asyncio.to_thread(wait_until, lambda: client.stats.connects == 2, timeout=2)
            survivor = next(port for port in by_port if port != first)
            assert client.status == f"connected to 127.0.0.1:{survivor}"
            assert client.stats.disconnects == 1
            await asyncio.wait_for(client.publish("track/1", b"y"), 2)

    try:
        asyncio.run(scenario())
    finally:
        other.kill()


class CountingPacing:
    def __init__(self) -> None:
        self.waits = 0

    def next(self) -> float:
        self.waits += 1
        return float(self.waits)

    def reset(self) -> None:
        self.waits = 0


@given(
    size=st.integers(1, 5),
    start=st.integers(0, 1000),
    outcomes=st.lists(st.booleans(), max_size=40),
)
def test_a_rotation_waits_only_after_every_node_failed_in_a_row(
    size: int, start: int, outcomes: list[bool]
) -> None:
    pacing = CountingPacing()
    rotation = Rotation(list(range(size)), pacing, start=start)
    failed_in_a_row = 0
    for connected in outcomes:
        before = rotation.current
        if connected:
            rotation.connected()
            failed_in_a_row = 0
            assert (rotation.current, pacing.waits) == (before, 0)
            continue
        waits = pacing.waits
        delay = rotation.failed()
        failed_in_a_row += 1
        assert rotation.current == (before + 1) % size  # always the next node
        if failed_in_a_row % size:
            assert delay == 0 and pacing.waits == waits
        else:  # a whole round failed: the pacing decides, and grows round after round
            assert delay == pacing.waits == failed_in_a_row // size


def test_a_rotation_needs_a_node() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        Rotation([], CountingPacing())
