"""Application factory and lifecycle."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy import Engine
from starlette.types import Lifespan

from tracker_api import __version__
from tracker_api.config import Settings, get_settings
from tracker_api.consumers import ingest
from tracker_api.consumers.archive import Archive
from tracker_api.consumers.lease import lease_for
from tracker_api.errors import TrackerError
from tracker_api.http.archive_reader import ArchiveReader
from tracker_api.http.auth import HttpAuth
from tracker_api.http.fastpath import TrackerApp, fixed_segments
from tracker_api.http.handler import HttpEvents
from tracker_api.http.routes import admin, events, health, history, root
from tracker_api.http.runtime import Runtime, install
from tracker_api.http.throttle import LoginThrottle
from tracker_api.service.accounts import accounts_for
from tracker_api.service.broker import BrokerConnection, Publisher, Session
from tracker_api.service.events import EventService
from tracker_api.service.rate_limit import RateLimiter
from tracker_api.storage import db
from tracker_contract.ids import RESERVED_SEGMENTS

logger = logging.getLogger(__name__)

DOCS_ASSETS = "/docs/assets"
# Threads (and database connections) for account lookups: a miss of the account cache is
# one short query, so a few suffice, and none of them is ever lent to anything else.
ACCOUNT_THREADS = 4

DESCRIPTION = """Validates tracking events and publishes them to subscribers over MQTT
(`track/<accountId>`, QoS 1). A 200 means the broker acknowledged the event."""


def tune_garbage_collector() -> None:
    """Per request we allocate many short-lived containers that reference counting frees;
    CPython's default gen-0 threshold (700) still runs the cyclic collector every few
    requests and rescans everything the app built at start. Freezing the start-up objects
    and collecting less often cut the CPU per request by ~20 % (docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)


async def _tracker_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TrackerError)
    return JSONResponse({"detail": error.detail}, error.status, headers=error.headers)


async def _invalid_parameter(_request: Request, error: Exception) -> JSONResponse:
    """A parameter FastAPI checks itself (``limit=20000``) answered like every other 422:
    ``{"detail": "<one line>"}``, each bad parameter named, not pydantic's error list."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": describe_invalid(error)}, 422)


def describe_invalid(error: RequestValidationError) -> str:
    """``limit: Input should be less than or equal to 10000``; several joined by ``; ``."""
    parts = []
    for item in error.errors():
        location = item.get("loc") or ()
        name = str(location[-1]) if location else "request"
        parts.append(f"{name}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def limiter_for(settings: Settings) -> RateLimiter | None:
    """TRACKER_RATE_LIMIT's buckets for this worker (its share of the limit), or None."""
    return RateLimiter(settings.rate_limit, settings.workers) if settings.rate_limit else None


def worker_connection(settings: Settings) -> BrokerConnection:
    """The worker's broker connection; with ingest on in ``shared`` mode, it keeps a
    persistent session subscribed to device messages, for ``consume_devices``."""
    if not shares_ingest(settings):
        return BrokerConnection.for_worker(settings, session=Session.CLEAN)
    return BrokerConnection.for_worker(
        settings,
        # Keep the session: unacknowledged device messages survive a crash of this worker.
        session=Session.PERSISTENT,
        subscriptions=[ingest.SUBSCRIPTION],
    )


def shares_ingest(settings: Settings) -> bool:
    """Every worker consumes its share of device messages (ingest on, ``shared`` mode)."""
    return settings.ingest and settings.ingest_mode == "shared"


def consume_devices(
    settings: Settings, connection: BrokerConnection, service: EventService
) -> None:
    """With ingest shared, the device messages of ``connection`` become events of
    ``service`` (which publishes through that same connection); otherwise nothing."""
    if shares_ingest(settings):
        connection.consume_with(lambda acks: ingest.Ingest(service, acks))


def off() -> str:
    """What ``/readyz`` shows of a part that does not run here."""
    return "off"


async def ingest_status(
    settings: Settings, connection: BrokerConnection, service: EventService, stack: AsyncExitStack
) -> Callable[[], str]:
    """Starts the ``leader`` mode's election (stopped with ``stack``); returns what
    ``/readyz`` shows of ingest: shared, leader, follower, off or ``refused: <why>``."""
    if not settings.ingest:
        return off
    if settings.ingest_mode == "shared":
        return lambda: connection.refusal or "shared"
    lease = lease_for(settings.database_url, settings.state_dir, settings.ingest_session)
    leader = await stack.enter_async_context(ingest.Leader(settings, service, lease))
    return lambda: leader.status


async def archive_status(
    settings: Settings, engine: Engine, stack: AsyncExitStack
) -> Callable[[], str]:
    """Starts the archive's competition for its lease (stopped with ``stack``); returns
    what ``/readyz`` shows of it: leader, follower, off, behind or refused."""
    if not settings.archive:
        return off
    lease = lease_for(settings.database_url, settings.state_dir, settings.archive_session)
    archive = await stack.enter_async_context(Archive(settings, engine, lease))
    return lambda: archive.status


def own_engine(
    settings: Settings, given: Engine | None, stack: AsyncExitStack, pool_size: int | None = None
) -> Engine:
    """An engine with a pool of its own (``pool_size`` connections, for an executor of as
    many threads), disposed with ``stack``; or the caller's engine, shared (tests)."""
    if given is not None:
        return given
    engine = db.make_engine(settings.database_url, pool_size)
    stack.callback(engine.dispose)
    return engine


def own_executor(stack: AsyncExitStack, threads: int, name: str) -> ThreadPoolExecutor:
    """Threads lent to nothing else, shut down with ``stack`` (queued work is dropped)."""
    executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
    stack.callback(executor.shutdown, wait=False, cancel_futures=True)
    return executor


def create_api(
    settings: Settings, publisher: Publisher | None = None, engine: Engine | None = None
) -> FastAPI:
    """The FastAPI application: docs, health, metrics and the event routes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            database = own_engine(settings, engine, stack)  # consumers, readiness
            accounts = accounts_for(
                settings,
                own_engine(settings, engine, stack, ACCOUNT_THREADS),
                own_executor(stack, ACCOUNT_THREADS, "accounts"),
            )
            archive_reader = ArchiveReader(
                own_engine(settings, engine, stack, settings.history_readers),
                own_executor(stack, settings.history_readers, "history"),
                settings.archive_session,
            )
            broker: Publisher
            if publisher is None:
                connection = worker_connection(settings)
                service = EventService(
                    accounts, connection, settings.max_data_bytes, limiter_for(settings)
                )
                consume_devices(settings, connection, service)
                broker = await stack.enter_async_context(connection)
                ingest_shows = await ingest_status(settings, connection, service, stack)
                archive_shows = await archive_status(settings, database, stack)
            else:  # the caller's, started and stopped by the caller
                broker = publisher
                service = EventService(
                    accounts, broker, settings.max_data_bytes, limiter_for(settings)
                )
                ingest_shows = archive_shows = off  # no broker of ours to read
            # One cache of verified logins for the history, the admin API and
            # (TRACKER_HTTP_AUTH) events.
            auth = (
                HttpAuth(
                    settings.password_file,
                    ttl=settings.http_auth_cache_ttl,
                    throttle=LoginThrottle(
                        settings.login_failures_per_login,
                        settings.login_failures_per_address,
                        settings.workers,
                    ),
                )
                if settings.password_file is not None
                else None
            )
            install(
                app,
                Runtime(
                    service=service,
                    http=HttpEvents(service, settings, auth),
                    engine=database,
                    archive_reader=archive_reader,
                    logins=auth,
                    ingest_status=ingest_shows,
                    archive_status=archive_shows,
                ),
            )
            tune_garbage_collector()
            logger.info(
                "tracker started (broker connected: %s, ingest: %s, archive: %s)",
                broker.connected,
                ingest_shows(),
                archive_shows(),
            )
            yield
        logger.info("tracker stopped")

    return build_api(
        lifespan,
        event_logins=settings.http_auth,
        history_logins=settings.password_file is not None,
    )


BASIC_AUTH = "httpBasic"


def declare_basic_auth(api: FastAPI, operations: list[tuple[str, str]]) -> None:
    """Declare HTTP Basic in the OpenAPI document for ``(path, method)`` operations, so
    that /docs offers its Authorize button and sends the login with them."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = build()  # FastAPI keeps it as api.openapi_schema: changed once, here
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[BASIC_AUTH] = {
            "type": "http",
            "scheme": "basic",
            "description": "An MQTT login of TRACKER_PASSWORD_FILE",
        }
        for path, method in operations:
            schema["paths"][path][method]["security"] = [{BASIC_AUTH: []}]
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


def build_api(
    lifespan: Lifespan[FastAPI] | None = None,
    *,
    event_logins: bool = False,
    history_logins: bool = False,
) -> FastAPI:
    """The routes alone. Their first segments must be names no account may have
    (``tracker_contract.ids.RESERVED_SEGMENTS``), so the fast path leaves them to FastAPI.
    ``event_logins`` / ``history_logins``: those routes take HTTP Basic (OpenAPI)."""
    # /docs works offline: its assets come with the fastapi-offline package, under /docs/
    # so that the fast path (which leaves "docs" to FastAPI) never mistakes them for events.
    api = FastAPIOffline(
        title="Tracker API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    api.add_exception_handler(TrackerError, _tracker_error)
    api.include_router(root.router)
    api.add_exception_handler(RequestValidationError, _invalid_parameter)
    api.include_router(health.router)
    api.include_router(history.router)  # before /{account_id}: "events" is no account
    api.include_router(admin.router)  # nor is "admin"
    api.include_router(events.router)
    unreserved = fixed_segments(api) - RESERVED_SEGMENTS
    if unreserved:
        raise RuntimeError(f"add {sorted(unreserved)} to tracker_contract.ids.RESERVED_SEGMENTS")
    operations = [("/{account_id}", "post")] if event_logins else []
    operations += [(history.HISTORY_PATH, "get")] if history_logins else []
    if operations:
        declare_basic_auth(api, operations)
    return api


def create_app(
    settings: Settings | None = None,
    publisher: Publisher | None = None,
    engine: Engine | None = None,
) -> TrackerApp:
    """The ASGI application: the fast event path in front of the FastAPI app."""
    settings = settings or get_settings()
    return TrackerApp(
        create_api(settings, publisher, engine),
        fast_path=settings.fast_path,
        cors=cors_options(settings.cors_origin_list, ["GET", "POST"]),
        history_cors=cors_options(settings.history_cors_origin_list, ["GET"]),
    )


def cors_options(origins: list[str], methods: list[str]) -> dict[str, Any] | None:
    """Starlette ``CORSMiddleware`` options for some origins, None when there are none.
    Never ``allow_credentials``: a browser's saved login or cookies are not sent along;
    a page that may send sets ``Authorization`` itself."""
    if not origins:
        return None
    return {
        "allow_origins": origins,
        "allow_methods": methods,
        "allow_headers": [
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "X-Request-ID",
            "traceparent",
        ],
        "expose_headers": ["X-Request-ID", "Retry-After"],
        "max_age": 600,
    }
