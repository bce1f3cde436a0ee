"""The largest legal event fits what every broker is configured to accept, and an event
that would not fit is refused (413) before it reaches the broker, which would otherwise
hang up on the connection and fail every event in flight on it."""

from __future__ import annotations

import orjson
import pytest

from tests.helpers.fakes import FakePublisher
from tracker_api.errors import PayloadTooLarge
from tracker_api.service.accounts import AccountCache, AccountState
from tracker_api.service.events import EventService
from tracker_contract import limits

MAX_DATA = 4096


def service() -> EventService:
    return EventService(AccountCache(lambda _: AccountState.ACTIVE), FakePublisher(), MAX_DATA)


def test_the_largest_legal_envelope_fits_the_brokers_limit() -> None:
    # Every field at its longest, every character of data and of the request id escaped.
    payload = service().envelope(
        "a" * 64,
        "\x01" * MAX_DATA,
        "e" * 128,
        {
            "deviceTime": "2026-11-28T12:00:00.123456789+00:00",
            "traceId": "f" * 32,
            "requestId": '"' * 128,
        },
    )
    assert len(orjson.loads(payload)["data"]) == MAX_DATA
    assert len(payload) <= limits.largest_message(MAX_DATA)


def test_an_envelope_past_the_limit_is_refused_before_it_is_sent() -> None:
    with pytest.raises(PayloadTooLarge, match="larger than 25600 bytes"):
        service().envelope("1", "x", None, {"requestId": "r" * limits.largest_message(MAX_DATA)})
