"""The event archive: every event published on ``track/<accountId>``, kept once in the
``events`` table for the history API and ``mqtt-tail --since``
(docs/adr/0015-event-archive.md).

One consumer at a time holds the archive lease and reads ``track/#`` on a persistent
session under one fixed client id (``TRACKER_ARCHIVE_CLIENT_ID``), so whoever holds the
lease next resumes the same session. Messages are written in batches and each is
acknowledged only after its batch was committed: a crash loses nothing (the broker hands
the unacknowledged messages over again) and duplicates nothing (the (account, eventId) key
makes a second copy a no-op). While the database is down nothing is acknowledged, the
broker keeps the events, and the batch is retried with backoff.

The account comes from the topic, never from the payload: a message whose envelope names
another account, or that is no envelope at all, is counted, acknowledged and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tracker_api import metrics
from tracker_api.config import Settings
from tracker_api.consumers.lease import Lease
from tracker_api.consumers.leased import LEASE_CHECK, LeasedConsumer
from tracker_api.mqtt import Message
from tracker_api.service.broker import Acknowledger
from tracker_api.storage.db import error_reason
from tracker_api.storage.event_store import Malformed, Row, expire, insert, parse
from tracker_api.tasks import cancel
from tracker_contract import topics
from tracker_contract.backoff import Backoff

logger = logging.getLogger(__name__)

SUBSCRIPTION = (topics.EVERY_ACCOUNT, 1)
# A batch is written when it holds this many messages, or this long after its first.
BATCH_SIZE, BATCH_LINGER = 500, 0.05
# Lag observations per committed batch (an even sample of its rows).
LAG_SAMPLES = 32
# Retrying a batch while the database is down: 0.2 s doubling up to 5 s.
RETRY_FIRST, RETRY_CAP = 0.2, 5.0
# Retention runs this often (each run deletes in batches: event_store.RETENTION_BATCH).
RETENTION_EVERY = 60.0


# -- the consumer ------------------------------------------------------------------------


class Archiver:
    """Consumes ``track/#`` messages into the table in batches (``publisher.Consumer``)."""

    def __init__(
        self,
        engine: Engine,
        acks: Acknowledger,
        batch_size: int = BATCH_SIZE,
        linger: float = BATCH_LINGER,
        inline: bool = False,
    ) -> None:
        """``inline``: commit on the event loop's own thread. Right for the archive's own
        process (``tracker-api archive``), whose loop serves nothing else: a thread would
        have to take the GIL back from the loop for every row it binds, which cost about
        a fifth of the throughput. Inside an API worker the loop must not wait on the
        database, so the commit goes to a thread there."""
        self.engine = engine
        self.acks = acks
        self.inline = inline
        self.batch_size = batch_size
        self.linger = linger
        self.database_error = ""  # why the last write failed, "" once one succeeds
        self._pending: list[tuple[Message, Row]] = []
        self._arrived = asyncio.Event()  # the batch has something
        self._full = asyncio.Event()  # the batch is full, or is being drained
        self._task: asyncio.Task[None] | None = None

    def handle(self, message: Message) -> None:
        try:
            row = parse(message.topic, message.payload)
        except Malformed as error:
            metrics.ARCHIVE_MALFORMED.inc()
            logger.warning("archive: skipped a message on %s: %s", message.topic, error)
            self.acks.ack(message)  # never let it block the session
            return
        self._pending.append((message, row))
        self._arrived.set()
        if len(self._pending) >= self.batch_size:
            self._full.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write(), name="archive")

    async def _write(self) -> None:
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if len(self._pending) < self.batch_size:
                self._full.clear()
                try:  # a moment for the batch to fill: one commit for many messages
                    await asyncio.wait_for(self._full.wait(), self.linger)
                except TimeoutError:
                    pass
            batch = self._pending[: self.batch_size]
            await self._commit([row for _, row in batch])
            del self._pending[: len(batch)]
            for message, _ in batch:
                self.acks.ack(message)  # False for a copy from a lost connection: fine

    async def _commit(self, rows: list[Row]) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            try:
                if self.inline:
                    insert(self.engine, rows)
                else:
                    await asyncio.to_thread(insert, self.engine, rows)
            except SQLAlchemyError as error:
                reason = error_reason(error)
                if reason != self.database_error:
                    logger.warning("archive: database unavailable, not acknowledging: %s", reason)
                self.database_error = reason
                await asyncio.sleep(backoff.next())
                continue
            if self.database_error:
                logger.info("archive: database back, catching up")
            self.database_error = ""
            now = time.time() * 1000
            # An even sample of the batch: the quantiles stay right, and a batch of 500
            # costs 32 observations (each one a write to a shared file with workers > 1).
            for row in rows[:: max(1, len(rows) // LAG_SAMPLES)]:
                metrics.ARCHIVE_LAG_SECONDS.observe(max(0.0, (now - row.ts) / 1000))
            metrics.ARCHIVED.inc(len(rows))
            return

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    async def drain(self, timeout: float) -> None:
        """Let the batch in hand be committed (and acknowledged), then stop writing."""
        deadline = time.monotonic() + timeout
        while self._pending and not self.database_error and time.monotonic() < deadline:
            self._full.set()
            await asyncio.sleep(0.01)
        await cancel(self._task)


class Archive(LeasedConsumer):
    """Holds the archive lease, consumes ``track/#`` while it does, and expires old
    events every ``RETENTION_EVERY`` seconds. ``status`` is what ``/readyz`` shows:
    ``leader``, ``follower``, ``behind: database unavailable`` or ``refused: <why>``."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        lease: Lease,
        check_every: float = LEASE_CHECK,
        retention_every: float = RETENTION_EVERY,
        inline: bool = False,
    ) -> None:
        self.engine = engine
        self.inline = inline  # see Archiver
        self.retention = settings.archive_retention
        self.retention_every = retention_every
        self.archiver: Archiver | None = None
        super().__init__(
            settings,
            lease,
            name="archive",
            client_id=settings.archive_session,
            subscription=SUBSCRIPTION,
            consumer=self._consumer,
            check_every=check_every,
        )

    def _consumer(self, acks: Acknowledger) -> Archiver:
        self.archiver = Archiver(self.engine, acks, inline=self.inline)
        return self.archiver

    @property
    def status(self) -> str:
        status = super().status
        if status == "leader" and self.archiver is not None and self.archiver.database_error:
            return "behind: database unavailable"
        return status

    async def while_leading(self) -> None:
        # Beside the lease checks, not between them: a long first expiry must not leave a
        # lost lease unnoticed.
        retention = asyncio.get_running_loop().create_task(self._expire_every())
        try:
            await super().while_leading()
        finally:
            await cancel(retention)

    async def _expire_every(self) -> None:
        while True:
            await self._expire()
            await asyncio.sleep(self.retention_every)

    async def _expire(self) -> None:
        try:
            deleted = await asyncio.to_thread(expire, self.engine, self.retention)
        except SQLAlchemyError as error:
            logger.warning("archive: retention skipped, database unavailable: %s", error)
            return
        if deleted:
            logger.info("archive: deleted %d event(s) older than %s", deleted, self.retention)
