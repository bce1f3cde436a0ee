"""A lean ASGI front for the two event routes.

FastAPI's routing, dependency injection and response machinery cost more per request than
validating and publishing an event; at the throughput we aim for that matters (see
docs/adr/0006-fast-path.md). This front answers ``GET /<accountId>`` and
``GET /<accountId>/<data>`` itself through the same ``EventService`` and hands everything
else (docs, health, metrics, other methods, lifespan) to the FastAPI app.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .errors import TrackerError
from .event_request import read_event_request
from .events import EventService, fixed_segments

Scope = dict[str, Any]
JSON_HEADERS = [(b"content-type", b"application/json")]


class TrackerApp:
    """The ASGI application uvicorn serves."""

    def __init__(self, api: FastAPI, fast_path: bool = True) -> None:
        self.api = api
        self.fast_path = fast_path
        self.reserved = fixed_segments(api)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.fast_path and scope["type"] == "http" and scope["method"] == "GET":
            # Which requests are event requests is decided on the decoded path, as FastAPI's
            # router decides it, so both paths take the same ones; what they ask for is
            # then read from the raw request by the same function.
            first = scope["path"][1:].partition("/")[0]
            if first and first not in self.reserved:
                await self._track(scope, send)
                return
        await self.api(scope, receive, send)

    async def _track(self, scope: Scope, send: Any) -> None:
        service: EventService = self.api.state.service
        headers = JSON_HEADERS
        try:
            body = await service.track(*read_event_request(scope))
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
