"""Reading the archive for ``GET /events`` with bounded memory and capacity of its own.

Memory: a read first plans its events (their cursors and envelope sizes, a few dozen bytes
each), then fetches envelopes ``CHUNK_BYTES`` at a time; a JSON page stops at
``PAGE_BYTES`` of envelopes (its ``next`` says where to go on). So a request holds about a
page, or a chunk while it streams NDJSON, however large the events are: at least one event
is always taken, so the largest a request holds is one page plus one event.

Capacity: the reads run on an executor and a database pool of their own
(``TRACKER_HISTORY_READERS`` threads and connections per worker); more requests wait for
a thread. Account lookups, which every event request may need, have their own executor
and pool (``service.accounts``), and the consumers keep the default ones: a slow history
cannot starve either (docs/adr/0018-bounded-history.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from sqlalchemy import Engine

from tracker_api.storage import event_store
from tracker_api.storage.event_store import ArchiveState, Cursor, Planned

T = TypeVar("T")

MiB = 1024 * 1024
PAGE_BYTES = 4 * MiB
"""Most envelope bytes in one JSON page: a page of large events ends early, with a next."""
CHUNK_BYTES = 1 * MiB
"""Most envelope bytes fetched at once (an NDJSON stream writes each chunk as it comes)."""
STREAM_PLAN = 5000
"""Events planned at a time while an NDJSON stream runs through a range (a plan row is a
timestamp, a sequence and a size: about 0.5 MB for 5,000). Each plan costs a query and a
thread hop: 5,000 streamed 300,000 events at 118-206k events/s where 1,000 gave 59-79k."""
FIRST_PLAN = 100
"""Events a JSON page plans first; then as many as its remaining budget seems to need."""


def next_step(taken: Sequence[Planned], budget: int) -> int:
    """How many events to plan next for ``budget`` bytes, judging by those ``taken``."""
    average = max(1, sum(item.size for item in taken) // max(1, len(taken)))
    return max(FIRST_PLAN, min(STREAM_PLAN, budget // average + 1))


@dataclass(frozen=True)
class Selection:
    """Which events a request asks for."""

    accounts: Sequence[str] | None  # None: every account
    since_ms: int
    until_ms: int
    after: Cursor | None
    stored_after: int | None = None  # only events stored after this archive position


@dataclass(frozen=True)
class Page:
    """A JSON page: its body, and the cursor of its last event when more follow."""

    body: bytes
    next: Cursor | None


class ArchiveReader:
    """The history's own threads and database connections."""

    def __init__(self, engine: Engine, executor: Executor, session: str = "") -> None:
        self.engine = engine
        self.executor = executor
        self.session = session  # the archive's client id: whose watermark to report

    async def state(self) -> ArchiveState:
        """The archive's watermark and position: read before any row of an answer."""
        return await self._run(event_store.state, self.engine, self.session)

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(function, *args))

    async def plan(self, selection: Selection, after: Cursor | None, limit: int) -> list[Planned]:
        return await self._run(
            event_store.plan,
            self.engine,
            selection.accounts,
            selection.since_ms,
            selection.until_ms,
            after,
            limit,
            selection.stored_after,
        )

    async def page(self, selection: Selection, limit: int) -> Page:
        """Up to ``limit`` events and at most ``PAGE_BYTES`` of them (at least one)."""
        taken: list[Planned] = []
        budget, after, step = PAGE_BYTES, selection.after, FIRST_PLAN
        while True:
            # Planned a step at a time, each as large as the budget left seems to need:
            # sizing 10,000 events of 16 kB to take the 256 that fit would read them all.
            wanted = min(step, limit + 1 - len(taken))  # one more than the limit: a next?
            batch = await self.plan(selection, after, wanted)
            fit = event_store.within(batch, budget, limit - len(taken), first=not taken)
            taken += batch[:fit]
            budget -= sum(item.size for item in batch[:fit])
            if fit < len(batch):  # cut by the budget or the limit: more follow
                following: Cursor | None = taken[-1].cursor
                break
            if len(batch) < wanted:  # the range is exhausted
                following = None
                break
            after = batch[-1].cursor
            step = next_step(taken, budget)
        body = await self._run(self._json_body, taken, following)
        return Page(body, following)

    def _json_body(self, planned: list[Planned], following: Cursor | None) -> bytes:
        # Built in the reader's thread: joining megabytes is not the event loop's work.
        envelopes = event_store.envelopes(self.engine, planned)
        body = b'{"events":[' + ",".join(envelopes).encode() + b'],"next":'
        if following is None:
            return body + b"null}"
        return body + b'"' + event_store.encode_cursor(following).encode() + b'"}'

    async def lines(
        self, selection: Selection, planned: list[Planned] | None = None
    ) -> AsyncIterator[bytes]:
        """NDJSON, ``CHUNK_BYTES`` at a time: the events ``planned``, or (None) every event
        of the selection, planned ``STREAM_PLAN`` at a time."""
        if planned is not None:
            async for chunk in self._chunks(planned):
                yield chunk
            return
        after = selection.after
        while True:
            batch = await self.plan(selection, after, STREAM_PLAN)
            async for chunk in self._chunks(batch):
                yield chunk
            if len(batch) < STREAM_PLAN:
                return
            after = batch[-1].cursor

    async def _chunks(self, planned: list[Planned]) -> AsyncIterator[bytes]:
        start = 0
        while start < len(planned):
            end = start + event_store.within(planned[start:], CHUNK_BYTES)
            yield await self._run(self._ndjson, planned[start:end])
            start = end

    def _ndjson(self, planned: list[Planned]) -> bytes:
        return "".join(
            envelope + "\n" for envelope in event_store.envelopes(self.engine, planned)
        ).encode()
