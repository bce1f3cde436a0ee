"""Drop redelivered events by eventId, remembering only the most recent ones.

QoS 1 is at-least-once: after a reconnect the broker resends every message whose PUBACK
it had not received, so the same event can arrive twice. Redeliveries come soon after
the original, which makes a bounded first-in-first-out memory enough.
"""

from __future__ import annotations

from collections import deque

DEFAULT_CAPACITY = 100_000


class Deduplicator:
    """Remembers the last ``capacity`` keys; memory stays bounded however long it runs."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._keys: set[str] = set()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def seen(self, key: str) -> bool:
        """True when ``key`` was already recorded; otherwise record it and return False."""
        keys = self._keys
        if key in keys:
            return True
        keys.add(key)
        order = self._order
        order.append(key)
        if len(order) > self.capacity:
            keys.discard(order.popleft())
        return False
