"""``tracker-api accounts`` and the account check of ``tracker-api users add``, on a real
SQLite file and a real PostgreSQL: every line, stream and exit code a script relies on."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session

from devkit.net import free_port
from devkit.postgres import PostgresCluster
from tests.helpers.accounts import ACTIVE, migrated
from tests.helpers.postgres import throwaway_postgres
from tracker_api.__main__ import cli
from tracker_api.ops import accounts as accounts_cli
from tracker_api.passwords import PasswordFile
from tracker_api.storage import account_store
from tracker_api.storage import event_store as archive
from tracker_api.storage.models import Account

TTL = "within 2.5 s (TRACKER_ACCOUNT_CACHE_TTL)"
ACCEPTS = f"trackers accept its events {TTL}"
GONE = f"trackers answer 404 for it {TTL}"
INVALID_ID = (
    "Invalid account id: 1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit"
)
INVALID_NAME = "Invalid account name: 1-200 printable characters, without spaces at either end"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A migrated database of either kind: the ACTIVE accounts and an inactive "10"."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tracker.db'}"
    else:
        url = request.getfixturevalue("postgres").fresh_database()
    engine = migrated(url)
    with Session(engine) as session:
        session.add(Account(account_id="10", account_name="Off 10", is_active=False))
        session.commit()
    yield url, engine
    engine.dispose()


class Accounts:
    """``tracker-api accounts …`` in-process, on one database, as a script would run it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.label = make_url(url).render_as_string(hide_password=True)
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        env = {"TRACKER_DATABASE_URL": self.url, "TRACKER_ACCOUNT_CACHE_TTL": "2.5"}
        return self.runner.invoke(cli, ["accounts", *args], env=env)


@pytest.fixture
def accounts(database: tuple[str, Engine]) -> Accounts:
    return Accounts(database[0])


def test_an_account_goes_from_added_to_removed_one_line_per_step(
    accounts: Accounts, database: tuple[str, Engine]
) -> None:
    pantry = "account kitchen (Pantry)"
    exists = "account kitchen exists already (Kitchen, active): nothing changed"
    steps = [
        ("add kitchen --name Kitchen", f"added account kitchen (Kitchen): {ACCEPTS}"),
        ("add kitchen", exists),
        ("add kitchen --name Kitchen", exists),
        ("add kitchen --name Pantry", "renamed account kitchen to Pantry"),
        ("deactivate kitchen", f"deactivated {pantry}: trackers refuse its events (403) {TTL}"),
        ("deactivate kitchen", "account kitchen is inactive already: nothing changed"),
        ("activate kitchen", f"activated {pantry}: {ACCEPTS}"),
        ("activate kitchen", "account kitchen is active already: nothing changed"),
        ("remove kitchen", f"removed {pantry} and 0 archived event(s): {GONE}"),
    ]
    for args, line in steps:
        result = accounts(*args.split())
        assert (result.exit_code, result.stdout, result.stderr) == (0, line + "\n", ""), args

    again = accounts("remove", "kitchen")

    assert again.exit_code == 3
    assert again.stdout == ""
    assert again.stderr == f"Error: no account 'kitchen' in {accounts.label}\n"
    assert account_store.get(database[1], "kitchen") is None


def test_every_change_prints_the_admin_apis_json_with_json(accounts: Accounts) -> None:
    created = accounts("add", "kitchen", "--json")
    unchanged = accounts("add", "kitchen", "--json")
    renamed = accounts("add", "kitchen", "--name", "Kitchen", "--json")
    off = accounts("deactivate", "kitchen", "--json")
    on = accounts("activate", "kitchen", "--json")
    removed = accounts("remove", "kitchen", "--json")

    account = {"accountId": "kitchen", "name": "kitchen", "active": True}
    named = {**account, "name": "Kitchen"}
    assert [orjson.loads(result.stdout) for result in (created, unchanged, renamed)] == [
        {"account": account, "changes": ["created"]},
        {"account": account, "changes": []},
        {"account": named, "changes": ["renamed"]},
    ]
    assert orjson.loads(off.stdout) == {
        "account": {**named, "active": False},
        "changes": ["deactivated"],
    }
    assert orjson.loads(on.stdout) == {"account": named, "changes": ["activated"]}
    assert orjson.loads(removed.stdout) == {
        "account": named,
        "changes": ["removed"],
        "deletedEvents": 0,
    }
    assert all(r.stdout.count("\n") == 1 for r in (created, off, on, removed))


def test_list_shows_a_table_or_json_filtered_by_state_and_the_count_on_stderr(
    accounts: Accounts,
) -> None:
    table = accounts("list")
    inactive = accounts("list", "--inactive")
    active = accounts("list", "--active", "--json")
    every = accounts("list", "--json")

    assert table.exit_code == 0
    assert table.stdout.splitlines() == [
        "ACCOUNT      ACTIVE NAME",
        "1            yes    1",
        "10           no     Off 10",
        "2            yes    2",
        "A_b-9        yes    A_b-9",
        "acme.eu-1    yes    acme.eu-1",
    ]
    assert table.stderr == f"5 account(s), 1 inactive, in {accounts.label}\n"
    assert inactive.stdout.splitlines()[1:] == ["10           no     Off 10"]
    assert [a["accountId"] for a in orjson.loads(active.stdout)["accounts"]] == sorted(ACTIVE)
    assert orjson.loads(every.stdout)["accounts"][1] == {
        "accountId": "10",
        "name": "Off 10",
        "active": False,
    }


def test_list_reads_page_after_page_and_misses_none(
    accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts_cli, "PAGE", 2)

    table = accounts("list")
    listed = accounts("list", "--json")

    ids = ["1", "10", "2", "A_b-9", "acme.eu-1"]
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == ids
    assert [a["accountId"] for a in orjson.loads(listed.stdout)["accounts"]] == ids


def test_show_tells_name_state_and_archived_events(
    accounts: Accounts, database: tuple[str, Engine]
) -> None:
    archive.insert(database[1], [event_row("10", n) for n in range(3)])

    shown = accounts("show", "10")
    as_json = accounts("show", "10", "--json")

    assert shown.stdout.splitlines() == [
        "account   10",
        "name      Off 10",
        "active    no",
        "archived  3 event(s)",
    ]
    assert orjson.loads(as_json.stdout) == {
        "accountId": "10",
        "name": "Off 10",
        "active": False,
        "archivedEvents": 3,
    }


def event_row(account_id: str, n: int) -> archive.Row:
    envelope = {
        "eventId": f"e-{n}",
        "accountId": account_id,
        "timestamp": "2026-11-28T12:00:00.000Z",
        "data": str(n),
    }
    return archive.parse(f"track/{account_id}", orjson.dumps(envelope))


def test_removing_an_account_with_archived_events_needs_force_and_deletes_only_its_own(
    accounts: Accounts, database: tuple[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = database[1]
    monkeypatch.setattr(account_store, "DELETE_BATCH", 2)  # several small transactions
    archive.insert(engine, [event_row("2", n) for n in range(5)] + [event_row("1", 0)])

    refused = accounts("remove", "2")
    kept = account_store.get(engine, "2")
    forced = accounts("remove", "2", "--force", "--json")

    assert refused.exit_code == 4
    assert refused.stderr == (
        "Error: account 2 has 5 archived event(s): deactivate it to keep them, or remove it "
        "with --force to delete them too\n"
    )
    assert kept == account_store.AccountRow("2", "2", True)
    assert forced.exit_code == 0
    assert orjson.loads(forced.stdout) == {
        "account": {"accountId": "2", "name": "2", "active": True},
        "changes": ["removed"],
        "deletedEvents": 5,
    }
    assert account_store.get(engine, "2") is None
    assert (account_store.count_events(engine, "2"), account_store.count_events(engine, "1")) == (
        0,
        1,
    )


@pytest.mark.parametrize("command", ["show", "activate", "deactivate", "remove"])
def test_an_unknown_account_is_exit_code_3_and_nothing_is_created(
    accounts: Accounts, database: tuple[str, Engine], command: str
) -> None:
    result = accounts(command, "nobody")

    assert (result.exit_code, result.stdout) == (3, "")
    assert result.stderr == f"Error: no account 'nobody' in {accounts.label}\n"
    assert account_store.get(database[1], "nobody") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "admin"], INVALID_ID),
        (["add", "bad id"], INVALID_ID),
        (["add", "x/y"], INVALID_ID),
        (["add", "reader"], "Invalid account id: 'reader' is the name of a broker role"),
        (["show", "events"], INVALID_ID),
        (["remove", "_x"], INVALID_ID),
        (["deactivate", "--", "-1"], INVALID_ID),
        (["add", "x", "--name", ""], INVALID_NAME),
        (["add", "x", "--name", "Kitchen "], INVALID_NAME),
        (["add", "x", "--name", "a\x1b[2Jb"], INVALID_NAME),
        (["add", "1", "--name", "x" * 201], INVALID_NAME),
    ],
)
def test_invalid_ids_and_names_are_one_line_with_exit_code_1_and_change_nothing(
    accounts: Accounts, database: tuple[str, Engine], args: list[str], message: str
) -> None:
    result = accounts(*args)

    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"Error: {message}\n"
    assert account_store.get(database[1], "x") is None
    assert account_store.get(database[1], "1") == account_store.AccountRow("1", "1", True)


# -- the database itself -------------------------------------------------------------------


def test_a_missing_sqlite_database_is_one_line_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "tracker.db"
    accounts = Accounts(f"sqlite:///{path}")

    result = accounts("list")

    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: no database at sqlite:///{path}: create it with `tracker-api migrate` first\n"
    )
    assert not path.parent.exists()


def test_a_database_without_the_schema_says_to_migrate(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()

    result = Accounts(f"sqlite:///{path}")("add", "1")

    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: sqlite:///{path} has no accounts table: run `tracker-api migrate` first\n"
    )


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    url = f"postgresql+psycopg://bob:s3cret@127.0.0.1:{free_port()}/tracker"

    result = Accounts(url)("list")

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: database error: ")
    assert result.stderr.count("\n") == 1 and "s3cret" not in result.output


def test_the_real_command_documents_its_exit_codes_and_returns_them(
    database: tuple[str, Engine],
) -> None:
    archive.insert(database[1], [event_row("2", 0)])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracker_api", "accounts", *args],
            env={"PATH": "/usr/bin:/bin", "TRACKER_DATABASE_URL": database[0]},
            capture_output=True,
            text=True,
            timeout=60,
        )

    helped = run("remove", "--help")
    codes = [run("add", "2").returncode, run("add", "bad id").returncode]
    codes += [run("show", "nobody").returncode, run("remove", "2").returncode]

    assert codes == [0, 1, 3, 4]
    for line in ("0  done", "1  error", "2  usage", "3  no such account", "4  not removed"):
        assert line in helped.stdout


# -- users add: a login for an account that is not there -----------------------------------


class Users:
    def __init__(self, url: str, password_file: Path) -> None:
        self.url = url
        self.password_file = password_file

    def add(self, *args: str) -> Result:
        return CliRunner().invoke(
            cli,
            ["users", "add", *args, "--password", "pw", "--password-file", str(self.password_file)],
            env={"TRACKER_DATABASE_URL": self.url},
        )

    def logins(self) -> list[str]:
        if not self.password_file.exists():
            return []
        return sorted(PasswordFile(self.password_file).entries)


@pytest.fixture
def users(database: tuple[str, Engine], tmp_path: Path) -> Users:
    return Users(database[0], tmp_path / "passwd")


def test_users_add_warns_when_the_account_does_not_exist(users: Users) -> None:
    label = make_url(users.url).render_as_string(hide_password=True)

    result = users.add("kitchen")

    assert result.exit_code == 0
    assert "added kitchen (account kitchen" in result.stdout
    assert result.stderr.splitlines()[0] == (
        f"warning: no account 'kitchen' in {label}: the tracker refuses its events until "
        "`tracker-api accounts add kitchen`"
    )
    assert users.logins() == ["kitchen"]


def test_users_add_strict_refuses_an_unknown_account_and_writes_nothing(users: Users) -> None:
    label = make_url(users.url).render_as_string(hide_password=True)

    result = users.add("kitchen", "--strict")

    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: no account 'kitchen' in {label}: the tracker refuses its events; the login "
        "was not added (add the account first: tracker-api accounts add kitchen)\n"
    )
    assert users.logins() == []


def test_users_add_says_nothing_of_an_active_account_and_notes_an_inactive_one(
    users: Users,
) -> None:
    active = users.add("1", "--strict")
    inactive = users.add("10", "--strict")

    assert active.exit_code == inactive.exit_code == 0
    assert "warning" not in active.stderr and "note" not in active.stderr
    assert inactive.stderr.splitlines()[0] == (
        "note: account 10 is inactive: its events are refused until "
        "`tracker-api accounts activate 10`"
    )
    assert users.logins() == ["1", "10"]


@pytest.mark.parametrize("role", ["reader", "tracker"])
def test_role_logins_are_no_accounts_and_are_not_checked(tmp_path: Path, role: str) -> None:
    nowhere = Users(f"sqlite:///{tmp_path / 'none.db'}", tmp_path / "passwd")

    result = nowhere.add("--role", role, "--strict")

    assert result.exit_code == 0
    assert "account" not in result.stderr and "warning" not in result.stderr
    assert nowhere.logins() == [role]
    assert not (tmp_path / "none.db").exists()


def test_users_add_cannot_check_without_a_database_warns_or_with_strict_refuses(
    tmp_path: Path,
) -> None:
    path = tmp_path / "none.db"
    nowhere = Users(f"sqlite:///{path}", tmp_path / "passwd")
    because = f"no database at sqlite:///{path}: create it with `tracker-api migrate` first"

    lenient = nowhere.add("42")
    strict = nowhere.add("43", "--strict")

    assert lenient.exit_code == 0
    assert lenient.stderr.splitlines()[0] == (
        f"warning: cannot check that account 42 exists: {because}"
    )
    assert strict.exit_code == 1
    assert strict.stderr == f"Error: cannot check that account 43 exists: {because}\n"
    assert nowhere.logins() == ["42"]
    assert not path.exists()
