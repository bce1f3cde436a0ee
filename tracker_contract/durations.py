"""Points in time and spans as people type them: ``15m``, ``2h``, ``7d``, ``90s``, or an
RFC 3339 timestamp with a zone. The history API's ``since``/``until``, the archive's
retention, ``mqtt-tail --since`` and the ``timestamp`` of a POSTed event all parse here,
so they always agree.

Pure functions, no I/O: ``now`` is a parameter wherever the answer depends on it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
# RFC 3339's date-time: seconds, an optional fraction, and a zone. The zone is required:
# a naive time would mean something different on every machine.
RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)", re.ASCII
)
EXAMPLES = "a duration like 90s, 15m, 2h, 7d or an RFC 3339 time like 2026-11-28T12:00:00Z"
RANGE = "times must fall within the years 1 to 9999 in UTC"


class InvalidTime(ValueError):
    """Text that is neither a duration nor an RFC 3339 time with a zone."""


class OutOfRange(InvalidTime):
    """A well-formed time no ``datetime`` can hold in UTC (before the year 1, after 9999)."""


def parse_duration(text: str) -> timedelta:
    """``"15m"`` -> 15 minutes. ``InvalidTime`` for anything else (no sign, no fractions)."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidTime(f"not a duration: {text!r} (expected e.g. 90s, 15m, 2h, 7d)")
    return timedelta(seconds=int(match[1]) * UNITS[match[2]])


def _rfc3339(text: str) -> datetime | None:
    if RFC3339.fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:  # well-formed, but not a date (2026-02-30) or a time (25:00)
        return None


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 date-time, as an aware UTC datetime.

    Accepted: ``YYYY-MM-DDThh:mm:ss``, then an optional fraction of 1-9 digits (kept to
    the microsecond), then ``Z`` or ``±hh:mm``; ``T``/``Z`` in either case, and a space
    for the ``T`` (RFC 3339 allows it); surrounding whitespace is ignored. Refused: no
    zone, no seconds, a zone without its colon (``+0200``) and the other ISO 8601 forms
    (``20261128T120000Z``, week dates, ``,`` fractions), and impossible dates or times."""
    moment = _rfc3339(text.strip())
    if moment is None:
        raise InvalidTime(f"not an RFC 3339 time with a zone: {text!r}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in the year 0 in UTC
        raise OutOfRange(f"out of range: {text!r} ({RANGE})") from None


def is_rfc3339(text: str) -> bool:
    """Whether ``text`` is, exactly, a time ``parse_timestamp`` accepts (no whitespace
    around it): the check of a POSTed event's ``timestamp``, kept as it was sent."""
    return _rfc3339(text) is not None


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time: a duration counts back from ``now`` (default: the clock).
    ``InvalidTime`` for text that is neither, and for times outside the years 1-9999 in
    UTC (``999999d`` back from now), which no ``datetime`` can hold."""
    try:
        span = parse_duration(text)
    except InvalidTime:
        pass
    else:
        try:
            return (now or datetime.now(UTC)) - span
        except OverflowError:
            raise OutOfRange(f"out of range: {text!r} reaches back before the year 1") from None
    try:
        return parse_timestamp(text)
    except OutOfRange:
        raise
    except InvalidTime:
        raise InvalidTime(f"not a time: {text!r} (expected {EXAMPLES})") from None
