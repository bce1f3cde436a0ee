"""Publishing events to the broker: QoS 1, answered only after the PUBACK.

``Publisher`` is the small interface the rest of the service uses; ``MqttPublisher`` is
the real one (one connection per worker process), tests may pass their own.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

from . import metrics
from .config import Settings
from .errors import PublishFailed, PublishOutcomeUnknown
from .mqtt import ConnectionLost, MqttClient, MqttError, PublishTimeout, Will

logger = logging.getLogger(__name__)

STATUS_TOPIC = "tracker/status/{client_id}"


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None:
        """Return once the broker acknowledged; raise ``PublishFailed`` when nothing was
        sent, ``PublishOutcomeUnknown`` when it was sent but not acknowledged in time."""


class ClientIdSlot:
    """A client id unique among live processes on this host and stable across restarts:
    ``<prefix>-<host>-<slot>``, where the slot is the lowest free one (an flock'ed file).

    Stability matters for ingest: the broker keeps the persistent session of a worker that
    died, with the device messages it had not acknowledged, and hands them to the worker
    that takes the same slot next.
    """

    def __init__(self, prefix: str, lock_dir: Path | None = None, max_slots: int = 1024) -> None:
        host = socket.gethostname().split(".")[0][:20] or "host"
        directory = lock_dir or Path(tempfile.gettempdir()) / f"{prefix}-client-slots"
        directory.mkdir(parents=True, exist_ok=True)
        for slot in range(max_slots):
            handle = open(directory / f"{host}-{slot}.lock", "w")  # noqa: SIM115 - held open
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._handle: IO[str] | None = handle
            self.client_id = f"{prefix}-{host}-{slot}"
            return
        raise RuntimeError(f"no free client id slot in {directory}")  # pragma: no cover

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the lock
            self._handle = None


class MqttPublisher:
    def __init__(
        self,
        settings: Settings,
        client_id: str | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._slot = None if client_id else ClientIdSlot(settings.client_id_prefix)
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
            clean_session=not subscriptions,
            subscriptions=subscriptions,
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
