"""The ``events`` table: the archive's rows, written once per (account, eventId), read
back in (timestamp, sequence) order by the history API and paged by cursor
(docs/adr/0015-event-archive.md). Also what a ``track/<accountId>`` message must be to
become a row: the account comes from the topic, never from the payload.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson
from sqlalchemy import (
    ColumnElement,
    Engine,
    LargeBinary,
    Table,
    and_,
    cast,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from tracker_api.storage.models import ArchivedEvent, ArchiveWatermark
from tracker_contract import topics
from tracker_contract.durations import InvalidTime, parse_timestamp
from tracker_contract.ids import ACCOUNT_ID

EVENTS: Table = SQLModel.metadata.tables[ArchivedEvent.__tablename__]
WATERMARKS: Table = SQLModel.metadata.tables[ArchiveWatermark.__tablename__]
# Retention deletes this many rows per transaction, so writers never wait long.
RETENTION_BATCH = 1000


class Malformed(ValueError):
    """A message on ``track/#`` that is not an event of the topic's account."""


class Row(NamedTuple):
    """One row of the table, in its columns' order (the driver takes it as it is)."""

    account_id: str
    event_id: str
    ts: int  # epoch milliseconds
    envelope: str


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class TimestampReader:
    """Epoch milliseconds of an envelope's ``timestamp``. The tracker writes them as
    ``YYYY-MM-DDThh:mm:ss.mmmZ``, and consecutive events share their second: that second is
    converted once and reused, the milliseconds added. Any other RFC 3339 form goes the
    long way (``durations.parse_timestamp``); anything else is ``InvalidTime``."""

    def __init__(self) -> None:
        self._second: tuple[str, int] = ("", 0)  # one assignment: safe across threads

    def ms(self, timestamp: str) -> int:
        if len(timestamp) == 24 and timestamp[19] == "." and timestamp[23] == "Z":
            fraction = timestamp[20:23]
            if fraction.isascii() and fraction.isdigit():
                prefix, base = self._second
                if timestamp[:19] != prefix:
                    prefix = timestamp[:19]
                    base = to_ms(parse_timestamp(prefix + "Z"))
                    self._second = (prefix, base)
                return base + int(fraction)
        return to_ms(parse_timestamp(timestamp))


_timestamps = TimestampReader()


_ACCOUNT_TOPICS: dict[str, str] = {}  # topic -> its account, for topics already checked
_KNOWN_TOPICS = 100_000


def account_of_topic(topic: str) -> str:
    """The account a ``track/…`` topic names; ``Malformed`` when it names none."""
    account_id = _ACCOUNT_TOPICS.get(topic)
    if account_id is None:
        account_id = topics.account_of(topic)
        if account_id is None or not ACCOUNT_ID.fullmatch(account_id):
            raise Malformed(f"not an account topic: {topic!r}")
        if len(_ACCOUNT_TOPICS) < _KNOWN_TOPICS:
            _ACCOUNT_TOPICS[topic] = account_id
    return account_id


def parse(topic: str, payload: bytes) -> Row:
    """The row of a ``track/<accountId>`` message; ``Malformed`` when it is none."""
    account_id = account_of_topic(topic)
    try:
        envelope = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise Malformed("not JSON") from None
    if not isinstance(envelope, dict):
        raise Malformed("not a JSON object")
    event_id, timestamp = envelope.get("eventId"), envelope.get("timestamp")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
        raise Malformed("no eventId")
    if envelope.get("accountId") != account_id:
        raise Malformed(f"accountId is not the topic's ({account_id})")
    if not isinstance(timestamp, str):
        raise Malformed("no timestamp")
    try:
        ts = _timestamps.ms(timestamp)
    except InvalidTime:
        raise Malformed("timestamp is not RFC 3339") from None
    return Row(account_id, event_id, ts, payload.decode())


# -- the table ---------------------------------------------------------------------------


INSERT = {
    dialect: "INSERT INTO events (account_id, event_id, ts, envelope) "
    f"VALUES ({', '.join([marker] * 4)}) ON CONFLICT (account_id, event_id) DO NOTHING"
    for dialect, marker in (("sqlite", "?"), ("postgresql", "%s"))
}


@dataclass(frozen=True, slots=True)
class Watermark:
    """Every event the broker acknowledged before ``ts`` (epoch ms) is stored, as the
    archive consuming as ``session`` found it (docs/adr/0018-bounded-history.md)."""

    session: str
    ts: int


def insert(engine: Engine, rows: Sequence[Row], watermark: Watermark | None = None) -> None:
    """Write ``rows`` in one transaction; a row already there (same account and eventId)
    is left as it is. ``watermark`` is raised in the same transaction (never lowered), so
    it never claims a row that is not committed.

    The rows go through the driver, one prepared statement for every row (sqlite3's
    executemany, psycopg's pipelined executemany): building a SQLAlchemy statement per
    batch cost more CPU than the database's own work."""
    postgres = engine.dialect.name == "postgresql"
    dialect = postgresql if postgres else sqlite
    with engine.begin() as connection:
        if rows:
            connection.exec_driver_sql(INSERT["postgresql" if postgres else "sqlite"], list(rows))
        if watermark is not None:
            raised = dialect.insert(WATERMARKS).values(session=watermark.session, ts=watermark.ts)
            connection.execute(
                raised.on_conflict_do_update(
                    index_elements=["session"],
                    set_={"ts": raised.excluded.ts},
                    where=WATERMARKS.c.ts < raised.excluded.ts,
                )
            )


@dataclass(frozen=True, slots=True)
class ArchiveState:
    """What a history answer says of the archive, read before its rows."""

    watermark: int | None  # epoch ms; None: never marked
    position: int  # the highest sequence stored (0: none)


def state(engine: Engine, session: str) -> ArchiveState:
    """The watermark of the archive consuming as ``session``, and the position (highest
    sequence) the archive had reached. Read before a history's rows, so that those rows
    include every event the watermark vouches for, and every one up to the position."""
    with engine.connect() as connection:
        watermark = connection.execute(
            select(WATERMARKS.c.ts).where(WATERMARKS.c.session == session)
        ).scalar_one_or_none()
        position = connection.execute(select(func.max(EVENTS.c.seq))).scalar_one_or_none()
    return ArchiveState(watermark, int(position or 0))


def delete_before(engine: Engine, cutoff_ms: int, limit: int = RETENTION_BATCH) -> int:
    """Delete at most ``limit`` of the oldest events before ``cutoff_ms``; how many."""
    oldest = select(EVENTS.c.seq).where(EVENTS.c.ts < cutoff_ms).order_by(EVENTS.c.ts).limit(limit)
    with engine.begin() as connection:
        result = connection.execute(delete(EVENTS).where(EVENTS.c.seq.in_(oldest)))
        return int(result.rowcount)


def expire(engine: Engine, retention: timedelta, now: datetime | None = None) -> int:
    """Delete every event older than ``retention``, a small transaction at a time."""
    cutoff = to_ms((now or datetime.now(UTC)) - retention)
    total = 0
    while (deleted := delete_before(engine, cutoff)) > 0:
        total += deleted
        if deleted < RETENTION_BATCH:
            break
    return total


Cursor = tuple[int, int]  # (ts, seq) of the last event of a page
# What a BIGINT column holds: a cursor beyond it is none of ours (and no driver binds it).
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(f"{cursor[0]}.{cursor[1]}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """``ValueError`` for anything ``encode_cursor`` did not make."""
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        ts, seq = (int(part) for part in decoded.split("."))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor of this API") from None
    if not (BIGINT_MIN <= ts <= BIGINT_MAX and 0 <= seq <= BIGINT_MAX):
        raise ValueError("not a cursor of this API")
    return ts, seq


@dataclass(frozen=True, slots=True)
class Planned:
    """An event a read will return, before its envelope is fetched."""

    ts: int
    seq: int
    size: int  # the envelope's length in bytes (UTF-8)

    @property
    def cursor(self) -> Cursor:
        return self.ts, self.seq


def plan(
    engine: Engine,
    accounts: Sequence[str] | None,
    since_ms: int,
    until_ms: int,
    after: Cursor | None,
    limit: int,
    stored_after: int | None = None,
) -> list[Planned]:
    """Up to ``limit`` events in [since, until] (all accounts when ``accounts`` is None),
    in (timestamp, sequence) order, after ``after``: where each is and how large its
    envelope is, not the envelope. A reader then fetches as many envelopes at a time as
    its memory budget allows (``envelopes``), whatever the events' size. With
    ``stored_after`` (a position of ``state``), only events stored after it."""
    columns = EVENTS.c
    query = select(columns.ts, columns.seq, _byte_length(engine)).where(
        columns.ts >= since_ms, columns.ts <= until_ms
    )
    if accounts is not None:
        query = query.where(columns.account_id.in_(accounts))
    if after is not None:
        # Spelled out rather than a row comparison, which SQLite plans as a scan; the
        # redundant ts >= bound lets both databases start the index range at the cursor
        # instead of at ``since`` (a stream through a long range was quadratic without it).
        query = query.where(
            columns.ts >= after[0],
            or_(columns.ts > after[0], and_(columns.ts == after[0], columns.seq > after[1])),
        )
    if stored_after is not None:
        query = query.where(columns.seq > stored_after)
    query = query.order_by(columns.ts, columns.seq).limit(limit)
    with engine.connect() as connection:
        return [Planned(ts, seq, int(size)) for ts, seq, size in connection.execute(query)]


def _byte_length(engine: Engine) -> ColumnElement[int]:
    """The envelope's size in bytes, computed by the database: PostgreSQL reads it from
    the value's header; SQLite's length() of a BLOB counts bytes (of TEXT, characters)."""
    if engine.dialect.name == "postgresql":
        return func.octet_length(EVENTS.c.envelope)
    return func.length(cast(EVENTS.c.envelope, LargeBinary))


def envelopes(engine: Engine, planned: Sequence[Planned]) -> list[str]:
    """The envelopes of ``planned``, in its order. One deleted meanwhile (retention) is
    left out."""
    if not planned:
        return []
    columns = EVENTS.c
    query = select(columns.seq, columns.envelope).where(columns.seq.in_([p.seq for p in planned]))
    with engine.connect() as connection:
        found: dict[int, str] = dict(connection.execute(query).all())
    return [found[p.seq] for p in planned if p.seq in found]


def within(
    planned: Sequence[Planned], max_bytes: int, limit: int | None = None, *, first: bool = True
) -> int:
    """How many of ``planned``, from the first, fit in ``max_bytes`` and ``limit``. With
    ``first`` (a reader's first take) at least one does, so that a reader always moves on,
    even past an event larger than its budget."""
    total, count = 0, 0
    for item in planned[: limit if limit is not None else len(planned)]:
        total += item.size
        if total > max_bytes and (count or not first):
            break
        count += 1
    return count
