"""Publishing events to the broker: QoS 1, answered only after the PUBACK.

``Publisher`` is the small interface the rest of the service uses; ``MqttPublisher`` is
the real one (one connection per worker process), tests may pass their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Protocol

from . import metrics
from .config import Settings
from .errors import PublishFailed
from .mqtt import ConnectionLost, InflightFull, Message, MqttClient, NotConnected, Will

logger = logging.getLogger(__name__)

STATUS_TOPIC = "tracker/status/{client_id}"


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None:
        """Return once the broker acknowledged; raise ``PublishFailed`` otherwise."""


def make_client_id(prefix: str) -> str:
    """Unique per process and readable in the broker's log: prefix-host-pid."""
    host = socket.gethostname().split(".")[0][:20] or "host"
    return f"{prefix}-{host}-{os.getpid()}"


class MqttPublisher:
    def __init__(self, settings: Settings, client_id: str | None = None) -> None:
        self.client_id = client_id or make_client_id(settings.client_id_prefix)
        self.status_topic = STATUS_TOPIC.format(client_id=self.client_id)
        self.timeout = settings.publish_timeout
        self.client = MqttClient(
            settings.broker,
            self.client_id,
            keepalive=settings.mqtt_keepalive,
            will=Will(self.status_topic, b"offline", qos=1, retain=True),
            max_inflight=settings.max_inflight,
            on_connect=self._announce_online,
        )
        self.client.stats.state_listeners.append(self._on_state)

    @property
    def connected(self) -> bool:
        return self.client.connected

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
            except (ConnectionLost, NotConnected, InflightFull, asyncio.TimeoutError):
                pass
        await self.client.stop(drain_timeout=self.timeout)

    async def publish(self, topic: str, payload: bytes) -> None:
        started = time.perf_counter()
        try:
            future = self.client.publish(topic, payload)
        except (NotConnected, InflightFull) as error:
            raise PublishFailed() from error
        try:
            await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            # Nothing at all from the broker for a whole timeout while we wait: the link
            # is half-open. Don't wait for the keepalive to notice.
            if self.client.link_silent_for() >= self.timeout:
                self.client.drop_connection("no answer from the broker within the publish timeout")
            raise PublishFailed() from None
        except ConnectionLost as error:
            raise PublishFailed() from error
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)

