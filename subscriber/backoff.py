"""Reconnection delays: exponential backoff with jitter."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter: each delay is drawn from the upper half of
    ``min * 2**attempt`` capped at ``max``, so a fleet of tails does not reconnect in step."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        if minimum <= 0 or maximum < minimum:
            raise ValueError("need 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        cap = min(self.maximum, self.minimum * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return self._rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0
