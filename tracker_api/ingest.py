"""MQTT-native ingestion: devices publish to ``ingest/<accountId>``, the tracker validates
the message exactly as an HTTP request and republishes the envelope on ``track/<accountId>``.

The device's message is acknowledged only after the envelope was acknowledged, so a crash
in between loses nothing: the broker redelivers it to the same client id (persistent
session). Refused messages are counted (``tracker_requests_total{source="mqtt"}``),
logged and acknowledged, so they never loop.

Tracker processes share the work through the shared subscription
``$share/tracker/ingest/+`` (see docs/adr/0008-mqtt-ingest.md).
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from .errors import InvalidRequest, PayloadTooLarge, ServiceUnavailable, TrackerError
from .events import EventService
from .mqtt import Message, MqttClient

logger = logging.getLogger(__name__)

INGEST_PREFIX = "ingest/"
SUBSCRIPTION = ("$share/tracker/ingest/+", 1)
RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


def decode(payload: bytes, max_bytes: int) -> tuple[str, str | None]:
    """``(data, eventId)`` from raw UTF-8, or from JSON ``{"data": …, "eventId": …}``."""
    # JSON framing may add quoting and escapes around data of the allowed size.
    if len(payload) > max_bytes * 6 + 256:
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


class Ingest:
    def __init__(self, service: EventService, client: MqttClient) -> None:
        self.service = service
        self.client = client
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, message: Message) -> None:
        """Called by the MQTT client for each device message; the work runs as a task."""
        task = asyncio.get_running_loop().create_task(self._process(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, message: Message) -> None:
        account_id = message.topic.removeprefix(INGEST_PREFIX)
        try:
            data, event_id = decode(message.payload, self.service.max_data_bytes)
        except TrackerError as error:
            self.service.count("mqtt", error.outcome)
            self._refuse(message, error)
            return
        # One eventId for every attempt: a retry after a publish timeout, whose first
        # copy may have reached the broker after all, is then dropped by subscribers.
        event_id = event_id or self.service.ids.new()
        attempt = 0
        while True:
            try:
                await self.service.track(account_id, data, event_id, source="mqtt")
            except ServiceUnavailable as error:
                if not self.client.connected:
                    # Left unacknowledged: the broker hands it to us again on reconnect.
                    logger.warning("ingest from %s deferred: %s", message.topic, error.detail)
                    return
                # Connected but the database (or the broker's acknowledgement) is missing:
                # nothing would redeliver the message, so keep trying, with a capped pause.
                if attempt == len(RETRY_DELAYS) - 1:
                    logger.warning("ingest from %s retrying: %s", message.topic, error.detail)
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1
                continue
            except TrackerError as error:  # counted by the service
                self._refuse(message, error)
                return
            self.client.ack(message)
            return

    def _refuse(self, message: Message, error: TrackerError) -> None:
        logger.warning("ingest from %s refused: %s", message.topic, error.detail)
        self.client.ack(message)

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
