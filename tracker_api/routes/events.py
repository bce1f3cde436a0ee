"""Event routes as FastAPI sees them: documented in /docs, and served by FastAPI when the
fast path is off. With the fast path on (the default) ``fastpath.py`` answers the same
requests through the same ``EventService``, byte for byte.

The parameters are declared so that the OpenAPI schema documents them, but their values
are read from the raw request by ``read_event_request``, the function the fast path uses:
Starlette decodes ``%2F`` into a separator and invalid UTF-8 into U+FFFD, which would make
the two paths answer differently."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response

from ..deps import ServiceDep
from ..errors import (
    AccountInactive,
    AccountNotFound,
    DatabaseUnavailable,
    InvalidRequest,
    PayloadTooLarge,
    PublishFailed,
    PublishOutcomeUnknown,
    openapi_responses,
)
from ..event_request import read_event_request
from ..events import ACCEPTED_MESSAGE
from ..ids import ACCOUNT_ID_PATTERN

router = APIRouter(tags=["events"])

ERRORS = openapi_responses(
    AccountInactive,
    AccountNotFound,
    PayloadTooLarge,
    InvalidRequest,
    PublishFailed,
    DatabaseUnavailable,
    PublishOutcomeUnknown,
)
OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The broker acknowledged the event (QoS 1 PUBACK)",
        "content": {
            "application/json": {
                "example": {
                    "message": ACCEPTED_MESSAGE,
                    "event": {
                        "eventId": "019ac9a4-3b2e-7c01-9f5e-2b1d4c6a8e90",
                        "accountId": "42",
                        "timestamp": "2026-11-28T12:00:00.123Z",
                        "data": "hello",
                    },
                }
            }
        },
    }
}

AccountId = Annotated[str, Path(description=f"`{ACCOUNT_ID_PATTERN}`")]
IdempotencyKey = Annotated[
    str | None,
    Header(description="Becomes the eventId: a retried request is shown only once"),
]
EventIdParam = Annotated[
    str | None, Query(alias="eventId", description="Same as the Idempotency-Key header")
]


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.get("/{account_id}", responses={**OK, **ERRORS})
async def track(
    request: Request,
    service: ServiceDep,
    account_id: AccountId,
    data: Annotated[str | None, Query(description="The event's data (UTF-8)")] = None,
    event_id: EventIdParam = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Publish `data` for the account on `track/<accountId>`; 200 only after the PUBACK."""
    return _json(await service.track(*read_event_request(request.scope)))


@router.get("/{account_id}/{data:path}", responses={**OK, **ERRORS})
async def track_path(
    request: Request,
    service: ServiceDep,
    account_id: AccountId,
    data: Annotated[str, Path(description="The rest of the path; when empty, `?data=`")],
    event_id: EventIdParam = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """The original path form: `data` is the rest of the path (`/1/` is `/1`)."""
    return _json(await service.track(*read_event_request(request.scope)))
