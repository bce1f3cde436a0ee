"""The worker's broker connection: 504 when sent but not acknowledged, 503 when not sent;
its session policy, subscriptions and consumer are the ones it was built with."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from devkit.broker import Mosquitto
from devkit.waiting import wait_until
from tests.helpers.mqtt_peer import Peer
from tests.helpers.silent_broker import SilentBroker
from tracker_api.config import load_settings
from tracker_api.errors import PublishFailed, PublishOutcomeUnknown
from tracker_api.mqtt import Message
from tracker_api.service.broker import Acknowledger, BrokerConnection, Session


def test_no_puback_within_the_timeout_is_outcome_unknown_and_the_silent_link_dropped() -> None:
    silent = SilentBroker()

    async def scenario() -> float:
        async with silent.serving() as port:
            settings = load_settings(mqtt_url=f"mqtt://127.0.0.1:{port}", publish_timeout=0.3)
            async with BrokerConnection(settings, "t-1", session=Session.CLEAN) as connection:
                assert connection.connected
                started = time.monotonic()
                with pytest.raises(PublishOutcomeUnknown):
                    await connection.publish("track/1", b"{}")
                elapsed = time.monotonic() - started
                # The link said nothing for a whole timeout: dropped and dialled again.
                await asyncio.to_thread(wait_until, lambda: silent.connections >= 2, timeout=5)
            return elapsed

    # Answered by the publish timeout, not by the keepalive (15 s: 22.5 s to give up).
    assert asyncio.run(scenario()) < 5.0


def test_a_connection_without_broker_refuses_immediately(tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = load_settings(
            mqtt_url="mqtt://127.0.0.1:1", publish_timeout=0.3, state_dir=tmp_path
        )
        # Does not raise: the API serves 503s meanwhile.
        async with BrokerConnection.for_worker(settings, session=Session.CLEAN) as connection:
            assert not connection.connected
            with pytest.raises(PublishFailed):
                await connection.publish("track/1", b"{}")

    asyncio.run(scenario())


class Recorder:
    """A consumer that acknowledges what it gets at once."""

    def __init__(self, acks: Acknowledger) -> None:
        self.acks = acks
        self.messages: list[Message] = []
        self.drained = False

    def handle(self, message: Message) -> None:
        self.messages.append(message)
        assert self.acks.holds(message)
        self.acks.ack(message)

    @property
    def busy(self) -> bool:
        return False

    async def drain(self, timeout: float) -> None:
        self.drained = True


@pytest.mark.parametrize("session", list(Session))
def test_the_connection_subscribes_and_consumes_as_built(
    broker: Mosquitto, tmp_path: Path, session: Session
) -> None:
    consumers: list[Recorder] = []

    def consumer(connection: BrokerConnection) -> Recorder:
        consumers.append(Recorder(connection))
        return consumers[-1]

    async def scenario() -> None:
        settings = load_settings(mqtt_url=broker.url, state_dir=tmp_path)
        connection = BrokerConnection(
            settings, "c-1", session=session, subscriptions=[("ingest/#", 1)], consumer=consumer
        )
        async with connection:
            # Same connection, sent after the SUBSCRIBE: the broker has subscribed us.
            await connection.publish("ingest/1", b"hello")
            await asyncio.to_thread(wait_until, lambda: connection.received == 1, timeout=5)
        (recorder,) = consumers
        assert [m.payload for m in recorder.messages] == [b"hello"]
        assert recorder.drained

    asyncio.run(scenario())
    # Mosquitto logs the clean-session flag of every connect as "c1" or "c0".
    flag = "c1" if session is Session.CLEAN else "c0"
    assert f"as c-1 (p2, {flag}, k15)" in broker.log()


def test_the_status_topic_says_online_then_offline(broker: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        settings = load_settings(mqtt_url=broker.url, state_dir=tmp_path)
        async with BrokerConnection(settings, "c-2", session=Session.CLEAN) as connection:
            assert connection.connected

    with Peer(broker.port, "tracker/status/#") as peer:
        asyncio.run(scenario())
        messages = peer.wait_for(2)

    assert [(m.topic, m.payload, m.retain) for m in messages] == [
        ("tracker/status/c-2", b"online", False),  # live: the retain flag is cleared
        ("tracker/status/c-2", b"offline", False),
    ]


class SlowToDrain(Recorder):
    """Holds the connection in its exit until released, as a consumer with work does."""

    def __init__(self, acks: Acknowledger) -> None:
        super().__init__(acks)
        self.draining = asyncio.Event()
        self.release = asyncio.Event()

    async def drain(self, timeout: float) -> None:
        self.draining.set()
        await self.release.wait()


def test_a_connection_on_its_way_out_leaves_its_client_id_to_the_successor(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A lease holder that lost its lease drains while the next holder connects with the
    same client id: the broker hands the id over, and the old one must not take it back."""

    async def scenario() -> None:
        settings = load_settings(mqtt_url=broker.url, state_dir=tmp_path)
        consumers: list[SlowToDrain] = []

        def consumer(acks: Acknowledger) -> SlowToDrain:
            consumers.append(SlowToDrain(acks))
            return consumers[-1]

        old = BrokerConnection(settings, "leader", session=Session.PERSISTENT, consumer=consumer)
        await old.__aenter__()
        assert old.connected
        leaving = asyncio.create_task(old.__aexit__(None, None, None))
        await consumers[0].draining.wait()
        async with BrokerConnection(settings, "leader", session=Session.PERSISTENT) as new:
            assert new.connected
            # The old link is taken over; a reconnect would come within the first backoff
            # (0.1 s): give it ten times that to show none comes.
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                assert new.connected, "the successor lost its client id"
                await asyncio.sleep(0.05)
            assert old._client.stats.connects == 1  # noqa: SLF001
            consumers[0].release.set()
            await leaving

    asyncio.run(scenario())
