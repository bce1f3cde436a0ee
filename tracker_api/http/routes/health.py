"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from tracker_api import metrics
from tracker_api.errors import RETRY_AFTER, describe_headers
from tracker_api.http.runtime import Runtime, runtime
from tracker_api.storage import db

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "Broker or database not reachable" + describe_headers(RETRY_AFTER)}
}


@router.get("/readyz", responses=NOT_READY)
async def readyz(request: Request) -> JSONResponse:
    """Ready when connected to the broker and the accounts database answers;
    ``broker_status`` names the broker node connected to (``connected to <host>:<port>``),
    or says why there is none: refused (and the reason) or unreachable.
    ``ingest`` says what device ingest does here: ``shared``, ``leader``, ``follower``,
    ``off`` or ``refused: <why>``; ``archive`` what the archive does: ``leader``
    (consuming here), ``follower``, ``off``, ``behind: database unavailable`` (not
    acknowledging until the database is back) or ``refused: <why>``. A refused ingest or a
    late archive leaves the answer 200: events over HTTP still work, and a balancer taking
    this tracker out would bring neither back. ``archive_lag_s`` is how far the archive's
    watermark trails now, wherever the archive runs (this tracker or `tracker-api archive`
    on the same database): about 0.5 s when it keeps up, growing while it catches up on a
    backlog; ``null`` when it never marked (or the database did not answer in time)."""
    running = runtime(request)
    publisher = running.service.publisher
    broker = publisher.connected
    try:
        await asyncio.wait_for(asyncio.to_thread(db.ping, running.engine), 2.0)
        database = True
    except (TimeoutError, SQLAlchemyError):
        database = False
    ready = broker and database
    return JSONResponse(
        {
            "status": "ready" if ready else "unavailable",
            "broker": broker,
            # Why not: "refused: not authorised" (a login to fix) reads differently from
            # "unreachable: ..." (a broker or network to fix).
            "broker_status": publisher.broker_status,
            "database": database,
            "ingest": running.ingest_status(),
            "archive": running.archive_status(),
            "archive_lag_s": await archive_lag(running) if database else None,
        },
        status_code=200 if ready else 503,
        headers=None if ready else RETRY_AFTER,
    )


async def archive_lag(running: Runtime) -> float | None:
    """Seconds from the archive's watermark to now (read on the history's own threads)."""
    try:
        state = await asyncio.wait_for(running.archive_reader.state(), 2.0)
    except (TimeoutError, SQLAlchemyError):
        return None
    if state.watermark is None:
        return None
    return round(max(0.0, time.time() - state.watermark / 1000), 1)


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus text format."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
