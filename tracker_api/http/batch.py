"""Bodies of ``POST /<accountId>``: one event (a JSON object) or a batch (a JSON array, or
NDJSON: one object per line, ``Content-Type: application/x-ndjson``).

An item is ``{"data": "<string>", "eventId"?: "<id>", "timestamp"?: "<RFC 3339>"}``. Every
item is checked before anything is published: one bad item refuses the whole request
(422) with the index of each bad one, so a client never has to work out which half of a
batch went out. A client's ``timestamp`` is kept as the event's ``deviceTime``; the
tracker's own ``timestamp`` stays the one that orders events. An eventId given twice in
one batch is refused too: the second would be dropped by every subscriber as a repeat,
which the client almost certainly did not mean.

A body is bounded in bytes (``max_body_bytes``), but parsing can multiply it: ``[{},{},…]``
turns 25 MB into millions of dicts, hundreds of MB. So before anything is built,
``check_structure`` counts what a parser would build (a cheap count of the characters
that open or separate JSON values, outside strings) and refuses (413) a body with more
than ``max_batch`` legal events can have; NDJSON lines are read one at a time, no further
than ``max_batch`` events.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from starlette.types import Receive

from tracker_api.errors import InvalidBatch, InvalidRequest, PayloadTooLarge, TrackerError
from tracker_contract.durations import is_rfc3339
from tracker_contract.limits import largest_message

NDJSON = "application/x-ndjson"
JSON = "application/json"
FIELDS = frozenset({"data", "eventId", "timestamp"})

# Outside its strings a legal item has at most a "{", a ":" per field (3), a "," between
# fields (2) and the "," before the next item; inside, at most 6 strings (keys, values).
# Every JSON value but the body's first follows a "[", "{", "," or ":" outside strings.
STRUCTURE_PER_ITEM = 7
STRINGS_PER_ITEM = 6
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# A non-blank NDJSON line, from its first visible character: blank lines are skipped by
# the regex engine, never by a Python loop.
NDJSON_LINE = re.compile(rb"\S[^\n]*")


class Item(NamedTuple):
    data: str
    event_id: str | None
    device_time: str | None


class Body(NamedTuple):
    items: list[Item]
    single: bool  # a JSON object, answered like a GET


def max_body_bytes(max_batch: int, max_data_bytes: int) -> int:
    """The largest body a legal request can have: every item as large as it may be."""
    return max_batch * (largest_message(max_data_bytes) + 64)


async def read_body(receive: Receive, content_length: int | None, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit``."""
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":  # what came so far is not the body
            raise InvalidRequest("The client disconnected before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def media_type(content_type: str | None) -> str:
    """``application/json`` of ``application/json; charset=utf-8``; empty when absent."""
    return content_type.split(";")[0].strip().lower() if content_type else ""


def _structure(body: bytes, start: int, end: int) -> int:
    count = body.count
    return (
        count(b"[", start, end)
        + count(b"{", start, end)
        + count(b",", start, end)
        + count(b":", start, end)
    )


def _too_much(max_batch: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The body holds more JSON than {max_batch} events can: at most {max_batch} events, "
        "each an object of data, eventId and timestamp"
    )


def check_structure(body: bytes, max_batch: int) -> None:
    """Refuse (413) a body that would build more JSON values than ``max_batch`` legal
    events have, before a parser builds any. The whole body is counted first (a few C
    passes); only when that is over the limit (data holding commas, colons or brackets)
    are the strings skipped, and no more of them than a legal batch can have."""
    limit = STRUCTURE_PER_ITEM * max_batch + 1
    if len(body) <= limit or _structure(body, 0, len(body)) <= limit:
        return  # (a body no longer than the limit cannot hold more such characters)
    outside = strings = position = 0
    for match in JSON_STRING.finditer(body):
        strings += 1
        outside += _structure(body, position, match.start())
        if strings > STRINGS_PER_ITEM * max_batch or outside > limit:
            raise _too_much(max_batch)
        position = match.end()
    if outside + _structure(body, position, len(body)) > limit:
        raise _too_much(max_batch)


def _ndjson(body: bytes, max_batch: int) -> list[Any]:
    documents: list[Any] = []
    for match in NDJSON_LINE.finditer(body):
        if len(documents) == max_batch:
            raise PayloadTooLarge(
                f"more than {max_batch} events in one request; at most {max_batch}"
            )
        try:
            documents.append(orjson.loads(match.group()))
        except orjson.JSONDecodeError as error:
            line = body.count(b"\n", 0, match.start()) + 1
            raise InvalidRequest(f"Line {line} is not JSON: {error.args[0]}") from None
    return documents


def _documents(body: bytes, content_type: str | None, max_batch: int) -> tuple[list[Any], bool]:
    check_structure(body, max_batch)
    if media_type(content_type) == NDJSON:
        return _ndjson(body, max_batch), False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"The body is not JSON: {error.args[0]}") from None
    if isinstance(document, dict):
        return [document], True
    if isinstance(document, list):
        return document, False
    raise InvalidRequest("The body must be a JSON object (one event) or an array of them")


def parse_body(
    body: bytes,
    content_type: str | None,
    max_batch: int,
    validate: Callable[[str, str | None], None],
) -> Body:
    """The items of a POST body; ``InvalidBatch`` naming each bad one, or
    ``InvalidRequest`` when the body as a whole is not what it must be.

    ``validate(data, event_id)`` applies the rules every event follows (the ones a GET
    follows too), raising a ``TrackerError`` for a bad item."""
    documents, single = _documents(body, content_type, max_batch)
    if not documents:
        raise InvalidRequest("The batch is empty: send at least one event")
    if len(documents) > max_batch:
        raise PayloadTooLarge(f"{len(documents)} events in one request; at most {max_batch}")
    if single:  # answered like a GET, with the same statuses (413 for oversized data)
        return Body([_item(documents[0], validate)], True)
    items: list[Item] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for index, document in enumerate(documents):
        try:
            item = _item(document, validate)
        except TrackerError as error:
            problems.append((index, error.detail))
            continue
        if item.event_id is not None:
            first = seen.setdefault(item.event_id, index)
            if first != index:
                problems.append((index, f"eventId {item.event_id!r} repeats item {first}"))
                continue
        items.append(item)
    if problems:
        raise InvalidBatch(problems)
    return Body(items, single)


def _item(document: Any, validate: Callable[[str, str | None], None]) -> Item:
    if not isinstance(document, dict):
        raise InvalidRequest('An event must be a JSON object: {"data": "…"}')
    unknown = document.keys() - FIELDS
    if unknown:
        raise InvalidRequest(f"Unknown field(s) {sorted(unknown)}: use data, eventId, timestamp")
    data, event_id, timestamp = (document.get(k) for k in ("data", "eventId", "timestamp"))
    if not isinstance(data, str):
        raise InvalidRequest('"data" must be a string')
    if event_id is not None and not isinstance(event_id, str):
        raise InvalidRequest('"eventId" must be a string')
    if timestamp is not None and not (isinstance(timestamp, str) and is_rfc3339(timestamp)):
        raise InvalidRequest('"timestamp" must be an RFC 3339 time, e.g. 2026-11-28T12:00:00Z')
    validate(data, event_id)
    return Item(data, event_id, timestamp)
