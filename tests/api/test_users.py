"""`tracker-api users`: Mosquitto password files without hand edits."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracker_api.__main__ import cli
from tracker_api.ops import local_credentials
from tracker_api.passwords import PasswordFile, hash_password, verify_password
from tracker_contract.roles import ROLES, Rights, describe_role, rights_of


def test_hashes_use_mosquittos_pbkdf2_format_and_verify() -> None:
    hashed = hash_password("s3cret")

    assert hashed.startswith("$7$101$")
    assert verify_password("s3cret", hashed)
    assert not verify_password("wrong", hashed)
    assert not verify_password("s3cret", "$6$not$ours")
    assert not verify_password("s3cret", "garbage")


def test_password_file_round_trips_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "mqtt" / "passwd"
    passwords = PasswordFile(path)
    assert passwords.set("reader", "r") is True
    assert passwords.set("reader", "r2") is False
    passwords.set("42", "device")
    passwords.save()

    loaded = PasswordFile(path)

    assert sorted(loaded.entries) == ["42", "reader"]
    assert loaded.check("reader", "r2") and not loaded.check("reader", "r")
    assert not loaded.check("nobody", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert loaded.remove("42") and not loaded.remove("42")


@pytest.mark.parametrize(("name", "password"), [("bad name", "x"), ("a/b", "x"), ("ok", "")])
def test_invalid_user_names_and_empty_passwords_are_refused(name: str, password: str) -> None:
    with pytest.raises(ValueError):
        PasswordFile(Path("/nonexistent")).set(name, password)


def test_users_commands_add_list_and_remove(tmp_path: Path) -> None:
    runner = CliRunner()
    file = ["--password-file", str(tmp_path / "passwd")]

    added = runner.invoke(cli, ["users", "add", "42", "--generate", *file])
    typed = runner.invoke(cli, ["users", "add", "--role", "reader", *file], input="pw\npw\n")
    listed = runner.invoke(cli, ["users", "list", *file])
    removed = runner.invoke(cli, ["users", "remove", "42", *file])
    missing = runner.invoke(cli, ["users", "remove", "42", *file])
    invalid = runner.invoke(cli, ["users", "add", "no way", "--password", "x", *file])

    assert added.exit_code == 0, added.output
    assert "added 42 (account 42: reads track/42; publishes ingest/42)" in added.output
    generated = added.output.split("password: ")[1].split()[0]
    assert typed.exit_code == 0 and "added reader (reads track/#, tracker/status/#)" in typed.output
    assert "42" in listed.output and "reader" in listed.output
    assert removed.exit_code == 0 and "removed 42" in removed.output
    assert missing.exit_code == 1 and "no user '42'" in missing.output
    assert invalid.exit_code == 1 and "Invalid account id: 1-64 characters" in invalid.output
    final = PasswordFile(tmp_path / "passwd")
    assert list(final.entries) == ["reader"] and final.check("reader", "pw")
    assert len(generated) >= 20


def _add_after(barrier: multiprocessing.synchronize.Barrier, path: Path, name: str) -> None:
    barrier.wait()
    result = CliRunner().invoke(
        cli, ["users", "add", name, "--password", name, "--password-file", str(path)]
    )
    os._exit(result.exit_code)


def test_concurrent_adds_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(8)
    names = [f"acct-{n}" for n in range(8)]
    workers = [context.Process(target=_add_after, args=(barrier, path, n)) for n in names]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)

    assert [worker.exitcode for worker in workers] == [0] * 8
    final = PasswordFile(path)
    assert sorted(final.entries) == names
    assert all(final.check(name, name) for name in names)
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("passwd", "passwd.lock")] == []


def test_saving_keeps_comments_order_and_mode_whatever_stale_files_lie_around(
    tmp_path: Path,
) -> None:
    path = tmp_path / "passwd"
    path.write_text(
        f"# managed by ops\nb:{hash_password('b')}\n\n# devices\na:{hash_password('a')}\n"
    )
    path.chmod(0o640)
    stale = tmp_path / "passwd.tmp"
    stale.write_text("left over by a crash\n")
    stale.chmod(0o644)

    with PasswordFile.edit(path) as passwords:
        passwords.set("c", "c")
        passwords.set("a", "a2")
        passwords.remove("b")

    lines = path.read_text().splitlines()
    assert lines[0] == "# managed by ops" and lines[1:3] == ["", "# devices"]
    assert [line.split(":")[0] for line in lines[3:]] == ["a", "c"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())
    assert PasswordFile(path).check("a", "a2")
    assert stale.read_text() == "left over by a crash\n"


def test_an_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    with PasswordFile.edit(path) as passwords:
        assert not passwords.remove("nobody")
    assert not path.exists()


@pytest.mark.parametrize("role", ["reader", "tracker"])
def test_role_names_are_refused_as_account_logins(tmp_path: Path, role: str) -> None:
    file = ["--password-file", str(tmp_path / "passwd")]
    runner = CliRunner()

    refused = runner.invoke(cli, ["users", "add", role, "--password", "x", *file])
    as_role = runner.invoke(cli, ["users", "add", "--role", role, "--password", "x", *file])
    mismatch = runner.invoke(cli, ["users", "add", "42", "--role", role, "--password", "x", *file])
    nothing = runner.invoke(cli, ["users", "add", "--password", "x", *file])

    assert refused.exit_code == 1
    assert f"{role!r} is the name of a broker role; for the role's login: --role {role}" in (
        refused.output
    )
    assert as_role.exit_code == 0 and f"added {role} ({describe_role(role)})" in as_role.output
    assert mismatch.exit_code == 2 and f"is named {role}, not 42" in mismatch.output
    assert nothing.exit_code == 2 and "give an account id" in nothing.output
    assert list(PasswordFile(tmp_path / "passwd").entries) == [role]


def test_a_password_file_that_cannot_be_written_is_one_clear_line(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = CliRunner().invoke(
        cli, ["users", "remove", "x", "--password-file", str(blocked / "passwd")]
    )
    assert result.exit_code == 1 and "Error:" in result.output
    assert "Traceback" not in result.output


def acl_rights(lines: list[str], keyword: str, username: str) -> Rights:
    """What ``topic`` / ``pattern`` lines of mqtt/acl grant (``%u``: the login's name)."""
    reads, writes = [], []
    for access, topic in (line.split()[1:3] for line in lines if line.startswith(keyword)):
        topic = topic.replace("%u", username)
        if "read" in access:
            reads.append(topic)
        if "write" in access:
            writes.append(topic)
    return Rights(publishes=tuple(writes), reads=tuple(reads))


ACL = Path(__file__).resolve().parents[2] / "mqtt" / "acl"


@pytest.mark.parametrize("role", sorted(ROLES))
def test_the_roles_rights_are_what_the_acl_grants(role: str) -> None:
    section = ACL.read_text().split(f"\nuser {role}\n", 1)[1].split("\n\n", 1)[0]
    granted = acl_rights(section.splitlines(), "topic", role)

    assert set(rights_of(role).reads) == set(granted.reads)
    assert set(rights_of(role).publishes) == set(granted.publishes)
    described = describe_role(role)
    assert all(topic in described for topic in (*granted.reads, *granted.publishes))


def test_an_accounts_rights_are_the_acls_patterns() -> None:
    granted = acl_rights(ACL.read_text().splitlines(), "pattern", "42")

    assert rights_of("42") == granted == Rights(publishes=("ingest/42",), reads=("track/42",))
    assert describe_role("42") == "account 42: reads track/42; publishes ingest/42"


def test_users_add_keeps_the_credentials_file_of_make_run_in_step(tmp_path: Path) -> None:
    """`users add 1` after `make run` changes DEVICE_1_PASSWORD in var/credentials.env too
    (it would be stale otherwise), the reader's and the tracker's likewise; a login the
    file does not hold leaves it alone."""
    passwd = tmp_path / "var" / "mqtt" / "passwd"
    passwd.parent.mkdir(parents=True)
    credentials = tmp_path / "var" / "credentials.env"
    local_credentials.write(
        credentials,
        {
            "TRACKER_MQTT_URL": "mqtt://tracker:old-t@127.0.0.1:1883",
            "MQTT_TAIL_USERNAME": "reader",
            "MQTT_TAIL_PASSWORD": "old-r",
            "DEVICE_1_PASSWORD": "old-1",
        },
    )
    runner = CliRunner()

    def add(login: str, password: str) -> str:
        who = ["--role", login] if login in ("reader", "tracker") else [login]
        result = runner.invoke(
            cli, ["users", "add", *who, "--password", password, "--password-file", str(passwd)]
        )
        assert result.exit_code == 0, result.output
        return result.stderr

    said = add("1", "new-1")
    add("reader", "new-r")
    tracker = add("tracker", "new/t")
    other = add("42", "new-42")

    assert f"updated DEVICE_1_PASSWORD in {credentials}" in said
    assert "restart `make run`" in tracker
    assert "updated" not in other
    assert local_credentials.read(credentials) == {
        "TRACKER_MQTT_URL": "mqtt://tracker:new%2Ft@127.0.0.1:1883",
        "MQTT_TAIL_USERNAME": "reader",
        "MQTT_TAIL_PASSWORD": "new-r",
        "DEVICE_1_PASSWORD": "new-1",
    }
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert PasswordFile(passwd).check("1", "new-1")


def test_a_password_file_outside_a_make_run_layout_touches_no_credentials_file(
    tmp_path: Path,
) -> None:
    credentials = tmp_path / "credentials.env"
    credentials.write_text("DEVICE_1_PASSWORD=old\n")

    assert local_credentials.update(tmp_path / "etc" / "passwd", "1", "new") is None
    assert credentials.read_text() == "DEVICE_1_PASSWORD=old\n"
