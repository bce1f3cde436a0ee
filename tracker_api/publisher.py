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
from .errors import PublishFailed, PublishOutcomeUnknown
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
            metrics.BROKER_DISCONNECTS.inc()

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
        except (PublishTimeout, ConnectionLost) as error:  # sent: the broker may have it
            raise PublishOutcomeUnknown() from error
        except MqttError as error:  # not connected or window full: nothing was sent
            raise PublishFailed() from error
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
