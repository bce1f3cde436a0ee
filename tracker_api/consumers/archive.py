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

The watermark (docs/adr/0018-bounded-history.md): every ``MARK_EVERY`` seconds the holder
publishes a mark, its clock's time, on a topic of its own (``tracker/status/<client
id>/mark``). The broker queues the session's messages in order, so every event it
acknowledged before the mark was sent arrives before the mark; once the mark's batch is
committed, the archive holds all of them, and the mark's time is stored (in the same
transaction) as the watermark that the history API serves and ``mqtt-tail --since``
waits for.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import suppress
from dataclasses import dataclass

import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tracker_api import metrics
from tracker_api.config import Settings
from tracker_api.consumers.lease import Lease
from tracker_api.consumers.leased import LEASE_CHECK, LeasedConsumer
from tracker_api.errors import PublishFailed, TrackerError
from tracker_api.mqtt import Message
from tracker_api.service.broker import Acknowledger
from tracker_api.storage.db import error_reason
from tracker_api.storage.event_store import Malformed, Row, Watermark, expire, insert, parse
from tracker_api.tasks import cancel
from tracker_contract import topics
from tracker_contract.backoff import Backoff

logger = logging.getLogger(__name__)

SUBSCRIPTION = (topics.EVERY_ACCOUNT, 1)
# A mark every this many seconds: how far behind the watermark trails when all is well.
MARK_EVERY = 0.5
# A mark not back after this long (lost with a connection) is followed by another.
MARK_RESEND = 10.0
# A batch is written when it holds this many messages, or this long after its first.
# Catching up, every batch is full: 2,000 rows a commit stored a 500,000-event backlog at
# 60k events/s on SQLite where 500 gave 45k (the commit's fsync is paid per batch). A full
# batch must leave room in the broker's window for the next one, which is why the
# brokers' windows are 5,000 (mqtt/conf.d/durability.conf, mqtt.prefetch on RabbitMQ).
BATCH_SIZE, BATCH_LINGER = 2000, 0.05
# Lag observations per committed batch (an even sample of its rows).
LAG_SAMPLES = 32
# Retrying a batch while the database is down: 0.2 s doubling up to 5 s.
RETRY_FIRST, RETRY_CAP = 0.2, 5.0
# Retention runs this often (each run deletes in batches: event_store.RETENTION_BATCH).
RETENTION_EVERY = 60.0


# -- the consumer ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark:
    """A mark of this archiver, back from the broker: when it was sent (epoch ms)."""

    at: int


class Archiver:
    """Consumes ``track/#`` messages into the table in batches (``publisher.Consumer``)."""

    def __init__(
        self,
        engine: Engine,
        acks: Acknowledger,
        batch_size: int = BATCH_SIZE,
        linger: float = BATCH_LINGER,
        inline: bool = False,
        session: str = "",
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
        self.session = session  # whose watermark the marks raise
        self.database_error = ""  # why the last write failed, "" once one succeeds
        # Marks of other archivers (an earlier holder's, redelivered) are only acknowledged.
        self.nonce = secrets.token_hex(8)
        self._mark_sent: float | None = None  # monotonic time of the mark on its way
        self._pending: list[tuple[Message, Row | Mark]] = []
        self._arrived = asyncio.Event()  # the batch has something
        self._full = asyncio.Event()  # the batch is full, or is being drained
        self._task: asyncio.Task[None] | None = None

    def mark(self) -> bytes | None:
        """The next mark to publish, or None while the last one is still on its way."""
        now = time.monotonic()
        if self._mark_sent is not None and now - self._mark_sent < MARK_RESEND:
            return None
        self._mark_sent = now
        return orjson.dumps({"at": int(time.time() * 1000), "by": self.nonce})

    def mark_not_sent(self) -> None:
        self._mark_sent = None

    def handle(self, message: Message) -> None:
        if topics.account_of(message.topic) is None:  # not track/…: the mark topic
            self._handle_mark(message)
            return
        try:
            row = parse(message.topic, message.payload)
        except Malformed as error:
            metrics.ARCHIVE_MALFORMED.inc()
            logger.warning("archive: skipped a message on %s: %s", message.topic, error)
            self.acks.ack(message)  # never let it block the session
            return
        self._queue(message, row)

    def _handle_mark(self, message: Message) -> None:
        try:
            mark = orjson.loads(message.payload)
            ours = mark["by"] == self.nonce and isinstance(mark["at"], int)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            ours = False
        if not ours:
            self.acks.ack(message)
            return
        self._queue(message, Mark(mark["at"]))

    def _queue(self, message: Message, item: Row | Mark) -> None:
        self._pending.append((message, item))
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
                # A moment for the batch to fill: one commit for many messages.
                with suppress(TimeoutError):
                    async with asyncio.timeout(self.linger):
                        await self._full.wait()
            batch = self._pending[: self.batch_size]
            rows = [item for _, item in batch if isinstance(item, Row)]
            marks = [item for _, item in batch if isinstance(item, Mark)]
            # The batch's last mark: everything before it in the session is in this batch
            # or an earlier one, so it is stored with them.
            watermark = Watermark(self.session, marks[-1].at) if marks else None
            await self._commit(rows, watermark)
            if marks:
                self._mark_sent = None  # back and stored: the next one may go
            del self._pending[: len(batch)]
            for message, _ in batch:
                self.acks.ack(message)  # False for a copy from a lost connection: fine

    async def _commit(self, rows: list[Row], watermark: Watermark | None) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            try:
                if self.inline:
                    insert(self.engine, rows, watermark)
                else:
                    await asyncio.to_thread(insert, self.engine, rows, watermark)
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
        mark_every: float = MARK_EVERY,
    ) -> None:
        self.engine = engine
        self.inline = inline  # see Archiver
        self.retention = settings.archive_retention
        self.retention_every = retention_every
        self.mark_every = mark_every
        self.archiver: Archiver | None = None
        self.mark_topic = topics.archive_mark(settings.archive_session)
        super().__init__(
            settings,
            lease,
            name="archive",
            client_id=settings.archive_session,
            subscriptions=[SUBSCRIPTION, (self.mark_topic, 1)],
            consumer=self._consumer,
            check_every=check_every,
        )

    def _consumer(self, acks: Acknowledger) -> Archiver:
        self.archiver = Archiver(self.engine, acks, session=self.client_id, inline=self.inline)
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
        loop = asyncio.get_running_loop()
        retention = loop.create_task(self._expire_every())
        marks = loop.create_task(self._mark_every())
        try:
            await super().while_leading()
        finally:
            await cancel(marks)
            await cancel(retention)

    async def _mark_every(self) -> None:
        while True:
            await asyncio.sleep(self.mark_every)
            await self._send_mark()

    async def _send_mark(self) -> None:
        archiver, connection = self.archiver, self.connection
        if archiver is None or connection is None or not connection.connected:
            return
        mark = archiver.mark()
        if mark is None:
            return
        try:
            await connection.publish(self.mark_topic, mark)
        except PublishFailed:  # not sent: the next tick sends another
            archiver.mark_not_sent()
        except TrackerError as error:  # sent, not acknowledged: it may still come back
            logger.debug("archive: a mark was not acknowledged: %s", error)

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
