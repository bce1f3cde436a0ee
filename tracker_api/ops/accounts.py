"""``tracker-api accounts``: add, list, show, activate, deactivate and remove accounts in
the database of ``TRACKER_DATABASE_URL`` (SQLite or PostgreSQL), by the rules of
``service.account_admin``, which the admin API follows too; and the account check of
``tracker-api users add`` (docs/adr/0019-account-management.md).

Scriptable: every change is idempotent (what is so already is left alone, said so, exit
code 0), ``--json`` prints the admin API's JSON, errors are one line with an exit code
of their own (``EXIT_CODES``). Nothing here creates or migrates a database: a missing
one is an error that says to run ``tracker-api migrate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tracker_api.config import ConfigError, check_database_url, load_settings
from tracker_api.errors import AccountHasEvents, AccountNotFound, InvalidRequest
from tracker_api.ops.login_options import CONTEXT
from tracker_api.service.account_admin import (
    AccountAdmin,
    AccountChange,
    AccountDetail,
    AccountRemoval,
    AccountView,
)
from tracker_api.storage.account_store import has_accounts_table
from tracker_api.storage.db import error_reason, make_engine

NO_SUCH_ACCOUNT = 3
HAS_EVENTS = 4
EXIT_CODES = f"""\b
Exit codes:
  0  done, or nothing to change (and it says so)
  1  error: invalid account id or name, configuration, no or an unreachable database
  2  usage error
  {NO_SUCH_ACCOUNT}  no such account
  {HAS_EVENTS}  not removed: the account has archived events (--force deletes them too)
"""
PAGE = 1000  # accounts read per query by `list`, so memory stays flat for any count


class NoSuchAccount(click.ClickException):
    exit_code = NO_SUCH_ACCOUNT


class HasArchivedEvents(click.ClickException):
    exit_code = HAS_EVENTS


@dataclass(frozen=True)
class Database:
    """The accounts database a command works on, and how the trackers see changes."""

    admin: AccountAdmin
    label: str  # the URL without its password
    cache_ttl: float  # TRACKER_ACCOUNT_CACHE_TTL

    def account_missing(self, account_id: str) -> NoSuchAccount:
        return NoSuchAccount(f"no account {account_id!r} in {self.label}")


def open_engine(url: str, label: str) -> Engine:
    """An engine on an existing, migrated database; ``ClickException`` otherwise (a
    SQLite file is never created by asking it for accounts)."""
    parsed = check_database_url(url)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():
        raise click.ClickException(
            f"no database at {label}: create it with `tracker-api migrate` first"
        )
    engine = make_engine(url)
    if not has_accounts_table(engine):
        engine.dispose()
        raise click.ClickException(
            f"{label} has no accounts table: run `tracker-api migrate` first"
        )
    return engine


@contextmanager
def accounts_database(account_id: str = "") -> Iterator[Database]:
    """The database of the settings, with every failure of the block as one line and the
    exit code of ``EXIT_CODES`` (``account_id``: the one the block is about)."""
    try:
        settings = load_settings()
        label = check_database_url(settings.database_url).render_as_string(hide_password=True)
    except (ConfigError, ValueError) as error:
        raise click.ClickException(f"invalid configuration: {error}") from None
    try:
        engine = open_engine(settings.database_url, label)
    except SQLAlchemyError as error:
        raise click.ClickException(f"database error: {error_reason(error)}") from None
    database = Database(AccountAdmin(engine), label, settings.account_cache_ttl)
    try:
        yield database
    except InvalidRequest as error:
        raise click.ClickException(str(error.detail)) from None
    except AccountNotFound:
        raise database.account_missing(account_id) from None
    except AccountHasEvents as error:
        raise HasArchivedEvents(
            f"account {error.account_id} has {error.count} archived event(s): deactivate it "
            "to keep them, or remove it with --force to delete them too"
        ) from None
    except SQLAlchemyError as error:
        raise click.ClickException(f"database error: {error_reason(error)}") from None
    finally:
        engine.dispose()


def shown(text: str) -> str:
    """A name as a terminal may print it: names set here are printable, but one written
    into the database by other means may hold control characters."""
    return text if text.isprintable() else ascii(text)


def echo_json(value: object) -> None:
    click.echo(orjson.dumps(value).decode())


def within(ttl: float) -> str:
    return f"within {ttl:g} s (TRACKER_ACCOUNT_CACHE_TTL)"


def describe(change: AccountChange, ttl: float, unchanged: str) -> str:
    """One line saying what a change did, and when the trackers notice it."""
    account = change.account
    who = f"account {account.account_id} ({shown(account.name)})"
    said = {
        "created": f"added {who}: trackers accept its events {within(ttl)}",
        "renamed": f"renamed account {account.account_id} to {shown(account.name)}",
        "activated": f"activated {who}: trackers accept its events {within(ttl)}",
        "deactivated": f"deactivated {who}: trackers refuse its events (403) {within(ttl)}",
    }
    return "\n".join(said[name] for name in change.changes) or unchanged.format(
        id=account.account_id, name=shown(account.name), state=state(account)
    )


def state(account: AccountView) -> str:
    return "active" if account.active else "inactive"


def report(change: AccountChange, as_json: bool, ttl: float, unchanged: str) -> None:
    if as_json:
        echo_json(change.as_json())
    else:
        click.echo(describe(change, ttl, unchanged))


ACCOUNT_ID = click.argument("account_id")
JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@click.group(context_settings=CONTEXT, epilog=EXIT_CODES)
def accounts() -> None:
    """Manage accounts in the database of TRACKER_DATABASE_URL (SQLite or PostgreSQL).

    An account's events are accepted while it is active; the trackers notice a change
    within TRACKER_ACCOUNT_CACHE_TTL seconds. Its MQTT login is apart: `tracker-api
    users add <id>`.

    \b
    tracker-api accounts add kitchen --name Kitchen
    tracker-api accounts list --inactive
    tracker-api accounts deactivate kitchen --json
    """


@accounts.command("add", epilog=EXIT_CODES)
@ACCOUNT_ID
@click.option("--name", help="Its name (default: the id); given for an existing one: renames it.")
@JSON
def add(account_id: str, name: str | None, as_json: bool) -> None:
    """Add an active account; an existing one is left as it is (exit code 0), except
    for its name when --name gives another."""
    with accounts_database(account_id) as database:
        change = database.admin.add(account_id, name)
    report(
        change,
        as_json,
        database.cache_ttl,
        "account {id} exists already ({name}, {state}): nothing changed",
    )


@accounts.command("list", epilog=EXIT_CODES)
@click.option("--active", "which", flag_value="active", help="Only active accounts.")
@click.option("--inactive", "which", flag_value="inactive", help="Only inactive accounts.")
@JSON
def list_accounts(which: str | None, as_json: bool) -> None:
    """List accounts in id order (as the database sorts text); with --json one object,
    {"accounts": [...]}."""
    active = None if which is None else which == "active"
    with accounts_database() as database:
        listed = inactive = 0
        if as_json:
            click.echo('{"accounts":[', nl=False)
        for account in pages(database.admin, active):
            if as_json:
                click.echo(
                    ("," if listed else "") + orjson.dumps(account.as_json()).decode(), nl=False
                )
            else:
                if not listed:
                    click.echo(f"{'ACCOUNT':<12} {'ACTIVE':<6} NAME")
                active_text = "yes" if account.active else "no"
                click.echo(f"{account.account_id:<12} {active_text:<6} {shown(account.name)}")
            listed += 1
            inactive += not account.active
    if as_json:
        click.echo("]}")
    else:
        click.echo(f"{listed} account(s), {inactive} inactive, in {database.label}", err=True)


def pages(admin: AccountAdmin, active: bool | None) -> Iterator[AccountView]:
    after = None
    while True:
        page = admin.page(after, PAGE, active)
        yield from page.accounts
        if page.next is None:
            return
        after = page.next


@accounts.command("show", epilog=EXIT_CODES)
@ACCOUNT_ID
@JSON
def show(account_id: str, as_json: bool) -> None:
    """Show an account: its name, whether it is active, its archived events."""
    with accounts_database(account_id) as database:
        detail: AccountDetail = database.admin.show(account_id)
    if as_json:
        echo_json(detail.as_json())
        return
    click.echo(f"account   {detail.account_id}")
    click.echo(f"name      {shown(detail.name)}")
    click.echo(f"active    {'yes' if detail.active else 'no'}")
    click.echo(f"archived  {detail.archived_events} event(s)")


@accounts.command("activate", epilog=EXIT_CODES)
@ACCOUNT_ID
@JSON
def activate(account_id: str, as_json: bool) -> None:
    """Accept the account's events again."""
    with accounts_database(account_id) as database:
        change = database.admin.update(account_id, active=True)
    report(change, as_json, database.cache_ttl, "account {id} is active already: nothing changed")


@accounts.command("deactivate", epilog=EXIT_CODES)
@ACCOUNT_ID
@JSON
def deactivate(account_id: str, as_json: bool) -> None:
    """Refuse the account's events (403) and keep it and its history."""
    with accounts_database(account_id) as database:
        change = database.admin.update(account_id, active=False)
    report(change, as_json, database.cache_ttl, "account {id} is inactive already: nothing changed")


@accounts.command("remove", epilog=EXIT_CODES)
@ACCOUNT_ID
@click.option(
    "--force", is_flag=True, help="Remove it even with archived events, and delete them too."
)
@JSON
def remove(account_id: str, force: bool, as_json: bool) -> None:
    """Remove an account. One with archived events is refused (exit code 4) unless
    --force, which deletes them with it: an id given to someone else later must not
    come with this account's history. To keep the history, deactivate instead."""
    with accounts_database(account_id) as database:
        removal: AccountRemoval = database.admin.remove(account_id, force)
    if as_json:
        echo_json(removal.as_json())
        return
    account = removal.account
    click.echo(
        f"removed account {account.account_id} ({shown(account.name)}) and "
        f"{removal.deleted_events} archived event(s): trackers answer 404 for it "
        f"{within(database.cache_ttl)}"
    )


def check_login_account(account_id: str, strict: bool) -> None:
    """For ``users add <account>``: a login whose account does not exist is no use (the
    tracker answers its events 404), so say so on stderr, or with ``strict`` refuse
    (exit code 3). An inactive account gets a note: logins may well come first."""
    try:
        with accounts_database(account_id) as database:
            account = database.admin.find(account_id)
    except click.ClickException as error:  # no database, configuration, unreachable
        if strict:
            raise click.ClickException(
                f"cannot check that account {account_id} exists: {error.message}"
            ) from None
        click.echo(
            f"warning: cannot check that account {account_id} exists: {error.message}", err=True
        )
        return
    if account is None:
        problem = f"no account {account_id!r} in {database.label}: the tracker refuses its events"
        if strict:
            raise NoSuchAccount(
                f"{problem}; the login was not added (add the account first: "
                f"tracker-api accounts add {account_id})"
            )
        click.echo(f"warning: {problem} until `tracker-api accounts add {account_id}`", err=True)
    elif not account.active:
        click.echo(
            f"note: account {account_id} is inactive: its events are refused until "
            f"`tracker-api accounts activate {account_id}`",
            err=True,
        )
