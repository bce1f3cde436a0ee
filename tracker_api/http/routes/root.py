"""The front door: ``/`` says where the docs are, ``/favicon.ico`` is a plain 404.

Both are what a person or a browser asks first. Without them ``/`` was a bare 404 and a
browser's ``/favicon.ico`` was taken for an event request of account ``favicon.ico`` (a
valid id: dots are allowed) and answered 422 "Missing data".
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

router = APIRouter(tags=["operations"])

ENTRY = {
    "service": "Tracker API",
    "docs": "/docs",
    "openapi": "/openapi.json",
    "send": "GET /{accountId}?data=... or POST /{accountId}",
}


@router.get("/")
async def root() -> dict[str, str]:
    """Where to go from here: the interactive docs at ``/docs``."""
    return ENTRY


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> JSONResponse:
    """No icon: a plain 404, never an event request."""
    return JSONResponse({"detail": "Not Found"}, status_code=404)
