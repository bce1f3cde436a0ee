"""What the routes read of a running worker: one ``Runtime``, made by the application's
lifespan once everything in it has started, and stored as ``app.state.runtime``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request

from tracker_api.http.archive_reader import ArchiveReader
from tracker_api.http.auth import HttpAuth
from tracker_api.http.handler import HttpEvents
from tracker_api.service.events import EventService


@dataclass(frozen=True)
class Runtime:
    """The worker's started parts, as the request path sees them."""

    service: EventService  # validates and publishes events; holds the account cache
    http: HttpEvents  # the event requests, for the fast path and the FastAPI routes
    engine: Engine  # the accounts database: readiness and the admin API
    archive_reader: ArchiveReader  # the history
    logins: HttpAuth | None  # TRACKER_PASSWORD_FILE's logins, None without the file
    ingest_status: Callable[[], str]  # /readyz's ``ingest``
    archive_status: Callable[[], str]  # /readyz's ``archive``


def install(app: Starlette, runtime: Runtime) -> None:
    """Make ``runtime`` what the app's requests read."""
    app.state.runtime = runtime


def runtime_of(app: Starlette) -> Runtime:
    """The runtime the app's lifespan installed."""
    found: Runtime = app.state.runtime
    return found


def runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request``."""
    return runtime_of(request.app)
