"""The worker's connection to the broker, and the small interfaces the rest of the service
sees of it.

``Publisher`` is what the event path needs (publish QoS 1, answered after the PUBACK);
``Acknowledger`` is what ingest needs for the device messages it receives. One
``BrokerConnection`` is both. Its session policy and subscriptions are given when it is
built, its consumer then or with ``consume_with`` before ``async with`` runs it; tests
pass their own ``Publisher`` instead.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from tracker_api import metrics
from tracker_api.config import Settings
from tracker_api.errors import PublishFailed, PublishOutcomeUnknown, TrackerError
from tracker_api.mqtt import ConnectionLost, Message, MqttClient, MqttError, PublishTimeout, Will
from tracker_api.service.client_ids import ClientIdSlot
from tracker_contract.limits import largest_packet

STATUS_TOPIC = "tracker/status/{client_id}"
# Serve at once either way, but give a local broker a moment so that the first requests
# after start are not refused needlessly.
CONNECT_GRACE = 2.0


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def broker_status(self) -> str:
        """``connected``, or why not: ``refused: <reason>``, ``unreachable: <why>``."""

    async def publish(self, topic: str, payload: bytes) -> None:
        """Return once the broker acknowledged; raise ``PublishFailed`` when nothing was
        sent, ``PublishOutcomeUnknown`` when it was sent but not acknowledged in time."""

    async def publish_many(self, topic: str, payloads: list[bytes]) -> list[TrackerError | None]:
        """Publish each payload as its own message, all at once; once every one settled,
        the outcome of each, in order: None when acknowledged, else what ``publish``
        would have raised for it."""


class Acknowledger(Protocol):
    def holds(self, message: Message) -> bool:
        """Whether ``message`` can still be acknowledged: it came on the live connection."""

    def ack(self, message: Message) -> bool:
        """Acknowledge ``message``; False when its connection is gone (the broker will
        hand it over again)."""


class Consumer(Protocol):
    """Handles the messages of a connection's subscriptions."""

    def handle(self, message: Message) -> None: ...

    @property
    def busy(self) -> bool:
        """Messages are still in hand."""

    async def drain(self, timeout: float) -> None:
        """Return once the messages in hand are done, or after ``timeout`` seconds."""


class Session(enum.Enum):
    """What the broker keeps of us between connections."""

    CLEAN = True  # nothing: the choice of a connection that only publishes
    PERSISTENT = False  # subscriptions and unacknowledged messages, under a stable id


class BrokerConnection:
    """One connection to the broker: publishes with a status topic and last will
    (``tracker/status/<clientId>``), and feeds what its subscriptions bring to the
    consumer that ``consumer(self)`` makes when it starts (when whatever the consumer
    publishes through, this connection included, exists)."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        *,
        session: Session,
        subscriptions: Sequence[tuple[str, int]] = (),
        consumer: Callable[[BrokerConnection], Consumer] | None = None,
        on_close: Callable[[], None] | None = None,
        publishing: bool = True,
    ) -> None:
        self.client_id = client_id
        self.status_topic = STATUS_TOPIC.format(client_id=client_id)
        self.timeout = settings.publish_timeout
        self._make_consumer = consumer
        self._consumer: Consumer | None = None
        self._started = False
        self._on_close = on_close
        self._client = MqttClient(
            settings.brokers,
            client_id,
            keepalive=settings.mqtt_keepalive,
            will=Will(self.status_topic, b"offline", qos=1, retain=True),
            max_inflight=settings.max_inflight,
            # A consumer's connection (publishing=False) publishes nothing a request waits
            # for: a slow PUBACK (a broker busy handing over a large backlog) must not make
            # it drop the link and start the backlog over.
            ack_timeout=settings.publish_timeout if publishing else None,
            on_connect=self._announce_online,
            clean_session=session.value,
            subscriptions=subscriptions,
            on_message=self._deliver,
            max_packet=largest_packet(settings.max_data_bytes),
        )
        if publishing:  # the broker gauges describe the connection events go through
            self._client.stats.state_listeners.append(self._on_state)

    @classmethod
    def for_worker(
        cls,
        settings: Settings,
        *,
        session: Session,
        subscriptions: Sequence[tuple[str, int]] = (),
    ) -> BrokerConnection:
        """Under ``TRACKER_CLIENT_ID``, or the worker's own slot id (held until closed);
        its consumer, if any, comes with ``consume_with``."""
        release: Callable[[], None] | None = None
        client_id = settings.client_id
        if not client_id:
            slot = ClientIdSlot(settings.worker_client_id_prefix, settings.state_dir)
            client_id, release = slot.client_id, slot.release
        return cls(
            settings,
            client_id,
            session=session,
            subscriptions=subscriptions,
            on_close=release,
        )

    def consume_with(self, consumer: Callable[[BrokerConnection], Consumer]) -> None:
        """Feed the subscriptions' messages to ``consumer(self)``, made when the connection
        starts: for a consumer of what is built after the connection, such as a service
        publishing through it. Only before the connection starts."""
        if self._started:
            raise RuntimeError(f"{self.client_id}: a consumer must come before the start")
        self._make_consumer = consumer

    # -- Publisher ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client.connected

    @property
    def broker_status(self) -> str:
        return self._client.status

    async def publish(self, topic: str, payload: bytes) -> None:
        started = time.perf_counter()
        try:
            await self._client.publish(topic, payload)
        except MqttError as error:
            raise refusal(error) from error
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)

    async def publish_many(self, topic: str, payloads: list[bytes]) -> list[TrackerError | None]:
        # The client's own futures, awaited together: a task per message would cost more
        # than the message (batches, docs/adr/0012-device-http-api.md).
        started = time.perf_counter()
        sent: list[asyncio.Future[None] | TrackerError] = []
        for payload in payloads:
            try:
                sent.append(self._client.publish(topic, payload))
            except MqttError as error:
                sent.append(refusal(error))
        futures = [item for item in sent if isinstance(item, asyncio.Future)]
        if futures:
            await asyncio.wait(futures)
        elapsed = time.perf_counter() - started
        outcomes: list[TrackerError | None] = []
        for item in sent:
            if isinstance(item, TrackerError):
                outcomes.append(item)
            elif item.cancelled():  # the client stopped with it in flight
                outcomes.append(PublishOutcomeUnknown())
            elif (failure := item.exception()) is not None:
                outcomes.append(refusal(failure))
            else:
                metrics.PUBLISH_SECONDS.observe(elapsed)
                outcomes.append(None)
        return outcomes

    # -- Acknowledger ------------------------------------------------------------------

    def holds(self, message: Message) -> bool:
        return self._client.holds(message)

    def ack(self, message: Message) -> bool:
        return self._client.ack(message)

    @property
    def refusal(self) -> str:
        """``""``, or ``refused: <why>`` once the broker refused one of the subscriptions."""
        for topic, why in self._client.refused.items():
            return f"refused: {topic}: {why}"
        return ""

    # -- what retiring a member needs --------------------------------------------------

    @property
    def received(self) -> int:
        """Messages received from the broker so far."""
        return self._client.stats.received

    @property
    def busy(self) -> bool:
        """The consumer still has messages in hand."""
        return self._consumer is not None and self._consumer.busy

    async def wait_connected(self, timeout: float) -> bool:
        return await self._client.wait_connected(timeout)

    async def unsubscribe(self, topics: Sequence[str], timeout: float) -> None:
        await asyncio.wait_for(self._client.unsubscribe(topics), timeout)

    # -- lifecycle ---------------------------------------------------------------------

    def _deliver(self, message: Message) -> None:
        if self._consumer is None:
            self._client.ack(message)  # nobody asked for it: never let it loop
        else:
            self._consumer.handle(message)

    def _on_state(self, connected: bool) -> None:
        metrics.BROKER_CONNECTED.set(1 if connected else 0)
        if not connected:
            metrics.BROKER_DISCONNECTS.inc()

    def _announce_online(self) -> None:
        future = self._client.publish(self.status_topic, b"online", qos=1, retain=True)
        future.add_done_callback(lambda f: f.exception())

    async def __aenter__(self) -> BrokerConnection:
        self._started = True
        if self._make_consumer is not None:
            self._consumer = self._make_consumer(self)
        self._client.start()
        await self._client.wait_connected(CONNECT_GRACE)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Draining can take a while; should the broker hand our client id to a successor
        # meanwhile (a new lease holder), reconnecting would take it back, over and over,
        # and every swap redelivers the messages in hand.
        self._client.stop_reconnecting()
        try:
            if self._consumer is not None:
                # Their envelopes are publishes too: let them finish before we go.
                await self._consumer.drain(timeout=self.timeout * 2)
            if self._client.connected:
                offline = self._client.publish(self.status_topic, b"offline", qos=1, retain=True)
                try:
                    await asyncio.wait_for(offline, 1.0)
                except (MqttError, TimeoutError):
                    pass
            await self._client.stop(drain_timeout=self.timeout)
        finally:
            if self._on_close is not None:
                self._on_close()


def refusal(error: BaseException) -> TrackerError:
    """What a failed publish means for the client."""
    if isinstance(error, PublishTimeout | ConnectionLost):  # sent: the broker may have it
        return PublishOutcomeUnknown()
    return PublishFailed()  # not connected or window full: nothing was sent
