"""Alembic migrations: a database from before them keeps its rows; a fresh one is made."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect
from sqlmodel import Session, select

from devkit.postgres import PostgresCluster
from tests.helpers.postgres import throwaway_postgres
from tracker_api.storage.db import make_engine, migrate
from tracker_api.storage.models import Account, ArchivedEvent

HEAD = "0003_archive_watermarks"


def old_database(engine: Engine) -> None:
    """What ``create_all`` made before migrations: the accounts table only, with rows."""
    Account.__table__.create(engine)  # type: ignore[attr-defined]
    with Session(engine) as session:
        session.add(Account(account_id="7", account_name="Kept", is_active=False))
        session.commit()


def check_migrated(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"accounts", "events", "archive_watermarks", "alembic_version"} <= tables
    indexes = {index["name"] for index in inspect(engine).get_indexes("events")}
    assert {"ix_events_account_ts_seq", "ix_events_ts_seq"} <= indexes


def test_an_old_sqlite_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    old_database(engine)

    first = subprocess.run(
        [sys.executable, "-m", "tracker_api", "migrate"],
        env={"TRACKER_DATABASE_URL": url, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    again = migrate(engine)

    check_migrated(engine)
    with Session(engine) as session:
        kept = session.exec(select(Account)).all()
    assert [(a.account_id, a.account_name, a.is_active) for a in kept] == [("7", "Kept", False)]
    assert HEAD in first.stdout and again == HEAD
    engine.dispose()


def test_a_fresh_sqlite_database_gets_every_table(tmp_path: Path) -> None:
    assert migrate(f"sqlite:///{tmp_path / 'fresh.db'}") == HEAD
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    check_migrated(engine)
    engine.dispose()


def test_a_database_create_all_made_before_the_watermarks_gets_them(tmp_path: Path) -> None:
    """An archive made by an earlier create_schema (accounts and events, no alembic
    table) is stamped at the revision it matches, then upgraded."""
    engine = make_engine(f"sqlite:///{tmp_path / 'made.db'}")
    old_database(engine)
    ArchivedEvent.__table__.create(engine)  # type: ignore[attr-defined]

    assert migrate(engine) == HEAD
    check_migrated(engine)
    engine.dispose()


@pytest.fixture
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


@pytest.mark.postgres
def test_an_old_postgres_database_is_migrated_and_keeps_its_rows(postgres: PostgresCluster) -> None:
    engine = make_engine(postgres.url)
    old_database(engine)

    migrate(engine)

    check_migrated(engine)
    with Session(engine) as session:
        assert session.exec(select(Account.account_name)).all() == ["Kept"]
    engine.dispose()
