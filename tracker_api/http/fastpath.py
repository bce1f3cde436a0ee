"""A lean ASGI front for the event routes.

FastAPI's routing, dependency injection and response machinery cost more per request than
validating and publishing an event; at the throughput we aim for that matters (see
docs/adr/0006-fast-path.md). This front answers ``GET /<accountId>``,
``GET /<accountId>/<data>`` and ``POST /<accountId>`` itself through the same
``HttpEvents`` as the FastAPI routes, and hands everything else (docs, health, metrics,
other methods, CORS preflights, lifespan) to the FastAPI app.

It also scopes CORS, in front of both ways of serving: Starlette's ``CORSMiddleware`` with
the options of ``TRACKER_CORS_ORIGINS`` wraps every request on an event path (the fast
path's answers, and FastAPI's preflights and answers there), the options of
``TRACKER_HISTORY_CORS_ORIGINS`` the history's, and nothing else: the events' origins never
read the history, metrics or docs (docs/adr/0017).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from tracker_api.http.handler import Reply
from tracker_api.http.routes.history import HISTORY_PATH
from tracker_api.http.runtime import runtime_of

HISTORY_SEGMENT = HISTORY_PATH[1:]


def fixed_segments(app: Starlette) -> frozenset[str]:
    """First path segments that belong to an app's fixed endpoints (docs, health, metrics,
    static assets), never to an account: the literal first segment of every route and
    mount. The event routes begin with a parameter, so they reserve nothing."""
    firsts = ((context.path or "/").split("/")[1] for context in iter_route_contexts(app.routes))
    return frozenset(first for first in firsts if first and not first.startswith("{"))


class TrackerApp:
    """The ASGI application uvicorn serves."""

    def __init__(
        self,
        api: FastAPI,
        fast_path: bool = True,
        cors: dict[str, Any] | None = None,
        history_cors: dict[str, Any] | None = None,
    ) -> None:
        self.api = api
        self.fast_path = fast_path
        self.reserved = fixed_segments(api)  # the names of the app's fixed endpoints
        self._events: Any = CORSMiddleware(self._serve_event, **cors) if cors else self._serve_event
        self._event_api: Any = CORSMiddleware(api, **cors) if cors else api
        self._history_api: Any = CORSMiddleware(api, **history_cors) if history_cors else api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Which requests are event requests is decided on the decoded path, as
            # FastAPI's router decides it, so both paths take the same ones; what they
            # ask for is then read from the raw request by the same functions.
            first, slash, _ = scope["path"][1:].partition("/")
            if first and first not in self.reserved:  # an event path, whatever the method
                method = scope["method"]
                if self.fast_path and (method == "GET" or (method == "POST" and not slash)):
                    await self._events(scope, receive, send)
                else:  # preflights, other methods, or the fast path off
                    await self._event_api(scope, receive, send)
                return
            if first == HISTORY_SEGMENT:
                await self._history_api(scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def _serve_event(self, scope: Scope, receive: Receive, send: Send) -> None:
        http = runtime_of(self.api).http
        if scope["method"] == "GET":
            reply = await http.get(scope)
        else:
            reply = await http.post(scope, receive)
        await send_reply(send, reply)


async def send_reply(send: Send, reply: Reply) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": reply.headers + [(b"content-length", str(len(reply.body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": reply.body})
