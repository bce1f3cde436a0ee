"""Property tests of the request decoder both HTTP paths share: any bytes get an answer
(a value or ``InvalidRequest``), and what a client encoded comes back intact."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote_to_bytes, urlencode

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tracker_api.errors import InvalidRequest
from tracker_api.http.request import (
    PATH_NOT_UTF8,
    QUERY_NOT_UTF8,
    parse_query,
    read_event_request,
    split_path,
)

# Text that form encoders produce and attackers like: escapes, separators, signs, hex.
QUERY_TEXT = st.text(alphabet="%&=+;?/#aAdtE0FfC89 \x00é\u2028", max_size=40)


def parse_or_refuse(query: bytes) -> tuple[str | None, str | None] | str:
    try:
        return parse_query(query)
    except InvalidRequest as error:
        assert error.detail == QUERY_NOT_UTF8
        return "refused"


@given(st.binary(max_size=200))
def test_any_query_bytes_give_values_or_a_422(query: bytes) -> None:
    result = parse_or_refuse(query)

    assert result == "refused" or all(v is None or isinstance(v, str) for v in result)


@given(QUERY_TEXT.map(str.encode))
@example(b"d%61ta=x&data=last")
@example(b"data=%FF")
@example(b"%ff=x&data=y")
def test_queries_decode_as_the_standard_library_does_or_are_refused(query: bytes) -> None:
    try:
        pairs = parse_qsl(query.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        assert parse_or_refuse(query) == "refused"
        return
    values = dict(pairs)  # the last one wins, in both

    assert parse_or_refuse(query) == (values.get("data"), values.get("eventId"))


@given(st.text(), st.text(max_size=20))
def test_what_a_form_encoder_sends_comes_back_intact(data: str, event_id: str) -> None:
    query = urlencode({"data": data, "eventId": event_id}).encode()

    assert parse_query(query) == (data, event_id)


ACCOUNT_TEXT = st.text(min_size=1).filter(lambda s: "/" not in s)


@given(ACCOUNT_TEXT, st.text())
def test_the_path_splits_only_at_a_literal_slash(account_id: str, data: str) -> None:
    raw = f"/{quote(account_id, safe='')}/{quote(data, safe='/')}".encode()

    assert split_path(raw) == (account_id, data or None)


@given(st.text(), st.text(min_size=1))
def test_an_encoded_slash_stays_in_the_account_id(before: str, after: str) -> None:
    raw = f"/{quote(before, safe='')}%2F{quote(after, safe='')}".encode()

    account_id, data = split_path(raw)

    assert account_id == f"{before}/{after}"
    assert data is None


@given(st.binary(max_size=200))
def test_any_path_bytes_give_values_or_a_422(raw: bytes) -> None:
    try:
        account_id, data = split_path(b"/" + raw)
    except InvalidRequest as error:
        assert error.detail == PATH_NOT_UTF8
        return
    first, _, rest = raw.partition(b"/")
    assert account_id == unquote_to_bytes(first).decode()
    assert data == (unquote_to_bytes(rest).decode() if rest else None)


def test_without_raw_path_the_decoded_path_is_used_as_sent() -> None:
    scope = {"path": "/1/100% sure", "query_string": b"", "headers": []}

    assert read_event_request(scope) == ("1", "100% sure", None)


def test_the_idempotency_key_header_wins_over_the_event_id_parameter() -> None:
    scope = {
        "path": "/1",
        "raw_path": b"/1",
        "query_string": b"data=x&eventId=from-query",
        "headers": [(b"idempotency-key", b"from-header")],
    }

    assert read_event_request(scope) == ("1", "x", "from-header")


@pytest.mark.parametrize("raw", [b"/caf\xc3\xa9/x", b"/caf%C3%A9/x"])
def test_raw_and_escaped_utf8_read_the_same(raw: bytes) -> None:
    assert split_path(raw) == ("café", "x")
