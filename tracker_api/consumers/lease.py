"""The ingest lease: at most one tracker process holds it, and only the holder consumes
``ingest/+`` in ``leader`` mode (docs/adr/0014-ingest-on-every-broker.md).

A ``Lease`` is small and blocking (callers run it in a thread): ``try_acquire`` without
waiting, ``held`` to learn whether it is still ours, ``release``. Two kinds:

- ``PostgresLease``: ``pg_try_advisory_lock`` on a connection of its own, kept for as long
  as the lease is held. PostgreSQL drops the lock with the session, so a holder that dies
  or loses its connection loses the lease, and ``held`` says so at the next check.
- ``FileLease``: an ``flock`` on a file under ``TRACKER_STATE_DIR``, for SQLite, where
  every tracker runs on one host; the kernel drops it when the holder dies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from tracker_api.service.client_ids import safe_directory, try_lock
from tracker_api.storage.db import error_reason

logger = logging.getLogger(__name__)

# libpq: notice a dead server or a silent network within seconds, not hours.
PG_CONNECT_ARGS = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
}


class Lease(Protocol):
    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; never waits for it."""

    def held(self) -> bool:
        """Whether the lease is still ours."""

    def release(self) -> None:
        """Give the lease up (nothing happens when it is not held)."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    digest = hashlib.sha256(f"tracker-ingest-lease:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLease:
    """``pg_try_advisory_lock`` on a dedicated connection."""

    def __init__(self, database_url: str, name: str) -> None:
        self.key = lock_key(name)
        self._engine = create_engine(
            make_url(database_url), poolclass=NullPool, connect_args=PG_CONNECT_ARGS
        )
        self._connection: Connection | None = None
        self._held = False
        self._lock = threading.Lock()  # release() may come while a check is running
        self._last_error = ""

    def try_acquire(self) -> bool:
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = self._engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    )
                query = text("SELECT pg_try_advisory_lock(:key)")
                self._held = bool(self._connection.execute(query, {"key": self.key}).scalar())
                self._last_error = ""
            except SQLAlchemyError as error:
                self._note(error)
                self._drop()
            return self._held

    def held(self) -> bool:
        with self._lock:
            if not self._held or self._connection is None:
                return False
            try:
                self._connection.execute(text("SELECT 1"))
            except SQLAlchemyError as error:
                self._note(error)
                self._drop()  # the session and with it the lock are gone
            return self._held

    def release(self) -> None:
        with self._lock:
            if self._held and self._connection is not None:
                try:
                    query = text("SELECT pg_advisory_unlock(:key)")
                    self._connection.execute(query, {"key": self.key})
                except SQLAlchemyError:
                    pass  # closing the connection below drops it as well
            self._drop()

    def _drop(self) -> None:
        self._held = False
        if self._connection is not None:
            try:
                self._connection.close()
            except SQLAlchemyError:
                pass
            self._connection = None

    def _note(self, error: SQLAlchemyError) -> None:
        reason = error_reason(error)
        if reason != self._last_error:  # once per kind of failure, not per attempt
            logger.warning("ingest lease: database unavailable: %s", reason)
        self._last_error = reason


class FileLease:
    """An ``flock`` on ``<state dir>/ingest-lease/<name>.lock``."""

    def __init__(self, state_dir: Path, name: str) -> None:
        directory = safe_directory(safe_directory(state_dir) / "ingest-lease")
        self.path = directory / f"{name}.lock"
        self._fd: int | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._fd is None:
                self._fd = try_lock(self.path)
            return self._fd is not None

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # closing drops the lock
                self._fd = None


def lease_for(database_url: str, state_dir: Path, name: str) -> Lease:
    """The lease that fits the database: PostgreSQL's advisory lock, else a host-wide file."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return PostgresLease(database_url, name)
    return FileLease(state_dir, name)
