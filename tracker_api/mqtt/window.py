"""The in-flight window: the packet ids in use and the futures awaiting their
acknowledgement, bounded so that a slow broker gets 503s instead of an ever longer queue
(paho silently loses messages past 65,535 outstanding)."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from tracker_api.mqtt.errors import InflightFull, MqttError, PublishTimeout


class InflightWindow:
    def __init__(self, limit: int, ack_timeout: float | None = None) -> None:
        if not 0 < limit < 65_535:
            raise ValueError("max_inflight must be between 1 and 65534")
        self.limit = limit
        self.ack_timeout = ack_timeout
        self.futures: dict[int, asyncio.Future[None]] = {}
        # (deadline, future) in publish order: one sweep replaces a timer per publish.
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._last_mid = 0

    def __len__(self) -> int:
        return len(self.futures)

    def add(self, future: asyncio.Future[None], timed: bool = True) -> int:
        """A packet id for ``future``, held until ``release``; a timed one fails with
        ``PublishTimeout`` once overdue (see ``expire``)."""
        futures = self.futures
        if len(futures) >= self.limit:
            raise InflightFull(f"{len(futures)} messages await acknowledgement")
        mid = self._last_mid
        while True:
            mid = mid % 65_535 + 1
            if mid not in futures:
                break
        self._last_mid = mid
        futures[mid] = future
        if timed and self.ack_timeout is not None:
            self._deadlines.append((time.monotonic() + self.ack_timeout, future))
        return mid

    def release(self, mid: int) -> None:
        future = self.futures.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def pending(self) -> list[asyncio.Future[None]]:
        return [future for future in self.futures.values() if not future.done()]

    def expire(self, now: float) -> bool:
        """Fail the futures whose acknowledgement is overdue (their packet ids stay held
        until it comes or the connection ends); True when any was still waiting."""
        deadlines = self._deadlines
        expired = False
        while deadlines and deadlines[0][0] <= now:
            _, future = deadlines.popleft()
            if not future.done():
                future.set_exception(PublishTimeout("no PUBACK within the timeout"))
                expired = True
        return expired

    def fail_all(self, error: MqttError) -> None:
        """The connection is gone: every packet id is free again, every waiter fails."""
        futures, self.futures = self.futures, {}
        self._deadlines.clear()
        for future in futures.values():
            if not future.done():
                future.set_exception(error)
                # Nobody may be waiting any more (timed out); don't log "never retrieved".
                future.exception()
