"""Publishing events to the broker: QoS 1, answered only after the PUBACK.

``Publisher`` is the small interface the rest of the service uses; ``MqttPublisher`` is
the real one (one connection per worker process), tests may pass their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from . import metrics
from .client_ids import ClientIdSlot
from .config import Settings
from .errors import PublishFailed, PublishOutcomeUnknown, TrackerError
from .limits import largest_packet
from .mqtt import ConnectionLost, MqttClient, MqttError, PublishTimeout, Will

logger = logging.getLogger(__name__)

STATUS_TOPIC = "tracker/status/{client_id}"


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def broker_status(self) -> str:
        """``connected``, or why not: ``refused: <reason>``, ``unreachable: <why>``."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None:
        """Return once the broker acknowledged; raise ``PublishFailed`` when nothing was
        sent, ``PublishOutcomeUnknown`` when it was sent but not acknowledged in time."""

    async def publish_many(self, topic: str, payloads: list[bytes]) -> list[TrackerError | None]:
        """Publish each payload as its own message, all at once; once every one settled,
        the outcome of each, in order: None when acknowledged, else what ``publish``
        would have raised for it."""


class MqttPublisher:
    def __init__(
        self,
        settings: Settings,
        client_id: str | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        clean_session: bool | None = None,
    ) -> None:
        self._slot = (
            None if client_id else ClientIdSlot(settings.client_id_prefix, settings.state_dir)
        )
        self.client_id = client_id or self._slot.client_id  # type: ignore[union-attr]
        self.status_topic = STATUS_TOPIC.format(client_id=self.client_id)
        self.timeout = settings.publish_timeout
        self.client = MqttClient(
            settings.broker,
            self.client_id,
            keepalive=settings.mqtt_keepalive,
            will=Will(self.status_topic, b"offline", qos=1, retain=True),
            max_inflight=settings.max_inflight,
            ack_timeout=settings.publish_timeout,
            on_connect=self._announce_online,
            # Subscribed (ingest): keep the session, so unacknowledged device messages
            # survive a crash of this worker.
            clean_session=not subscriptions if clean_session is None else clean_session,
            subscriptions=subscriptions,
            max_packet=largest_packet(settings.max_data_bytes),
        )
        self.client.stats.state_listeners.append(self._on_state)

    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def broker_status(self) -> str:
        return self.client.status

    def _on_state(self, connected: bool) -> None:
        metrics.BROKER_CONNECTED.set(1 if connected else 0)
        if not connected:
            metrics.BROKER_RECONNECTS.inc()

    def _announce_online(self) -> None:
        future = self.client.publish(self.status_topic, b"online", qos=1, retain=True)
        future.add_done_callback(lambda f: f.exception())

    async def start(self) -> None:
        self.client.start()
        # Serve at once either way; give a local broker a moment so the first requests
        # after start are not refused needlessly.
        await self.client.wait_connected(timeout=2.0)

    async def stop(self) -> None:
        if self.client.connected:
            try:
                await asyncio.wait_for(
                    self.client.publish(self.status_topic, b"offline", qos=1, retain=True), 1.0
                )
            except (MqttError, TimeoutError):
                pass
        await self.client.stop(drain_timeout=self.timeout)
        if self._slot is not None:
            self._slot.release()

    async def publish(self, topic: str, payload: bytes) -> None:
        started = time.perf_counter()
        try:
            await self.client.publish(topic, payload)
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
                sent.append(self.client.publish(topic, payload))
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


def refusal(error: BaseException) -> TrackerError:
    """What a failed publish means for the client."""
    if isinstance(error, PublishTimeout | ConnectionLost):  # sent: the broker may have it
        return PublishOutcomeUnknown()
    return PublishFailed()  # not connected or window full: nothing was sent
