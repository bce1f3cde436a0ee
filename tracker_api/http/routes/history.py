"""``GET /events``: archived events in time order, paged by cursor, as JSON or NDJSON
(docs/adr/0015-event-archive.md).

Each event is the envelope exactly as it was published on ``track/<accountId>``, copied
from the table byte for byte. With ``TRACKER_PASSWORD_FILE`` set, HTTP Basic with a login
of that file: ``reader`` and ``tracker`` see every account, an account's login only its
own (as ``mqtt/acl`` lets them subscribe); without the file the history is open.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
from tracker_api.http.archive_reader import ArchiveReader, Selection
from tracker_api.http.auth import HttpAuth
from tracker_api.http.batch import NDJSON
from tracker_api.http.handler import client_address
from tracker_api.http.routes.events import EVENT_EXAMPLE
from tracker_api.http.runtime import runtime
from tracker_api.storage import event_store as archive
from tracker_contract.durations import InvalidTime, parse_time
from tracker_contract.ids import ACCOUNT_ID, ACCOUNT_ID_PATTERN
from tracker_contract.roles import ROLES

router = APIRouter(tags=["history"])

HISTORY_PATH = "/events"
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000


class HistoryForbidden(LoginForbidden):
    detail = "This login may read only its own account's history"
    when = "TRACKER_PASSWORD_FILE: another account's login"


class HistoryLoginRequired(LoginRequired):
    detail = "Login required: HTTP Basic with a login of the MQTT password file"
    when = "TRACKER_PASSWORD_FILE: no login"


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
    stored_after: Annotated[
        int | None,
        Query(
            ge=0,
            le=archive.BIGINT_MAX,
            description="Only events the archive stored after this position "
            "(`X-Archive-Position` of an earlier answer): what arrived late",
        ),
    ] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Selection:
    # The login first: who may not read the history learns nothing of it, not even
    # which of its parameters are wrong.
    accounts = visible_accounts(
        runtime(request).logins, authorization, account or [], client_address(request.scope)
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
    return Selection(accounts, archive.to_ms(start), archive.to_ms(end), cursor, stored_after)


QueryDep = Annotated[Selection, Depends(read_query)]
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Events in (timestamp, archive sequence) order. JSON: a page of at most "
        "`limit` events and about 4 MiB (a page of large events ends early); `next` is the "
        "cursor of the following page, null once the range is exhausted. With `Accept: "
        "application/x-ndjson`, one event per line: the whole range, or with `limit` at most "
        "that many, the cursor of what follows in the `X-Next-Cursor` header. Either way, "
        "read before the events: `X-Archive-Watermark` (every event the broker acknowledged "
        "before it is stored; absent until the archive first marked), `X-Archive-Read-At` "
        "(this server's clock then) and `X-Archive-Position` (for `stored_after`)",
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
    422: {
        "description": "Bad range (unparseable, out of range, since after until), account "
        "id, cursor or limit",
        "content": {"application/json": {"example": {"detail": "since is after until"}}},
    },
}


@router.get(HISTORY_PATH, responses=RESPONSES)
async def history(
    request: Request,
    query: QueryDep,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LIMIT,
            description=f"Most events in the answer; JSON default {DEFAULT_LIMIT}, NDJSON: all",
        ),
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Archived events of `since`..`until`, oldest first, paged by cursor (`after`)."""
    reader = runtime(request).archive_reader
    # Before any row: the rows read next include all that the watermark vouches for.
    headers = state_headers(await reader.state())
    if accept is not None and NDJSON in accept:
        return await _ndjson(reader, query, limit, headers)
    page = await reader.page(query, limit or DEFAULT_LIMIT)
    return Response(page.body, media_type="application/json", headers=headers)


def state_headers(state: archive.ArchiveState) -> dict[str, str]:
    """``X-Archive-Read-At`` (this server's clock as it read the archive),
    ``X-Archive-Watermark`` (every event the broker acknowledged before it is stored;
    absent while the archive never marked) and ``X-Archive-Position``."""
    headers = {
        "X-Archive-Read-At": rfc3339_ms(time.time() * 1000),
        "X-Archive-Position": str(state.position),
    }
    if state.watermark is not None:
        headers["X-Archive-Watermark"] = rfc3339_ms(state.watermark)
    return headers


def rfc3339_ms(epoch_ms: float) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _ndjson(
    reader: ArchiveReader, query: Selection, limit: int | None, headers: dict[str, str]
) -> Response:
    if limit is None:
        return StreamingResponse(reader.lines(query), media_type=NDJSON, headers=headers)
    # A bounded answer is planned whole first (a few bytes per event): its end, and so
    # the cursor of what follows, is known before the first line goes out.
    planned = await reader.plan(query, query.after, limit + 1)
    if len(planned) > limit:
        headers["X-Next-Cursor"] = archive.encode_cursor(planned[limit - 1].cursor)
    return StreamingResponse(
        reader.lines(query, planned[:limit]), media_type=NDJSON, headers=headers
    )
