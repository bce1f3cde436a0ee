"""Failed logins per minute, per login name and per client address.

Verified logins are cached (``auth.py``), wrong ones are not: each failure costs a key
derivation and tells a guesser something. So failures spend tokens of two buckets, one
for the login name tried and one for the client address, each holding
``TRACKER_LOGIN_FAILURES_PER_LOGIN`` / ``_PER_ADDRESS`` failures and refilling evenly over
a minute. While either is empty, logins of that name or from that address are refused
with 429 and ``Retry-After`` before the password is looked at; a login that verified
within its cache ttl still passes, since its header proves it. As with the rate limit,
each of N workers keeps 1/N of each budget, so together they never allow more.

Names are keyed by their hash, so a bucket costs the same whatever the length of the
name tried; at most ``max_keys`` buckets of each kind are kept (the least recently
failed dropped first, which only forgets a past failure).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

from tracker_api.errors import LoginThrottled

MINUTE = 60.0


class FailureBuckets:
    """A bucket of ``per_minute`` failures per key, refilling evenly over a minute."""

    def __init__(self, per_minute: float, max_keys: int = 10_000) -> None:
        self.rate = per_minute / MINUTE  # failures per second
        self.burst = max(per_minute, 1.0)
        self.max_keys = max_keys
        # key -> (tokens, when they were counted); least recently failed first.
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def wait(self, key: Hashable, now: float) -> float:
        """Seconds until ``key`` may fail once more (0: now)."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def spend(self, key: Hashable, now: float) -> None:
        tokens = self._tokens(key, now)
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens - 1, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def refund(self, key: Hashable, now: float) -> None:
        """Give back a failure spent ahead of a check that then succeeded."""
        if key in self._buckets:
            self._buckets[key] = (min(self.burst, self._tokens(key, now) + 1), now)


class LoginThrottle:
    """``per_login`` and ``per_address`` failures per minute over ``workers`` processes;
    0 turns either off."""

    def __init__(self, per_login: float, per_address: float, workers: int = 1) -> None:
        self.logins = FailureBuckets(per_login / workers) if per_login else None
        self.addresses = FailureBuckets(per_address / workers) if per_address else None

    def check(self, user: str, address: str, now: float) -> None:
        """Raise ``LoginThrottled`` while the login or the address may not fail again."""
        wait = 0.0
        if self.logins is not None:
            wait = self.logins.wait(hash(user), now)
        if self.addresses is not None:
            wait = max(wait, self.addresses.wait(address, now))
        if wait > 0:
            raise LoginThrottled(max(1, math.ceil(wait)))

    def failed(self, user: str, address: str, now: float) -> None:
        if self.logins is not None:
            self.logins.spend(hash(user), now)
        if self.addresses is not None:
            self.addresses.spend(address, now)

    def succeeded(self, user: str, address: str, now: float) -> None:
        """Undo ``failed`` for a login that turned out right: failures are counted before
        the password is checked, so that guesses checked at once on several threads
        cannot all pass ``check`` before the first of them is counted."""
        if self.logins is not None:
            self.logins.refund(hash(user), now)
        if self.addresses is not None:
            self.addresses.refund(address, now)
