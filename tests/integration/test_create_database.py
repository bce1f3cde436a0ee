"""deploy/create_database.py on a real PostgreSQL server: creates a missing database once,
leaves an existing one alone, and says in one line why it could not."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devkit.net import free_port
from devkit.postgres import PostgresCluster
from tests.helpers.postgres import throwaway_postgres

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "create_database.py"
pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


def create(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def url(postgres: PostgresCluster, database: str, user: str = "postgres") -> str:
    return f"postgresql+psycopg://{user}@127.0.0.1:{postgres.port}/{database}"


def connect(postgres: PostgresCluster, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1", port=postgres.port, user="postgres", dbname=database, autocommit=True
    )


def databases_named(postgres: PostgresCluster, name: str) -> int:
    with connect(postgres) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_creates_the_database_once_and_a_second_run_changes_nothing(
    postgres: PostgresCluster,
) -> None:
    assert databases_named(postgres, "tracker_cluster") == 0

    first = create(TRACKER_DATABASE_URL=url(postgres, "tracker_cluster"))

    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"create-database: created database tracker_cluster on 127.0.0.1:{postgres.port}\n"
    )
    assert databases_named(postgres, "tracker_cluster") == 1
    with connect(postgres, "tracker_cluster") as connection:
        connection.execute("CREATE TABLE kept (n int)")
        connection.execute("INSERT INTO kept VALUES (7)")

    second = create(TRACKER_DATABASE_URL=url(postgres, "tracker_cluster"))

    assert second.returncode == 0, second.stderr
    assert "tracker_cluster" in second.stdout and "exists already" in second.stdout
    assert second.stderr == ""
    assert databases_named(postgres, "tracker_cluster") == 1
    with connect(postgres, "tracker_cluster") as connection:
        assert connection.execute("SELECT n FROM kept").fetchall() == [(7,)]


def test_a_name_that_needs_quoting_is_created_as_written(postgres: PostgresCluster) -> None:
    name = "Tracker-Stack_cluster"  # upper case and a hyphen: a quoted identifier

    done = create(url(postgres, name))  # the URL as an argument, not from the environment

    assert done.returncode == 0, done.stderr
    assert databases_named(postgres, name) == 1
    assert databases_named(postgres, name.lower()) == 0
    assert create(url(postgres, name)).returncode == 0


def test_a_login_that_may_not_create_databases_fails_with_one_line(
    postgres: PostgresCluster,
) -> None:
    with connect(postgres) as connection:
        connection.execute("CREATE ROLE plain LOGIN NOCREATEDB")

    done = create(url(postgres, "plain_cluster", user="plain"))

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("create-database: cannot create database plain_cluster")
    assert "permission denied" in done.stderr
    assert databases_named(postgres, "plain_cluster") == 0


def test_an_unreachable_server_fails_with_one_line_and_no_password() -> None:
    port = free_port()  # nothing listens there
    target = f"postgresql+psycopg://tracker:s3cret-pw@127.0.0.1:{port}/tracker_cluster"

    done = create(TRACKER_DATABASE_URL=target)

    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        f"create-database: cannot create database tracker_cluster on 127.0.0.1:{port} as tracker:"
    )
    assert "s3cret-pw" not in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "usage: create_database.py"),
        (["sqlite:///var/tracker.db"], {}, "not a PostgreSQL URL (sqlite)"),
        ([], {"TRACKER_DATABASE_URL": "postgresql+psycopg://u@h:5432"}, "names no database"),
        (["not a url"], {}, "is not a URL"),
        (["a", "b"], {}, "usage: create_database.py"),
    ],
)
def test_a_wrong_call_exits_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    done = create(*args, **env)

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
