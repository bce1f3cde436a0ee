"""Create the PostgreSQL database a URL names, when its server does not have it yet.

    python deploy/create_database.py [DATABASE_URL]     # default: $TRACKER_DATABASE_URL

Connects to the same server with the same login, to its ``postgres`` maintenance
database, and runs ``CREATE DATABASE`` only when ``pg_database`` has no row of that name:
a second run changes nothing. The login needs the right to create databases (in compose,
POSTGRES_USER is the server's superuser). Exit status 0 when the database exists
afterwards, 1 with one line on stderr when it could not be checked or created, 2 for a
wrong call. The compose `cluster` profile's cluster-database job runs it before
`tracker-api migrate` and `data/seed.py` (deploy/cluster.compose.yml), which need the
database to exist.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

from tracker_api.config import check_database_url

MAINTENANCE_DATABASE = "postgres"
PREFIX = "create-database"


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def target(text: str) -> URL:
    """The URL of a PostgreSQL database; ValueError names what is wrong with it."""
    url = check_database_url(text)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL ({url.get_backend_name()})")
    if not url.database:
        raise ValueError("the URL names no database")
    return url


def create_database(url: URL) -> bool:
    """Create ``url.database`` unless it exists; True when it was created."""
    name = url.database or ""
    options = {key: value for key, value in url.query.items() if isinstance(value, str)}
    options.setdefault("connect_timeout", "10")
    conninfo = make_conninfo(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=MAINTENANCE_DATABASE,
        **options,
    )
    # autocommit: CREATE DATABASE cannot run inside a transaction.
    with psycopg.connect(conninfo, autocommit=True) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if found is not None:
            return False
        try:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            return False  # another run created it in between
        return True


def say(line: str, error: bool = False) -> None:
    print(f"{PREFIX}: {line}", file=sys.stderr if error else sys.stdout)  # noqa: T201


def main(argv: list[str], env: Mapping[str, str]) -> int:
    if len(argv) > 1 or (not argv and not env.get("TRACKER_DATABASE_URL")):
        say("usage: create_database.py [DATABASE_URL] (default: $TRACKER_DATABASE_URL)", True)
        return 2
    try:
        url = target(argv[0] if argv else env["TRACKER_DATABASE_URL"])
    except ValueError as error:
        say(one_line(error), error=True)
        return 2
    where = f"database {url.database} on {url.host or 'localhost'}:{url.port or 5432}"
    try:
        created = create_database(url)
    except psycopg.Error as error:
        say(f"cannot create {where} as {url.username}: {one_line(error)}", error=True)
        return 1
    say(f"created {where}" if created else f"{where} exists already")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
