"""What an event request asks for: ``(accountId, data, eventId)`` read from the raw request.

Both ways of serving the event routes (the fast path and the FastAPI routes) call
``read_event_request``, so they answer every request alike. It reads the raw path and
query, not what the server or Starlette decoded, because decoding first loses what matters:

- ``%2F`` becomes ``/`` and would split the account id (``/bar%2Fx`` is the account id
  ``bar/x``, which is invalid, never account ``bar`` with data ``x``);
- invalid UTF-8 becomes U+FFFD, silently changing the data; here it is refused (422),
  wherever it is in the path or the query string.

Rules: the first path segment is the account id; the rest of the path, when not empty, is
the data (so ``/1/`` is ``/1``: a trailing slash carries no data); otherwise ``?data=``.
The query string is form-encoded (``+`` is a space); the last ``data`` / ``eventId`` wins.
An ``Idempotency-Key`` header takes precedence over ``?eventId=``. A POST carries its
events in the body: only its account id is read here (``account_of``), never its query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, unquote_to_bytes

from tracker_api.errors import InvalidRequest

PATH_NOT_UTF8 = "The path is not valid UTF-8"
QUERY_NOT_UTF8 = "The query string is not valid UTF-8"


class EventRequest(NamedTuple):
    account_id: str
    data: str | None
    event_id: str | None


def _unquote(raw: bytes) -> str:
    return (unquote_to_bytes(raw) if b"%" in raw else raw).decode()


def _unquote_form(raw: bytes) -> str:
    return _unquote(raw.replace(b"+", b" ") if b"+" in raw else raw)


def split_path(raw_path: bytes) -> tuple[str, str | None]:
    """``(accountId, data)`` from the undecoded path: only a literal ``/`` separates them."""
    account_id, _, rest = raw_path[1:].partition(b"/")
    try:
        return _unquote(account_id), _unquote(rest) if rest else None
    except UnicodeDecodeError:
        raise InvalidRequest(PATH_NOT_UTF8) from None


def parse_query(query_string: bytes) -> tuple[str | None, str | None]:
    """``data`` and ``eventId`` from a raw query string; every key and value must decode."""
    data = event_id = None
    try:
        for part in query_string.split(b"&"):
            raw_key, _, raw_value = part.partition(b"=")
            key, value = _unquote_form(raw_key), _unquote_form(raw_value)
            if key == "data":
                data = value
            elif key == "eventId":
                event_id = value
    except UnicodeDecodeError:
        raise InvalidRequest(QUERY_NOT_UTF8) from None
    return data, event_id


class RequestHeaders:
    """The headers an event request may carry, found in one pass over the raw list."""

    __slots__ = (
        "idempotency_key",
        "request_id",
        "traceparent",
        "authorization",
        "content_type",
        "content_length",
    )

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.idempotency_key: str | None = None
        self.request_id: str | None = None
        self.traceparent: str | None = None
        self.authorization: str | None = None
        self.content_type: str | None = None
        self.content_length: str | None = None
        for name, value in headers:
            attribute = HEADER_ATTRIBUTES.get(name)
            if attribute is not None:
                setattr(self, attribute, value.decode("latin-1"))


HEADER_ATTRIBUTES = {
    b"idempotency-key": "idempotency_key",
    b"x-request-id": "request_id",
    b"traceparent": "traceparent",
    b"authorization": "authorization",
    b"content-type": "content_type",
    b"content-length": "content_length",
}


def _raw_path(scope: Mapping[str, Any]) -> bytes:
    # raw_path is optional in ASGI; without it, re-encoding the decoded path is the best
    # a server left us (a %2F it decoded can no longer be told from a /).
    raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode()
    return raw_path


def account_of(scope: Mapping[str, Any]) -> str:
    """The account id a POST is for: its path's first segment. The events are in the body,
    so a POST's query string is not read (``?data=`` / ``?eventId=`` do nothing there)."""
    return split_path(_raw_path(scope))[0]


def read_event_request(
    scope: Mapping[str, Any], headers: RequestHeaders | None = None
) -> EventRequest:
    """The event an ASGI ``scope`` asks for; ``InvalidRequest`` when it cannot be decoded."""
    account_id, path_data = split_path(_raw_path(scope))
    query_data, query_event_id = parse_query(scope["query_string"])
    return EventRequest(
        account_id,
        path_data if path_data is not None else query_data,
        (headers or RequestHeaders(scope["headers"])).idempotency_key or query_event_id,
    )
