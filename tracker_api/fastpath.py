"""A lean ASGI front for the two event routes.

FastAPI's routing, dependency injection and response machinery cost more per request than
validating and publishing an event; at the throughput we aim for that matters (see
docs/adr/0006-fast-path.md). This front answers ``GET /<accountId>`` and
``GET /<accountId>/<data>`` itself through the same ``EventService`` and hands everything
else (docs, health, metrics, other methods, lifespan) to the FastAPI app.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI

from .errors import InvalidRequest, TrackerError
from .events import RESERVED, EventService

Scope = dict[str, Any]
JSON_HEADERS = [(b"content-type", b"application/json")]


def parse_query(query_string: bytes) -> tuple[str | None, str | None]:
    """``data`` and ``eventId`` from a query string (the last one wins, as in FastAPI).

    Same decoding as ``urllib.parse.parse_qsl`` (``+`` is a space, %-escapes are UTF-8),
    at a fraction of its cost for the usual one or two parameters.
    """
    data = event_id = None
    try:
        for part in query_string.split(b"&"):
            key, _, value = part.partition(b"=")
            if b"%" in key or b"+" in key:
                key = _unquote(key).encode()
            if key == b"data":
                data = _unquote(value)
            elif key == b"eventId":
                event_id = _unquote(value)
    except UnicodeDecodeError:
        raise InvalidRequest("The query string is not valid UTF-8") from None
    return data, event_id


def _unquote(raw: bytes) -> str:
    if b"%" in raw or b"+" in raw:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode()
    return raw.decode()


def idempotency_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"idempotency-key":
            return str(value.decode("latin-1"))
    return None


class TrackerApp:
    """The ASGI application uvicorn serves."""

    def __init__(self, api: FastAPI, fast_path: bool = True) -> None:
        self.api = api
        self.fast_path = fast_path

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.fast_path and scope["type"] == "http" and scope["method"] == "GET":
            account_id, _, rest = scope["path"][1:].partition("/")
            if account_id and account_id not in RESERVED:
                await self._track(scope, send, account_id, rest or None)
                return
        await self.api(scope, receive, send)

    async def _track(self, scope: Scope, send: Any, account_id: str, path_data: str | None) -> None:
        service: EventService = self.api.state.service
        headers = JSON_HEADERS
        try:
            query_data, event_id = parse_query(scope["query_string"])
            data = path_data if path_data is not None else query_data
            body = await service.track(account_id, data, idempotency_key(scope) or event_id)
            status = 200
        except TrackerError as error:
            status, body = error.status, error.body
            headers = JSON_HEADERS + [
                (k.lower().encode(), v.encode()) for k, v in error.headers.items()
            ]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
