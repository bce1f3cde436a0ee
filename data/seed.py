"""Migrate the schema to the newest revision and upsert a deterministic set of demo accounts.

Idempotent: running it again changes nothing unless the options differ. Accounts are
named ``1`` … ``N``; every ``--inactive-every``-th one is inactive, so the demo has both.

    python data/seed.py                       # 100 accounts into TRACKER_DATABASE_URL
    python data/seed.py --count 1000 --database-url postgresql+psycopg://…
"""

from __future__ import annotations

import signal
from pathlib import Path

if __name__ == "__main__":
    # Ctrl-C ends the seed at once and quietly, even during the imports below: each chunk
    # is committed in one transaction and a re-run finishes the job, so nothing is lost.
    signal.signal(signal.SIGINT, signal.SIG_DFL)

import click  # noqa: E402
from sqlalchemy.engine import URL  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from tracker_api.config import ConfigError, get_settings  # noqa: E402
from tracker_api.service.validation import check_account_id  # noqa: E402
from tracker_api.storage.db import make_engine, migrate  # noqa: E402
from tracker_api.storage.models import Account  # noqa: E402

NAMES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell")


def shown_url(url: URL, cwd: Path | None = None) -> str:
    """The database URL as printed, password hidden; a SQLite file under the current
    directory relative to it (``sqlite:///var/tracker.db``), as one would type it."""
    here = cwd or Path.cwd()
    if url.get_backend_name() == "sqlite" and url.database:
        path = Path(url.database)
        if path.is_absolute() and path.is_relative_to(here):
            url = url.set(database=str(path.relative_to(here)))
    return url.render_as_string(hide_password=True)


def demo_accounts(count: int, inactive_every: int) -> list[Account]:
    return [
        Account(
            account_id=str(n),
            account_name=f"{NAMES[(n - 1) % len(NAMES)]} {n}",
            is_active=inactive_every == 0 or n % inactive_every != 0,
        )
        for n in range(1, count + 1)
    ]


def upsert(session: Session, accounts: list[Account], chunk: int = 500) -> tuple[int, int, int]:
    """Insert missing accounts, update changed ones: (created, updated, unchanged).

    Every id is checked first (``InvalidRequest``), so nothing is written when one is bad.
    """
    for account in accounts:
        check_account_id(account.account_id)
    created = updated = 0
    for start in range(0, len(accounts), chunk):
        batch = accounts[start : start + chunk]
        ids = [a.account_id for a in batch]
        query = select(Account).where(Account.account_id.in_(ids))  # type: ignore[attr-defined]
        existing = {a.account_id: a for a in session.exec(query)}
        for account in batch:
            current = existing.get(account.account_id)
            wanted = (account.account_name, account.is_active)
            if current is None:
                session.add(account)
                created += 1
            elif (current.account_name, current.is_active) != wanted:
                current.account_name, current.is_active = wanted
                session.add(current)
                updated += 1
        session.commit()
    return created, updated, len(accounts) - created - updated


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--count",
    default=100,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="How many demo accounts (ids 1..N).",
)
@click.option(
    "--inactive-every",
    default=10,
    show_default=True,
    type=click.IntRange(0),
    help="Every Nth account is inactive (0: none).",
)
@click.option(
    "--database-url",
    envvar="TRACKER_DATABASE_URL",
    show_envvar=True,
    help="SQLAlchemy URL [default: sqlite:///var/tracker.db]",
)
def main(count: int, inactive_every: int, database_url: str | None) -> None:
    """Migrate the schema (tables `accounts`, `events`) and upsert demo accounts."""
    try:
        url = database_url or get_settings().database_url
        engine = make_engine(url)
        migrate(engine)
        accounts = demo_accounts(count, inactive_every)
        inactive = sum(not a.is_active for a in accounts)
        with Session(engine) as session:
            created, updated, unchanged = upsert(session, accounts)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    except SQLAlchemyError as error:
        raise click.ClickException(
            f"database error: {error.__class__.__name__}: {error.orig or error}"
        ) from None
    click.echo(
        f"seeded {shown_url(engine.url)}: {count} accounts "
        f"({inactive} inactive): {created} created, {updated} updated, {unchanged} unchanged"
    )


if __name__ == "__main__":
    main()
