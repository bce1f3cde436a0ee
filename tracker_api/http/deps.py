"""FastAPI dependencies, as ``Annotated`` aliases used by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tracker_api.http.handler import HttpEvents
from tracker_api.http.runtime import runtime
from tracker_api.service.events import EventService


def get_service(request: Request) -> EventService:
    return runtime(request).service


ServiceDep = Annotated[EventService, Depends(get_service)]


def get_http_events(request: Request) -> HttpEvents:
    return runtime(request).http


HttpEventsDep = Annotated[HttpEvents, Depends(get_http_events)]
