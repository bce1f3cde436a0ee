"""Engine creation and the few queries the service runs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, event, inspect, text
from sqlmodel import Session, SQLModel, create_engine, select

from tracker_api.config import ConfigError, check_database_url
from tracker_api.storage.models import Account


def make_engine(database_url: str, pool_size: int | None = None) -> Engine:
    """An engine for SQLite (file created on demand, WAL) or PostgreSQL (pooled).

    ``pool_size``: a pool of exactly that many connections, for one executor of that many
    threads (the account lookups, the history); by default a pool for everything else."""
    try:
        url = check_database_url(database_url)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        in_memory = not url.database or url.database == ":memory:"  # one connection, kept
        sized = (
            {} if pool_size is None or in_memory else {"pool_size": pool_size, "max_overflow": 0}
        )
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 5},
            pool_pre_ping=False,
            **sized,
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
        pool_size=4 if pool_size is None else pool_size,
        max_overflow=4 if pool_size is None else 0,
        pool_timeout=2,
        connect_args={"connect_timeout": 2} if url.get_backend_name() == "postgresql" else {},
    )


def create_schema(engine: Engine) -> None:
    """Every table as the models say, without migrations: for throwaway databases (tests).
    A database that is kept is brought up to date by ``migrate``."""
    SQLModel.metadata.create_all(engine)


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The revision whose schema is what ``create_all`` made before migrations existed.
BASELINE = "0001_accounts"


def made_by_create_all(tables: set[str]) -> str:
    """The revision a database ``create_schema`` made (no ``alembic_version``) is at:
    the newest whose table it has."""
    if "archive_watermarks" in tables:
        return "head"
    return "0002_events" if "events" in tables else BASELINE


def migrate(target: Engine | str) -> str:
    """Upgrade the database to the newest schema; returns its revision.

    A database from before migrations (tables but no ``alembic_version``) is first
    stamped with the revision its tables match, so its rows are kept as they are."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    engine = make_engine(target) if isinstance(target, str) else target
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            tables = set(inspect(connection).get_table_names())
            if "alembic_version" not in tables and "accounts" in tables:
                # Made by create_schema: stamped with the newest revision its tables match.
                command.stamp(config, made_by_create_all(tables))
            command.upgrade(config, "head")
        return ScriptDirectory.from_config(config).get_current_head() or ""
    finally:
        if isinstance(target, str):
            engine.dispose()


def fetch_account(engine: Engine, account_id: str) -> Account | None:
    with Session(engine) as session:
        return session.exec(select(Account).where(Account.account_id == account_id)).first()


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def error_reason(error: Exception) -> str:
    """A database error in one line: the driver's own message (not SQLAlchemy's wrapping
    of the statement), for logs that say each new reason once."""
    return (str(getattr(error, "orig", None) or error).splitlines() or ["?"])[0]
