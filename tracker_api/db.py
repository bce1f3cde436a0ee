"""Engine creation and the few queries the service runs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlmodel import Session, SQLModel, create_engine, select

from .config import ConfigError
from .models import Account


def make_engine(database_url: str) -> Engine:
    """An engine for SQLite (file created on demand, WAL) or PostgreSQL (pooled)."""
    try:
        url = make_url(database_url)
        url.get_dialect()
    except ArgumentError:
        raise ConfigError(f"TRACKER_DATABASE_URL is not a valid URL: {database_url!r}") from None
    except (NoSuchModuleError, ImportError) as error:
        raise ConfigError(f"TRACKER_DATABASE_URL: unsupported database: {error}") from None
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 5}, pool_pre_ping=False
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets the seed or an operator write while the API reads.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=4,
        max_overflow=4,
        pool_timeout=2,
        connect_args={"connect_timeout": 2} if url.get_backend_name() == "postgresql" else {},
    )


def create_schema(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)


def fetch_account(engine: Engine, account_id: str) -> Account | None:
    with Session(engine) as session:
        return session.exec(select(Account).where(Account.account_id == account_id)).first()


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
