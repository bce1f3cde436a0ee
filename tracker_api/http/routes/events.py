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

from tracker_api.errors import (
    AccountInactive,
    AccountNotFound,
    BatchOverBurst,
    DatabaseUnavailable,
    InvalidRequest,
    LoginForbidden,
    LoginNeedsJson,
    LoginNeedsPost,
    LoginRefused,
    LoginRequired,
    LoginThrottled,
    MalformedLogin,
    PayloadTooLarge,
    PublishFailed,
    PublishOutcomeUnknown,
    RateLimited,
    openapi_responses,
)
from tracker_api.http.batch import NDJSON
from tracker_api.http.deps import HttpEventsDep
from tracker_api.http.handler import Reply, partial_detail
from tracker_api.service.events import ACCEPTED_MESSAGE
from tracker_api.service.validation import EVENT_ID
from tracker_contract.ids import ACCOUNT_ID_PATTERN

router = APIRouter(tags=["events"])

ERRORS = openapi_responses(
    AccountInactive,
    AccountNotFound,
    PayloadTooLarge,
    InvalidRequest,
    PublishFailed,
    DatabaseUnavailable,
    PublishOutcomeUnknown,
    LoginRequired,
    LoginRefused,
    MalformedLogin,
    LoginForbidden,
    RateLimited,
    LoginThrottled,
    BatchOverBurst,
)
GET_ONLY_ERRORS = openapi_responses(LoginNeedsPost)
POST_ONLY_ERRORS = openapi_responses(LoginNeedsJson)
EVENT_EXAMPLE = {
    "eventId": "019ac9a4-3b2e-7c01-9f5e-2b1d4c6a8e90",
    "accountId": "42",
    "timestamp": "2026-11-28T12:00:00.123Z",
    "data": "hello",
}
OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The broker acknowledged the event (QoS 1 PUBACK)",
        "content": {
            "application/json": {
                "example": {"message": ACCEPTED_MESSAGE, "event": EVENT_EXAMPLE},
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


def _response(reply: Reply) -> Response:
    response = Response(reply.body, reply.status)
    response.raw_headers += reply.headers  # content-length is Starlette's already
    return response


ITEM_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "additionalProperties": False,
    "properties": {
        "data": {"type": "string", "description": "The event's data (UTF-8)"},
        "eventId": {
            "type": "string",
            "pattern": f"^{EVENT_ID.pattern}$",
            "description": "Idempotency key, unique within the account and the batch",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "When the device saw it (RFC 3339); kept as `deviceTime`",
        },
    },
}
POST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One event (a JSON object, answered like a GET), or a batch: a JSON "
        "array, or NDJSON (one object per line), of at most TRACKER_MAX_BATCH events",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "array", "items": ITEM_SCHEMA, "minItems": 1},
                        ITEM_SCHEMA,
                    ]
                },
                "examples": {
                    "batch": {
                        "value": [
                            {"data": "door opened", "eventId": "door-17"},
                            {"data": "21.5", "timestamp": "2026-11-28T11:59:58Z"},
                        ]
                    },
                    "one event": {"value": {"data": "hello"}},
                },
            },
            NDJSON: {
                "schema": {"type": "string"},
                "example": '{"data": "a"}\n{"data": "b", "eventId": "b-1"}\n',
            },
        },
    }
}
POST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Every event acknowledged by the broker (one QoS-1 message each), "
        "in request order. A single JSON object is answered like a GET.",
        "content": {"application/json": {"example": {"events": [EVENT_EXAMPLE]}}},
    },
    403: ERRORS[403],
    404: ERRORS[404],
    413: {
        "description": "Body larger than a full batch may be, more than TRACKER_MAX_BATCH "
        "events, or (one event) data over TRACKER_MAX_DATA_BYTES"
    },
    422: {
        "description": "Not JSON / NDJSON, or invalid items: each one's index, nothing published",
        "content": {
            "application/json": {
                "example": {"detail": [{"index": 1, "msg": '"data" must be a string'}]}
            }
        },
    },
    401: ERRORS[401],
    429: ERRORS[429],
    **POST_ONLY_ERRORS,
    503: {
        "description": "Some or all events not accepted (none may be delivered later); "
        "`results` says which, item by item. Retry-After: 1",
        "content": {
            "application/json": {
                "example": {
                    "detail": partial_detail(1, 2),
                    "accepted": 1,
                    "results": [
                        {"status": 200, "event": EVENT_EXAMPLE},
                        {"status": 503, "eventId": "door-17", "detail": PublishFailed.detail},
                    ],
                }
            }
        },
    },
    504: {
        "description": "Some events were sent but not acknowledged in time: their outcome "
        "is unknown (`results`, status 504); retry them with the same eventId. Retry-After: 1"
    },
}
RequestIdHeader = Annotated[
    str | None,
    Header(
        alias="X-Request-ID",
        description="Echoed in the response and carried in the event as `requestId`; "
        "generated (and only echoed) when absent",
    ),
]
TraceparentHeader = Annotated[
    str | None,
    Header(description="W3C trace context: its trace id is carried in the event as `traceId`"),
]


@router.get("/{account_id}", responses={**OK, **ERRORS, **GET_ONLY_ERRORS})
async def track(
    request: Request,
    http: HttpEventsDep,
    account_id: AccountId,
    data: Annotated[str | None, Query(description="The event's data (UTF-8)")] = None,
    event_id: EventIdParam = None,
    idempotency_key: IdempotencyKey = None,
    x_request_id: RequestIdHeader = None,
    traceparent: TraceparentHeader = None,
) -> Response:
    """Publish `data` for the account on `track/<accountId>`; 200 only after the PUBACK.
    With TRACKER_HTTP_AUTH, refused (405): send events with POST."""
    return _response(await http.get(request.scope))


@router.get("/{account_id}/{data:path}", responses={**OK, **ERRORS, **GET_ONLY_ERRORS})
async def track_path(
    request: Request,
    http: HttpEventsDep,
    account_id: AccountId,
    data: Annotated[str, Path(description="The rest of the path; when empty, `?data=`")],
    event_id: EventIdParam = None,
    idempotency_key: IdempotencyKey = None,
    x_request_id: RequestIdHeader = None,
    traceparent: TraceparentHeader = None,
) -> Response:
    """The original path form: `data` is the rest of the path (`/1/` is `/1`)."""
    return _response(await http.get(request.scope))


@router.post("/{account_id}", responses=POST_RESPONSES, openapi_extra=POST_BODY)
async def track_batch(
    request: Request,
    http: HttpEventsDep,
    account_id: AccountId,
    x_request_id: RequestIdHeader = None,
    traceparent: TraceparentHeader = None,
) -> Response:
    """Publish a batch of events (or one): one QoS-1 message per event on
    `track/<accountId>`, answered after every PUBACK. An invalid item refuses the whole
    request (422, each bad item's index); a repeated eventId in one batch is invalid.
    When some events could not be accepted the answer says, item by item, which were
    accepted (200), refused (503: not delivered, retry) or unknown (504: retry with the
    same eventId). With TRACKER_HTTP_AUTH, HTTP Basic with the account's MQTT login, and
    Content-Type application/json or application/x-ndjson."""
    return _response(await http.post(request.scope, request.receive))
