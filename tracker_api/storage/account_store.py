"""The ``accounts`` table as operators change it: pages, one row, create, change, remove,
and the archived events an account has (docs/adr/0019-account-management.md).

The event path reads accounts through ``db.fetch_account`` behind the account cache;
nothing here runs on it. Each change is one statement whose ``WHERE`` says what it
changes (``is_active <> :wanted``), so the row count tells whether *this* call changed
the row, whatever other operators do at the same moment, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Row, Table, delete, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel

from tracker_api.storage.event_store import EVENTS
from tracker_api.storage.models import Account

ACCOUNTS: Table = SQLModel.metadata.tables[Account.__tablename__]
# Events of a removed account are deleted this many per transaction, as retention does,
# so the archive's writes never wait long behind a big removal.
DELETE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    name: str
    active: bool


def _row(found: Row[Any, Any, Any]) -> AccountRow:
    account_id, name, active = found
    return AccountRow(account_id, name, bool(active))


def has_accounts_table(engine: Engine) -> bool:
    """Whether the database has been migrated (or seeded) at all."""
    with engine.connect() as connection:
        return inspect(connection).has_table(Account.__tablename__)


def get(engine: Engine, account_id: str) -> AccountRow | None:
    columns = ACCOUNTS.c
    query = select(columns.account_id, columns.account_name, columns.is_active).where(
        columns.account_id == account_id
    )
    with engine.connect() as connection:
        found = connection.execute(query).first()
    return None if found is None else _row(found)


def page(engine: Engine, after: str | None, limit: int, active: bool | None) -> list[AccountRow]:
    """Up to ``limit`` accounts in id order (as the database orders strings), after the
    id ``after``; only active or inactive ones when ``active`` says so."""
    columns = ACCOUNTS.c
    query = select(columns.account_id, columns.account_name, columns.is_active)
    if after is not None:
        query = query.where(columns.account_id > after)
    if active is not None:
        query = query.where(columns.is_active == active)
    query = query.order_by(columns.account_id).limit(limit)
    with engine.connect() as connection:
        return [_row(found) for found in connection.execute(query)]


def insert(engine: Engine, row: AccountRow) -> bool:
    """Create the account; False (and nothing changed) when the id exists already."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    # RETURNING, not the row count: psycopg reports none (-1) for this statement.
    statement = (
        dialect.insert(ACCOUNTS)
        .on_conflict_do_nothing(index_elements=["account_id"])
        .returning(ACCOUNTS.c.account_id)
    )
    values = {"account_id": row.account_id, "account_name": row.name, "is_active": row.active}
    with engine.begin() as connection:
        return connection.execute(statement, values).first() is not None


def set_name(engine: Engine, account_id: str, name: str) -> bool:
    """Rename the account; whether this call changed it (False: unknown, or that name)."""
    columns = ACCOUNTS.c
    statement = (
        update(ACCOUNTS)
        .where(columns.account_id == account_id, columns.account_name != name)
        .values(account_name=name)
    )
    with engine.begin() as connection:
        return bool(connection.execute(statement).rowcount)


def set_active(engine: Engine, account_id: str, active: bool) -> bool:
    """(De)activate the account; whether this call changed it (False: unknown, or so)."""
    columns = ACCOUNTS.c
    statement = (
        update(ACCOUNTS)
        .where(columns.account_id == account_id, columns.is_active != active)
        .values(is_active=active)
    )
    with engine.begin() as connection:
        return bool(connection.execute(statement).rowcount)


def count_events(engine: Engine, account_id: str) -> int:
    """The account's archived events (an index range: ``ix_events_account_ts_seq``)."""
    query = select(func.count()).select_from(EVENTS).where(EVENTS.c.account_id == account_id)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _delete_events(engine: Engine, account_id: str, limit: int) -> int:
    columns = EVENTS.c
    some = select(columns.seq).where(columns.account_id == account_id).limit(limit)
    with engine.begin() as connection:
        return int(connection.execute(delete(EVENTS).where(columns.seq.in_(some))).rowcount)


def remove(engine: Engine, account_id: str, with_events: bool) -> tuple[bool, int]:
    """Delete the account (and, ``with_events``, its archived events, a small transaction
    at a time; the last ones go with the account's row): (removed, events deleted)."""
    deleted = 0
    while with_events and (batch := _delete_events(engine, account_id, DELETE_BATCH)):
        deleted += batch
        if batch < DELETE_BATCH:
            break
    with engine.begin() as connection:
        if with_events:
            rest = connection.execute(delete(EVENTS).where(EVENTS.c.account_id == account_id))
            deleted += int(rest.rowcount)
        removed = connection.execute(delete(ACCOUNTS).where(ACCOUNTS.c.account_id == account_id))
        return bool(removed.rowcount), deleted
