"""The one retry pacing of the project: reconnecting to the broker (the tracker and
mqtt-tail) and retrying a device message all wait ``first``, then twice as long each time
up to ``cap``, each wait drawn from its upper half so that many clients never retry in
step."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float, cap: float, rng: random.Random | None = None) -> None:
        if not 0 < first <= cap:
            raise ValueError("a backoff needs 0 < first <= cap")
        self.first, self.cap = first, cap
        self.attempts = 0  # waits handed out since the last success
        self._uniform = (rng or random).uniform  # a seeded one makes the waits repeatable

    def next(self) -> float:
        """The next wait, in seconds."""
        ceiling = min(self.cap, self.first * 2.0 ** min(self.attempts, 64))
        self.attempts += 1
        return ceiling * self._uniform(0.5, 1.0)

    def reset(self) -> None:
        """Start again from ``first``: the thing retried worked."""
        self.attempts = 0
