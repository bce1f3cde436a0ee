"""The one parser of times and spans (history API, retention, ``mqtt-tail --since``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker_contract.durations import (
    InvalidTime,
    OutOfRange,
    parse_duration,
    parse_time,
    parse_timestamp,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(days=7)),
        (" 3 h ", timedelta(hours=3)),
    ],
)
def test_durations_read_as_people_type_them(text: str, span: timedelta) -> None:
    assert parse_duration(text) == span
    assert parse_time(text, now=NOW) == NOW - span


@given(st.integers(min_value=0, max_value=10**6 - 1), st.sampled_from("smhdw"))
def test_every_whole_duration_parses_back(amount: int, unit: str) -> None:
    span = parse_duration(f"{amount}{unit}")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert span == timedelta(seconds=amount * seconds)


def test_rfc3339_times_become_aware_utc() -> None:
    assert parse_time("2026-11-28T12:00:00.123Z") == datetime(
        2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC
    )
    assert parse_timestamp("2026-11-28T14:00:00+02:00") == NOW
    assert parse_timestamp("2026-11-28t12:00:00z") == NOW
    assert parse_timestamp(" 2026-11-28 12:00:00Z ") == NOW  # RFC 3339 allows the space


@given(
    st.datetimes(
        # Within what UTC can hold: 9999-12-31T23:00-05:00 is in the year 10000 in UTC.
        max_value=datetime(9999, 12, 31, 18, 59, 59),
        timezones=st.just(timezone(timedelta(hours=-5))),
    )
)
def test_an_isoformat_time_round_trips(moment: datetime) -> None:
    assert parse_time(moment.isoformat()) == moment


@pytest.mark.parametrize(
    "text",
    [
        "999999d",
        "999999w",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_times_no_datetime_can_hold_in_utc_are_invalid_not_an_overflow(text: str) -> None:
    with pytest.raises(OutOfRange, match="out of range"):
        parse_time(text, now=NOW)
    assert issubclass(OutOfRange, InvalidTime)  # every caller's except clause catches it


def test_the_first_and_last_moments_of_utc_still_parse() -> None:
    assert parse_time("0001-01-01T00:00:00Z").year == 1
    assert parse_time("9999-12-31T23:59:59.999Z").year == 9999


@pytest.mark.parametrize(
    "text",
    [
        "",
        "15",
        "m",
        "-5m",
        "1.5h",
        "15 minutes",
        "2026-11-28T12:00:00",
        "2026-11-28",
        "yesterday",
        "2026-13-01T00:00:00Z",
        # ISO 8601 forms Python reads but RFC 3339 does not have:
        "2026-11-28T12:00Z",  # no seconds
        "2026-11-28T14:00:00+0200",  # no colon in the zone
        "20261128T120000Z",  # basic format
        "2026-11-28T12:00:00,5Z",  # comma fraction
    ],
)
def test_anything_else_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(InvalidTime, match="expected"):
        parse_time(text)
