"""Events per second per account: a token bucket holding one second of events.

A request spends one token per event. A batch larger than the bucket (the burst) could
never pass, so it is refused at once (``BatchOverBurst``, 429 without ``Retry-After``)
rather than let through: the rate is then a ceiling over every second, batches included.

With N worker processes each enforces ``limit / N`` on the requests it serves, so all of
them together never accept more than the limit, without shared state on the hot path.
The price: a client whose requests all reach one worker (one keep-alive connection) gets
that worker's share. Several tracker instances behind a load balancer each enforce their
own limit (see docs/security.md).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from tracker_api.errors import BatchOverBurst, RateLimited


class RateLimiter:
    def __init__(
        self,
        limit: float,
        workers: int = 1,
        max_accounts: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.rate = limit / workers  # events per second this process may accept
        self.burst = max(self.rate, 1.0)  # one second of events, at least one event
        self.largest_batch = math.floor(self.burst)  # the most events one request may spend
        self.max_accounts = max_accounts
        self._clock = clock
        # account -> (tokens, when they were counted); least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, account_id: str, events: int = 1) -> None:
        """Spend ``events`` tokens of the account, or raise ``RateLimited`` (the bucket
        holds too few now: retry later) or ``BatchOverBurst`` (it never holds that many)."""
        if events > self.largest_batch:
            raise BatchOverBurst(events, self.largest_batch)
        now = self._clock()
        tokens, then = self._buckets.pop(account_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < events:
            self._buckets[account_id] = (tokens, now)
            wait = (events - tokens) / self.rate
            raise RateLimited(self.limit, max(1, math.ceil(wait)))
        self._buckets[account_id] = (tokens - events, now)
        while len(self._buckets) > self.max_accounts:
            # Forgetting an idle account gives it a full bucket: generous, never stricter.
            self._buckets.popitem(last=False)
