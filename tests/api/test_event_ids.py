"""Event ids and timestamps."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from tracker_api.service import events
from tracker_api.service.events import Clock, EventIds


def test_event_ids_are_uuid7_and_sorted_by_creation() -> None:
    ids = EventIds()

    generated = [ids.new() for _ in range(5000)]

    assert generated == sorted(generated)
    assert len(set(generated)) == 5000
    assert all(uuid.UUID(value).version == 7 for value in generated[:50])


def test_event_ids_stay_ordered_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = EventIds()
    now = [1_800_000_000_000_000_000]
    monkeypatch.setattr(events.time, "time_ns", lambda: now[0])
    first = ids.new()
    now[0] -= 5_000_000_000  # five seconds back

    later = [ids.new() for _ in range(5000)]  # also overflows the per-ms counter

    assert [first, *later] == sorted([first, *later])


def test_timestamps_are_rfc3339_utc_with_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events.time, "time", lambda: 1_795_867_200.1234)

    stamp = Clock().now()

    assert stamp == "2026-11-28T12:00:00.123Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert datetime.fromisoformat(stamp) == datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC)
