"""``GET /events``: archived events in time order, paged by cursor, as JSON or NDJSON
(docs/adr/0015-event-archive.md).

Each event is the envelope exactly as it was published on ``track/<accountId>``, copied
from the table byte for byte. With ``TRACKER_PASSWORD_FILE`` set, HTTP Basic with a login
of that file: ``reader`` and ``tracker`` see every account, an account's login only its
own (as ``mqtt/acl`` lets them subscribe); without the file the history is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from tracker_api.errors import (
    InvalidRequest,
    LoginForbidden,
    LoginRefused,
    LoginRequired,
    LoginThrottled,
    MalformedLogin,
    openapi_responses,
)
from tracker_api.http.auth import HttpAuth
from tracker_api.http.batch import NDJSON
from tracker_api.http.handler import client_address
from tracker_api.http.routes.events import EVENT_EXAMPLE
from tracker_api.storage import event_store as archive
from tracker_contract.durations import InvalidTime, parse_time
from tracker_contract.ids import ACCOUNT_ID, ACCOUNT_ID_PATTERN
from tracker_contract.roles import ROLES

router = APIRouter(tags=["history"])

HISTORY_PATH = "/events"
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000
STREAM_PAGE = 1000  # NDJSON: rows read per query, so memory stays flat for any range


class HistoryForbidden(LoginForbidden):
    detail = "This login may read only its own account's history"
    when = "TRACKER_PASSWORD_FILE: another account's login"


class HistoryLoginRequired(LoginRequired):
    detail = "Login required: HTTP Basic with a login of the MQTT password file"
    when = "TRACKER_PASSWORD_FILE: no login"


@dataclass(frozen=True)
class HistoryQuery:
    accounts: Sequence[str] | None  # None: every account
    since_ms: int
    until_ms: int
    after: archive.Cursor | None


def visible_accounts(
    auth: HttpAuth | None, authorization: str | None, asked: list[str], address: str = ""
) -> Sequence[str] | None:
    """The accounts the caller (at the client ``address``) may read of those ``asked``
    (None: every account)."""
    for account_id in asked:
        if not ACCOUNT_ID.match(account_id):
            raise InvalidRequest(f"invalid account id: {account_id!r}")
    if auth is None:
        return asked or None
    if authorization is None:
        raise HistoryLoginRequired()
    user = auth.login(authorization, address)  # 401 (wrong, malformed) or 429 (throttled)
    if user in ROLES:
        return asked or None
    if any(account_id != user for account_id in asked):
        raise HistoryForbidden()
    return [user]


def read_query(
    request: Request,
    account: Annotated[
        list[str] | None,
        Query(description=f"Account id (`{ACCOUNT_ID_PATTERN}`), repeatable; default: all"),
    ] = None,
    since: Annotated[
        str, Query(description="From: RFC 3339 with a zone, or a duration back from now (15m)")
    ] = "",
    until: Annotated[str | None, Query(description="To (inclusive); default: now")] = None,
    after: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> HistoryQuery:
    # The login first: who may not read the history learns nothing of it, not even
    # which of its parameters are wrong.
    accounts = visible_accounts(
        request.app.state.logins, authorization, account or [], client_address(request.scope)
    )
    if not since:
        raise InvalidRequest("since is required, e.g. since=15m or since=2026-11-28T12:00:00Z")
    now = datetime.now(UTC)
    try:
        start = parse_time(since, now=now)
        end = parse_time(until, now=now) if until else now
    except InvalidTime as error:
        raise InvalidRequest(str(error)) from None
    if start > end:
        raise InvalidRequest("since is after until")
    try:
        cursor = archive.decode_cursor(after) if after else None
    except ValueError as error:
        raise InvalidRequest(f"after: {error}") from None
    return HistoryQuery(accounts, archive.to_ms(start), archive.to_ms(end), cursor)


QueryDep = Annotated[HistoryQuery, Depends(read_query)]
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Events in (timestamp, archive sequence) order; `next` is null once "
        "the range is exhausted. With `Accept: application/x-ndjson`, the whole range, one "
        "event per line, without a cursor",
        "content": {
            "application/json": {
                "example": {"events": [EVENT_EXAMPLE], "next": "MTc5NTg2NzIwMDEyMy4x"}
            },
            NDJSON: {"schema": {"type": "string"}},
        },
    },
    **openapi_responses(
        HistoryLoginRequired, LoginRefused, MalformedLogin, HistoryForbidden, LoginThrottled
    ),
    422: {"description": "Bad range (unparseable, since after until), account id or cursor"},
}


async def _fetch(
    request: Request, query: HistoryQuery, after: archive.Cursor | None, limit: int
) -> Any:
    return await asyncio.to_thread(
        archive.page,
        request.app.state.engine,
        query.accounts,
        query.since_ms,
        query.until_ms,
        after,
        limit,
    )


@router.get(HISTORY_PATH, responses=RESPONSES)
async def history(
    request: Request,
    query: QueryDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Events per page")] = DEFAULT_LIMIT,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Archived events of `since`..`until`, oldest first, paged by cursor (`after`)."""
    if accept is not None and NDJSON in accept:
        return StreamingResponse(_stream(request, query), media_type=NDJSON)
    rows = await _fetch(request, query, query.after, limit + 1)  # one more: is there a next?
    following = archive.encode_cursor(rows[limit - 1][1]) if len(rows) > limit else None
    rows = rows[:limit]
    body = b'{"events":[' + ",".join(envelope for envelope, _ in rows).encode() + b'],"next":'
    body += b"null}" if following is None else b'"' + following.encode() + b'"}'
    return Response(body, media_type="application/json")


async def _stream(request: Request, query: HistoryQuery) -> AsyncIterator[bytes]:
    after = query.after
    while True:
        rows = await _fetch(request, query, after, STREAM_PAGE)
        if rows:
            yield "".join(envelope + "\n" for envelope, _ in rows).encode()
            after = rows[-1][1]
        if len(rows) < STREAM_PAGE:
            return
