"""The event path shared by HTTP routes and MQTT ingest: validate, stamp, publish."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from tracker_api import metrics
from tracker_api.errors import InvalidRequest, PayloadTooLarge, TrackerError
from tracker_api.service.accounts import AccountCache
from tracker_api.service.broker import Publisher
from tracker_api.service.rate_limit import RateLimiter
from tracker_api.service.validation import check_account_id, check_event_id
from tracker_contract import topics
from tracker_contract.limits import largest_message

ACCEPTED_MESSAGE = "Request propagated to the subscribers!"


class EventIds:
    """UUIDv7 (RFC 9562) strings: millisecond time first, then a counter, then random bits,
    so ids sort by creation time within a process and never collide across processes."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0

    def new(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms > self._last_ms:
            self._last_ms, self._counter = ms, random.getrandbits(8)
        else:
            ms = self._last_ms  # clock stepped back: stay ordered
            self._counter += 1
            if self._counter > 0xFFF:
                self._last_ms = ms = ms + 1
                self._counter = 0
        value = (
            (ms << 80) | (0x7 << 76) | (self._counter << 64) | (0b10 << 62) | random.getrandbits(62)
        )
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Clock:
    """RFC 3339 UTC timestamps with milliseconds, e.g. ``2026-11-28T12:00:00.123Z``."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


class EventService:
    """Turns ``(accountId, data)`` into a published event or a ``TrackerError``."""

    def __init__(
        self,
        accounts: AccountCache,
        publisher: Publisher,
        max_data_bytes: int = 4096,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.accounts = accounts
        self.publisher = publisher
        # TRACKER_RATE_LIMIT: one bucket per account for HTTP and device events alike.
        self.limiter = limiter
        self.max_data_bytes = max_data_bytes
        self.largest = largest_message(max_data_bytes)
        self.ids = EventIds()
        self.clock = Clock()
        self._counters = {
            (source, outcome): metrics.REQUESTS.labels(source, outcome)
            for source in ("http", "mqtt")
            for outcome in metrics.REQUEST_OUTCOMES
        }

    def count(self, source: str, outcome: str) -> None:
        counter = self._counters.get((source, outcome))
        if counter is None:  # an outcome metrics.REQUEST_OUTCOMES forgot: count it anyway
            counter = self._counters[source, outcome] = metrics.REQUESTS.labels(source, outcome)
        counter.inc()

    def validate(self, account_id: str, data: str | None, event_id: str | None) -> None:
        check_account_id(account_id)
        self.validate_item(data, event_id)

    def validate_item(self, data: str | None, event_id: str | None) -> None:
        """The rules for one event's own fields, wherever it came from."""
        if data is None:
            raise InvalidRequest("Missing data: pass it as ?data=<string> or /<accountId>/<data>")
        # Cheap bound first: a str of n characters encodes to at most 4n UTF-8 bytes.
        if len(data) * 4 > self.max_data_bytes and len(data.encode()) > self.max_data_bytes:
            raise PayloadTooLarge(f"data is larger than {self.max_data_bytes} bytes (UTF-8)")
        if event_id is not None:
            check_event_id(event_id)

    def envelope(
        self,
        account_id: str,
        data: str | None,
        event_id: str | None,
        extra: Mapping[str, str] | None = None,
        timestamp: str | None = None,
    ) -> bytes:
        """The event's payload: the tracker's fields, then optional ones (``deviceTime``,
        ``traceId``, ``requestId``) that are left out when absent. ``timestamp``: when
        the tracker accepted it (now, unless a batch accepted at once gives its own)."""
        event = {
            "eventId": event_id or self.ids.new(),
            "accountId": account_id,
            "timestamp": timestamp or self.clock.now(),
            "data": data,
        }
        if extra:
            event.update(extra)
        payload = orjson.dumps(event)
        if len(payload) > self.largest:
            # The broker would hang up on the connection, failing every event in flight on
            # it: never send what it refuses (mqtt/conf.d/limits.conf).
            raise PayloadTooLarge(f"the event is larger than {self.largest} bytes")
        return payload

    async def track(
        self,
        account_id: str,
        data: str | None,
        event_id: str | None = None,
        source: str = "http",
        extra: Mapping[str, str] | None = None,
    ) -> bytes:
        """Check the event, its account and the account's rate limit, publish it, and
        return the JSON body of the 200 answer. Every outcome is counted under ``source``."""
        try:
            self.validate(account_id, data, event_id)
            await self.accounts.require_active(account_id)
            if self.limiter is not None:
                self.limiter.take(account_id, 1)
        except TrackerError as error:
            self.count(source, error.outcome)
            raise
        return await self.publish(account_id, data, event_id, source, extra)

    async def publish(
        self,
        account_id: str,
        data: str | None,
        event_id: str | None = None,
        source: str = "http",
        extra: Mapping[str, str] | None = None,
    ) -> bytes:
        """Publish an event whose fields and account were checked (``track`` does both;
        the HTTP front checks them itself, between the login and the rate limit); the
        JSON body of the 200 answer. The outcome is counted under ``source``."""
        try:
            payload = self.envelope(account_id, data, event_id, extra)
            await self.publisher.publish(topics.track(account_id), payload)
        except TrackerError as error:
            self.count(source, error.outcome)
            raise
        self.count(source, "accepted")
        return b'{"message":"' + ACCEPTED_MESSAGE.encode() + b'","event":' + payload + b"}"

    async def track_batch(
        self, account_id: str, payloads: list[bytes]
    ) -> list[TrackerError | None]:
        """Publish validated envelopes of one active account, one QoS-1 message each; the
        outcome of each once all are settled (None: acknowledged)."""
        outcomes = await self.publisher.publish_many(topics.track(account_id), payloads)
        for outcome in outcomes:
            self.count("http", "accepted" if outcome is None else outcome.outcome)
        return outcomes
