"""`tracker-api users add/remove` reload only the broker `make run` started for that file."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from tracker_api.__main__ import cli
from tracker_api.ops.broker_reload import (
    RELOAD_HINT,
    config_for,
    pidfile_for,
    reload_broker,
    runs_config,
)


def test_without_a_broker_of_make_run_the_exact_reload_command_is_printed(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    runner = CliRunner()

    added = runner.invoke(cli, ["users", "add", "7", "--password", "x", "--password-file", passwd])
    removed = runner.invoke(cli, ["users", "remove", "7", "--password-file", str(passwd)])

    assert added.exit_code == 0 and removed.exit_code == 0, added.output + removed.output
    for result in (added, removed):
        assert RELOAD_HINT in result.stderr
        assert "kill -HUP $(pidof mosquitto)" in result.stderr


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
