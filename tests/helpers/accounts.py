"""A real SQLite accounts database for tests."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from tracker_api.storage.db import create_schema, make_engine, migrate
from tracker_api.storage.models import Account

ACTIVE = ("1", "2", "acme.eu-1", "A_b-9")
INACTIVE = ("10", "dormant")


def seeded_sqlite(path: Path) -> tuple[str, Engine]:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    create_schema(engine)
    with Session(engine) as session:
        for account_id in ACTIVE:
            session.add(Account(account_id=account_id, account_name=f"Active {account_id}"))
        for account_id in INACTIVE:
            session.add(
                Account(account_id=account_id, account_name=f"Off {account_id}", is_active=False)
            )
        session.commit()
    return url, engine


def set_active(engine: Engine, account_id: str, active: bool) -> None:
    with Session(engine) as session:
        account = session.get(Account, account_id)
        assert account is not None
        account.is_active = active
        session.add(account)
        session.commit()


def migrated(url: str) -> Engine:
    """The database at ``url`` migrated to the newest schema, the active accounts in it."""
    engine = make_engine(url)
    migrate(engine)
    with Session(engine) as session:
        for account_id in ACTIVE:
            session.merge(Account(account_id=account_id, account_name=account_id))
        session.commit()
    return engine
