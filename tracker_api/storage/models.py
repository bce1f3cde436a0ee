"""Database tables (SQLModel): the same models run on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    account_id: str = Field(primary_key=True, max_length=64)
    account_name: str = Field(max_length=200)
    is_active: bool = Field(default=True)


class ArchivedEvent(SQLModel, table=True):
    """One event as published on ``track/<accountId>`` (docs/adr/0015-event-archive.md).

    ``ts`` is the tracker's timestamp in epoch milliseconds: an integer compares and
    indexes the same on every database, and a cursor made of it never depends on how a
    driver rounds or zones a datetime. ``seq`` breaks ties between events of one
    millisecond in a stable order, and the (account, eventId) key makes a redelivered
    message a no-op."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("account_id", "event_id", name="uq_events_account_event"),
        Index("ix_events_account_ts_seq", "account_id", "ts", "seq"),
        Index("ix_events_ts_seq", "ts", "seq"),
    )

    seq: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    account_id: str = Field(max_length=64)
    event_id: str = Field(max_length=128)
    ts: int = Field(sa_column=Column(BigInteger(), nullable=False))
    envelope: str = Field(sa_column=Column(Text(), nullable=False))


class ArchiveWatermark(SQLModel, table=True):
    """How far the archive consuming as ``session`` (its client id) is complete: every
    event the broker acknowledged before ``ts`` (epoch milliseconds, the archive's clock)
    is in ``events`` (docs/adr/0018-bounded-history.md)."""

    __tablename__ = "archive_watermarks"

    session: str = Field(primary_key=True, max_length=128)
    ts: int = Field(sa_column=Column(BigInteger(), nullable=False))
