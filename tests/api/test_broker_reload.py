"""`tracker-api users add/remove` reload exactly the brokers that use the password file
(`make run`'s, or any Mosquitto configured with it), or print the exact command."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from devkit.broker import Mosquitto
from devkit.waiting import wait_until
from tracker_api.__main__ import cli
from tracker_api.ops.broker_reload import (
    COMPOSE_RELOAD,
    SYSTEM_RELOAD,
    brokers_using,
    config_for,
    password_files,
    pidfile_for,
    reload_broker,
    runs_config,
)
from tracker_api.passwords import PasswordFile


def test_without_any_broker_using_the_file_the_exact_reload_commands_are_printed(
    tmp_path: Path,
) -> None:
    passwd = tmp_path / "passwd"
    runner = CliRunner()

    added = runner.invoke(cli, ["users", "add", "7", "--password", "x", "--password-file", passwd])
    removed = runner.invoke(cli, ["users", "remove", "7", "--password-file", str(passwd)])

    assert added.exit_code == 0 and removed.exit_code == 0, added.output + removed.output
    for result in (added, removed):
        assert f"no running Mosquitto is configured with {passwd}" in result.stderr
        assert f"  {SYSTEM_RELOAD}   (the system's service)" in result.stderr
        assert f"  {COMPOSE_RELOAD}   (under docker compose)" in result.stderr
        assert "pidof" not in result.stderr  # that would signal every Mosquitto here


def test_a_broker_configured_with_the_file_reloads_and_no_other_broker_is_signalled(
    tmp_path: Path,
) -> None:
    """Two brokers outside `make run`: the one whose configuration names the password
    file reloads it (the new login works at once); the other is left alone."""
    passwd = tmp_path / "used" / "passwd"
    passwd.parent.mkdir()
    other_passwd = tmp_path / "other" / "passwd"
    other_passwd.parent.mkdir()
    for path in (passwd, other_passwd):
        with PasswordFile.edit(path) as passwords:
            passwords.set("reader", "r")
    using = Mosquitto(passwd.parent, password_file=passwd)
    other = Mosquitto(other_passwd.parent, password_file=other_passwd)
    using.start()
    other.start()
    try:
        assert brokers_using(passwd) == [using.process.pid]  # type: ignore[union-attr]

        added = CliRunner().invoke(
            cli, ["users", "add", "7", "--password", "pw-7", "--password-file", str(passwd)]
        )

        assert added.exit_code == 0, added.output
        # (The line before it warns that no accounts database is there to check 7 in.)
        assert added.stderr.splitlines()[-1] == (
            f"the broker (pid {using.process.pid}) reloaded {passwd}"  # type: ignore[union-attr]
        )
        wait_until(lambda: "Reloading config" in using.log(), timeout=5, message=using.log())
        assert "Reloading config" not in other.log()
        assert other.running and using.running
    finally:
        using.stop()
        other.stop()


def test_a_broker_in_an_include_dir_configuration_is_found_and_a_relative_path_resolved(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "mosquitto.conf"
    (tmp_path / "conf.d").mkdir()
    conf.write_text("include_dir conf.d\n")
    (tmp_path / "conf.d" / "auth.conf").write_text("allow_anonymous false\npassword_file passwd\n")

    assert password_files(conf, tmp_path) == {(tmp_path / "passwd").resolve()}
    assert password_files(tmp_path / "missing.conf", tmp_path) == set()


def test_a_pidfile_naming_another_process_or_garbage_is_not_signalled(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    pidfile = pidfile_for(passwd)

    pidfile.write_text(f"{os.getpid()}\n")  # a live process, but not our mosquitto
    assert reload_broker(passwd) is None
    pidfile.write_text("not a pid\n")
    assert reload_broker(passwd) is None
    pidfile.write_text("999999999\n")  # no such process
    assert reload_broker(passwd) is None


def test_a_broker_is_ours_only_while_it_runs_the_configuration_beside_the_password_file(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path / "passwd")

    assert runs_config(["/usr/sbin/mosquitto", "-c", str(config)], config)
    assert not runs_config(["/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"], config)
    assert not runs_config(["/usr/bin/python3", "-c", str(config)], config)
    assert not runs_config([], config)
