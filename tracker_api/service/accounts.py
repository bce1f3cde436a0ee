"""Account lookup with a bounded TTL cache in front of the database.

A hit costs a dict lookup on the event loop. A miss runs one query in a thread of the
cache's own executor (given by the app, with a database pool of its own: a busy history or
archive cannot make it wait for a thread or a connection); concurrent misses for the same
id share that query. Positive and negative answers are cached for ``ttl`` seconds counted
from when the query started, so an answer is never older than ``ttl`` however long the
query waited: a change to an account (deactivated, created, removed) takes effect on every
worker within ``ttl`` seconds of its commit. At most ``max_entries`` ids are held (oldest
evicted first). ``forget`` drops one id at once, for the worker that made the change
itself (the admin API).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tracker_api.config import Settings
from tracker_api.errors import AccountInactive, AccountNotFound, DatabaseUnavailable
from tracker_api.storage import db


class AccountState(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    UNKNOWN = "unknown"


def state_from_database(engine: Engine, account_id: str) -> AccountState:
    account = db.fetch_account(engine, account_id)
    if account is None:
        return AccountState.UNKNOWN
    return AccountState.ACTIVE if account.is_active else AccountState.INACTIVE


class AccountCache:
    def __init__(
        self,
        load: Callable[[str], AccountState],
        ttl: float = 5.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
    ) -> None:
        self._load = load
        self._executor = executor  # None: asyncio's default one
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        # id -> (expiry, state), oldest stored first: what the size bound evicts.
        self._entries: OrderedDict[str, tuple[float, AccountState]] = OrderedDict()
        self._loading: dict[str, asyncio.Task[AccountState]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def state(self, account_id: str) -> AccountState:
        entry = self._entries.get(account_id)
        if entry is not None and entry[0] > self._clock():
            self.hits += 1
            return entry[1]
        self.misses += 1
        loading = self._loading.get(account_id)
        if loading is None:
            # The query runs as a task of its own, not in the first caller: cancelling that
            # caller (a client hanging up) must not leave the others waiting forever.
            loading = asyncio.get_running_loop().create_task(self._fetch(account_id))
            self._loading[account_id] = loading
        # Every waiter gets the task's result or its exception, whatever its type.
        return await asyncio.shield(loading)

    async def _fetch(self, account_id: str) -> AccountState:
        # The answer is as old as the query's start (the database may have changed at any
        # moment after it), however long the query then waited for a thread or a lock.
        expiry = self._clock() + self._ttl
        try:
            loop = asyncio.get_running_loop()
            state = await loop.run_in_executor(self._executor, self._load, account_id)
        except SQLAlchemyError as error:
            raise DatabaseUnavailable() from error
        finally:
            # Forgotten meanwhile: the answer may predate the change that made us forget.
            current = self._loading.get(account_id) is asyncio.current_task()
            if current:
                del self._loading[account_id]
        if current:
            self._store(account_id, state, expiry)
        return state

    def _store(self, account_id: str, state: AccountState, expiry: float) -> None:
        entries = self._entries
        entries.pop(account_id, None)
        if expiry <= self._clock():
            return  # already stale: the waiters get it, nobody after them
        entries[account_id] = (expiry, state)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)

    def forget(self, account_id: str) -> None:
        """Drop what this worker knows of ``account_id``: its next event reads the
        database. A query for it already under way still answers its waiters, but its
        answer is not kept."""
        self._entries.pop(account_id, None)
        self._loading.pop(account_id, None)

    async def require_active(self, account_id: str) -> None:
        """Raise ``AccountNotFound`` / ``AccountInactive`` unless the account is active."""
        state = await self.state(account_id)
        if state is AccountState.ACTIVE:
            return
        raise AccountNotFound() if state is AccountState.UNKNOWN else AccountInactive()


def accounts_for(
    settings: Settings, engine: Engine, executor: Executor | None = None
) -> AccountCache:
    """The account cache of a process that serves events: ``engine``'s accounts table,
    read on ``executor``, cached as ``TRACKER_ACCOUNT_CACHE_TTL`` and
    ``TRACKER_ACCOUNT_CACHE_SIZE`` say."""
    return AccountCache(
        lambda account_id: state_from_database(engine, account_id),
        ttl=settings.account_cache_ttl,
        max_entries=settings.account_cache_size,
        executor=executor,
    )
