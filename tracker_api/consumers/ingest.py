"""MQTT-native ingestion: devices publish to ``ingest/<accountId>``, the tracker validates
the message exactly as an HTTP request and republishes the envelope on ``track/<accountId>``.

The device's message is acknowledged only after the envelope was acknowledged, so a crash
in between loses nothing: the broker redelivers it to the same client id (persistent
session). Refused messages are counted (``tracker_requests_total{source="mqtt"}``),
logged and acknowledged, so they never loop.

Tracker processes share the work in one of two modes (``TRACKER_INGEST_MODE``):
``shared``, the shared subscription ``$share/tracker/ingest/+`` on each publishing
connection (docs/adr/0008-mqtt-ingest.md), or ``leader``, one elected tracker consuming
``ingest/+`` on a connection of its own, for brokers without shared subscriptions
(docs/adr/0014-ingest-on-every-broker.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import orjson

from tracker_api import metrics
from tracker_api.config import Settings
from tracker_api.consumers.lease import Lease
from tracker_api.consumers.leased import LEASE_CHECK, LeasedConsumer
from tracker_api.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    TrackerError,
)
from tracker_api.mqtt import Message
from tracker_api.service.broker import Acknowledger
from tracker_api.service.events import EventIds
from tracker_contract import topics
from tracker_contract.backoff import Backoff
from tracker_contract.limits import largest_message

logger = logging.getLogger(__name__)

SUBSCRIPTION = ("$share/tracker/ingest/+", 1)
# ingest/#, not ingest/+: on RabbitMQ a dotted account's ingest/a.b arrives as ingest/a/b.
LEADER_SUBSCRIPTION = (topics.EVERY_INGEST, 1)
# Retrying while the database or the broker's acknowledgement is missing: from 0.1 s up
# to 2 s between attempts; one warning per message, at the fifth attempt.
RETRY_FIRST, RETRY_CAP, RETRY_WARN_AFTER = 0.1, 2.0, 5


def decode(payload: bytes, max_bytes: int) -> tuple[str, str | None]:
    """``(data, eventId)`` from raw UTF-8, or from JSON ``{"data": …, "eventId": …}``."""
    if len(payload) > largest_message(max_bytes):
        raise PayloadTooLarge(f"message larger than {max_bytes} bytes of data")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("payload is not valid UTF-8") from None
    if text.startswith("{"):
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return text, None  # raw text that happens to start with a brace
        if not isinstance(document, dict) or not isinstance(document.get("data"), str):
            raise InvalidRequest('JSON payload must be an object with a string "data"')
        event_id = document.get("eventId")
        if event_id is not None and not isinstance(event_id, str):
            raise InvalidRequest('"eventId" must be a string')
        return document["data"], event_id
    return text, None


class EventTracker(Protocol):
    """What ingest needs of the event service (``events.EventService``)."""

    max_data_bytes: int
    ids: EventIds

    async def track(self, account_id: str, data: str, event_id: str, source: str) -> bytes: ...

    def count(self, source: str, outcome: str) -> None: ...


class Ingest:
    """Processes device messages as tasks, with bounded work when something is missing.

    A retained copy (the broker replaying an old message when we (re)subscribe) is
    acknowledged and dropped: only live messages become events. While the database or the
    broker's acknowledgement is missing, a QoS-0 message is dropped at once (nothing would
    deliver it again, and holding it would grow without bound), and QoS-1 messages wait
    unacknowledged, the broker keeping them, with at most ``max_retrying`` retried at a
    time. Each drop is counted in ``tracker_ingest_dropped_total{reason}``.
    """

    def __init__(
        self,
        service: EventTracker,
        acks: Acknowledger,
        *,
        max_retrying: int = 16,
        max_pending_qos0: int = 1000,
    ) -> None:
        self.service = service
        self.acks = acks
        self.max_pending_qos0 = max_pending_qos0
        self._retry_slots = asyncio.Semaphore(max_retrying)
        self._pending_qos0 = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, message: Message) -> None:
        """Called by the MQTT client for each device message; the work runs as a task."""
        if message.retain:
            # MQTT 3.1.1 sets the flag only on copies sent because of a subscription;
            # a live publish (retained or not) is forwarded with the flag cleared.
            self._drop(message, "retained")
            self.acks.ack(message)
            return
        if message.qos == 0:
            if self._pending_qos0 >= self.max_pending_qos0:
                self._drop(message, "overloaded")
                return
            self._pending_qos0 += 1
        task = asyncio.get_running_loop().create_task(self._process(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop(self, message: Message, reason: str) -> None:
        metrics.INGEST_DROPPED.labels(reason).inc()
        logger.info("ingest from %s dropped: %s", message.topic, reason)

    async def _process(self, message: Message) -> None:
        try:
            await self._track(message)
        finally:
            if message.qos == 0:
                self._pending_qos0 -= 1

    async def _track(self, message: Message) -> None:
        account_id = topics.account_of(message.topic, topics.INGEST) or ""
        try:
            data, event_id = decode(message.payload, self.service.max_data_bytes)
        except TrackerError as error:
            self.service.count("mqtt", error.outcome)
            self._refuse(message, error)
            return
        # One eventId for every attempt: a retry after a publish timeout, whose first
        # copy may have reached the broker after all, is then dropped by subscribers.
        event_id = event_id or self.service.ids.new()
        backoff: Backoff | None = None  # made on the first failure: most never fail
        while True:
            try:
                if backoff is None:
                    await self.service.track(account_id, data, event_id, source="mqtt")
                else:
                    async with self._retry_slots:
                        if not self.acks.holds(message):
                            return  # redelivered on the new connection, processed there
                        await self.service.track(account_id, data, event_id, source="mqtt")
            except ServiceUnavailable as error:
                if message.qos == 0:
                    self._drop(message, "unavailable")
                    return
                if not self.acks.holds(message):
                    # Left unacknowledged: the broker hands it to us again on reconnect.
                    logger.warning("ingest from %s deferred: %s", message.topic, error.detail)
                    return
                # Connected but the database (or the broker's acknowledgement) is missing:
                # nothing would redeliver the message, so keep trying, with a capped pause.
                backoff = backoff or Backoff(RETRY_FIRST, RETRY_CAP)
                if backoff.attempts == RETRY_WARN_AFTER - 1:
                    logger.warning("ingest from %s retrying: %s", message.topic, error.detail)
                await asyncio.sleep(backoff.next())
                continue
            except RateLimited:  # counted by the service, as an HTTP 429 is
                # Over TRACKER_RATE_LIMIT: refused for good, QoS 0 or 1 alike. MQTT 3.1.1
                # has no negative acknowledgement, and holding the message would only
                # have the broker queue the device's flood for us.
                self._drop(message, "rate_limited")
                self.acks.ack(message)
                return
            except TrackerError as error:  # counted by the service
                self._refuse(message, error)
                return
            self.acks.ack(message)
            return

    def _refuse(self, message: Message, error: TrackerError) -> None:
        logger.warning("ingest from %s refused: %s", message.topic, error.detail)
        self.acks.ack(message)

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    @property
    def busy(self) -> bool:
        """Messages are still being processed."""
        return bool(self._tasks)


class Leader(LeasedConsumer):
    """``leader`` mode: while it holds the ingest lease, consumes ``ingest/+`` under the
    one cluster-wide client id (``leased.LeasedConsumer``). The envelopes go out through
    ``service`` (the process's publishing connection); device messages are acknowledged on
    the ingest connection after their envelope's PUBACK."""

    def __init__(
        self,
        settings: Settings,
        service: EventTracker,
        lease: Lease,
        check_every: float = LEASE_CHECK,
    ) -> None:
        super().__init__(
            settings,
            lease,
            name="ingest",
            client_id=settings.ingest_session,
            subscriptions=[LEADER_SUBSCRIPTION],
            consumer=lambda acks: Ingest(service, acks),
            check_every=check_every,
        )
