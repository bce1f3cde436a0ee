"""`tracker-api users`: Mosquitto password files without hand edits."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracker_api.__main__ import cli
from tracker_api.users import PasswordFile, hash_password, verify_password


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
    typed = runner.invoke(cli, ["users", "add", "reader", *file], input="pw\npw\n")
    listed = runner.invoke(cli, ["users", "list", *file])
    removed = runner.invoke(cli, ["users", "remove", "42", *file])
    missing = runner.invoke(cli, ["users", "remove", "42", *file])
    invalid = runner.invoke(cli, ["users", "add", "no way", "--password", "x", *file])

    assert added.exit_code == 0, added.output
    assert "added 42 (account 42: reads track/42, publishes ingest/42)" in added.output
    generated = added.output.split("password: ")[1].split()[0]
    assert typed.exit_code == 0 and "added reader (reads track/#)" in typed.output
    assert "42" in listed.output and "reader" in listed.output
    assert removed.exit_code == 0 and "removed 42" in removed.output
    assert missing.exit_code == 1 and "no user '42'" in missing.output
    assert invalid.exit_code == 1 and "invalid user name" in invalid.output
    final = PasswordFile(tmp_path / "passwd")
    assert list(final.entries) == ["reader"] and final.check("reader", "pw")
    assert len(generated) >= 20
