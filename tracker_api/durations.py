"""Points in time and spans as people type them: ``15m``, ``2h``, ``7d``, ``90s``, or an
RFC 3339 timestamp with a zone. The history API's ``since``/``until``, the archive's
retention and ``mqtt-tail --since`` all parse here, so the three always agree.

Pure functions, no I/O: ``now`` is a parameter wherever the answer depends on it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
# A zone is required: a naive time would mean something different on every machine.
_ZONED = re.compile(r"(Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)
EXAMPLES = "a duration like 90s, 15m, 2h, 7d or an RFC 3339 time like 2026-11-28T12:00:00Z"


class InvalidTime(ValueError):
    """Text that is neither a duration nor an RFC 3339 time with a zone."""


def parse_duration(text: str) -> timedelta:
    """``"15m"`` -> 15 minutes. ``InvalidTime`` for anything else (no sign, no fractions)."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidTime(f"not a duration: {text!r} (expected e.g. 90s, 15m, 2h, 7d)")
    return timedelta(seconds=int(match[1]) * UNITS[match[2]])


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 time with a zone (``Z`` or ``±hh:mm``), as an aware UTC datetime."""
    stripped = text.strip()
    if not _ZONED.search(stripped) or "T" not in stripped.upper():
        raise InvalidTime(f"not an RFC 3339 time with a zone: {text!r}")
    try:
        moment = datetime.fromisoformat(stripped.upper().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidTime(f"not an RFC 3339 time with a zone: {text!r}") from None
    return moment.astimezone(UTC)


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time: a duration counts back from ``now`` (default: the clock)."""
    try:
        span = parse_duration(text)
    except InvalidTime:
        pass
    else:
        return (now or datetime.now(UTC)) - span
    try:
        return parse_timestamp(text)
    except InvalidTime:
        raise InvalidTime(f"not a time: {text!r} (expected {EXAMPLES})") from None
