"""The event path shared by HTTP routes and MQTT ingest: validate, stamp, publish."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson
from fastapi.routing import iter_route_contexts
from starlette.applications import Starlette

from . import metrics, topics
from .accounts import AccountCache
from .errors import InvalidRequest, PayloadTooLarge, TrackerError
from .ids import ACCOUNT_ID, ACCOUNT_ID_HELP
from .limits import largest_message
from .publisher import Publisher
from .rate_limit import RateLimiter
from .users import ROLES

EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
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


def fixed_segments(app: Starlette) -> frozenset[str]:
    """First path segments that belong to an app's fixed endpoints (docs, health, metrics,
    static assets), never to an account: the literal first segment of every route and
    mount. The event routes begin with a parameter, so they reserve nothing."""
    firsts = ((context.path or "/").split("/")[1] for context in iter_route_contexts(app.routes))
    return frozenset(first for first in firsts if first and not first.startswith("{"))


_reserved: frozenset[str] | None = None


def reserve_segments(app: Starlette) -> frozenset[str]:
    """Make the app's fixed endpoints' first segments the names no account may have;
    ``build_api`` calls it with the route table it built (the same every time)."""
    global _reserved
    _reserved = fixed_segments(app)
    return _reserved


def reserved_segments() -> frozenset[str]:
    """The fixed endpoints' first segments, read from the app's own route table: adding an
    endpoint reserves its name, with no list to keep in step. A process that serves the
    API has built that table already; a tool that only checks account ids (the seed,
    ``tracker-api users``) builds it once here."""
    if _reserved is None:
        from .app import build_api  # the routes are built on this module: import when used

        build_api()  # calls reserve_segments
    assert _reserved is not None
    return _reserved


def check_account_id(account_id: str) -> None:
    """The one rule for account ids: the API, ingest, the seed and account logins use it."""
    if ACCOUNT_ID.match(account_id) is None or account_id in reserved_segments():
        raise InvalidRequest(f"Invalid account id: {ACCOUNT_ID_HELP}")
    if account_id in ROLES:
        # A login's name is its account id (mqtt/acl patterns): an account named after a
        # role would share that role's login, and the role's rights.
        raise InvalidRequest(f"Invalid account id: {account_id!r} is the name of a broker role")


def check_event_id(event_id: str) -> None:
    """The rule for eventIds: an ``Idempotency-Key`` header, an ``eventId`` field or parameter."""
    if EVENT_ID.fullmatch(event_id) is None:
        raise InvalidRequest(
            "Invalid Idempotency-Key / eventId: 1-128 characters from A-Z a-z 0-9 _ . : -"
        )


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
        self._counters[source, outcome].inc()

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
