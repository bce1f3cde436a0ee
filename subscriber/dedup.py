"""Drop redelivered events by (account, eventId), remembering only the most recent ones.

QoS 1 is at-least-once: after a reconnect the broker resends every message whose PUBACK
it had not received, so the same event can arrive twice. Redeliveries come soon after
the original, which makes a bounded first-in-first-out memory enough.

An eventId is unique only within its account: a client's ``Idempotency-Key`` becomes
the eventId as sent (docs/adr/0011-event-ids-scoped-per-account.md), so two accounts may
both send ``order-1``. Keys therefore pair the account with the eventId; an eventId alone
would let one tenant hide another's events.
"""

from __future__ import annotations

from collections import deque

DEFAULT_CAPACITY = 100_000

Key = tuple[str, str]
"""``(accountId, eventId)``."""


class Deduplicator:
    """Remembers the last ``capacity`` keys; memory stays bounded however long it runs."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._order: deque[Key] = deque()
        self._keys: set[Key] = set()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Key) -> bool:
        return key in self._keys

    def seen(self, account: str, event_id: str) -> bool:
        """True when this account's ``event_id`` was already recorded; otherwise record it
        and return False."""
        key = (account, event_id)
        keys = self._keys
        if key in keys:
            return True
        keys.add(key)
        order = self._order
        order.append(key)
        if len(order) > self.capacity:
            keys.discard(order.popleft())
        return False
