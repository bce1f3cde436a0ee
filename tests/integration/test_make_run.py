"""`make run` (scripts/devstack.py) run as a person does: in its own process group (as a
terminal runs it), stopped by the signals a terminal or a shell sends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from devkit.metrics import value
from devkit.mqtt_client import paho_client
from devkit.net import free_port, port_open
from devkit.waiting import wait_until
from tests.helpers.mqtt_peer import Peer

REPO = Path(__file__).resolve().parents[2]
BROKER_PIDFILE, API_PIDFILE = "mqtt/mosquitto.pid", "api.pid"
ARCHIVE_PIDFILE = "archive.pid"


class DevStack:
    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.broker_port, self.api_port = free_port(), free_port()
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "MQTT_TAIL_"))
        }
        self.env.update(
            VAR_DIR=str(var_dir), MQTT_PORT=str(self.broker_port), TRACKER_PORT=str(self.api_port)
        )
        self.output = var_dir.parent / f"devstack-{self.api_port}.log"

    def launch(self, command: list[str] | None = None) -> subprocess.Popen[bytes]:
        """Start it in a process group of its own, as a shell's job is: a terminal's
        Ctrl-C or hang-up reaches every process of the group."""
        self.offset = self.output.stat().st_size if self.output.exists() else 0
        with open(self.output, "ab") as out:
            return subprocess.Popen(
                command or [sys.executable, "-m", "scripts.devstack"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self) -> subprocess.Popen[bytes]:
        process = self.launch()
        wait_until(
            lambda: "Ctrl-C stops everything" in self.latest() or process.poll() is not None,
            timeout=40,
        )
        assert process.poll() is None, self.output.read_text()
        return process

    def latest(self) -> str:
        """The output of the latest start."""
        return self.output.read_text()[self.offset :]

    def pid(self, name: str) -> int:
        return int((self.var_dir / name).read_text())

    def stopped_cleanly(self, process: subprocess.Popen[bytes]) -> None:
        assert process.wait(20) == 0, self.latest()
        assert not port_open(self.broker_port)
        assert not port_open(self.api_port)
        assert not (self.var_dir / BROKER_PIDFILE).exists()
        assert not (self.var_dir / API_PIDFILE).exists()
        assert not (self.var_dir / ARCHIVE_PIDFILE).exists()
        output = self.latest()
        assert "Traceback" not in output and "WARNING" not in output, output
        assert output.rstrip().endswith("[make run] stopped"), output

    def credentials(self) -> dict[str, str]:
        text = (self.var_dir / "credentials.env").read_text()
        return dict(line.split("=", 1) for line in text.splitlines())


def connect_result(port: int, username: str | None = None, password: str | None = None) -> str:
    """The broker's CONNACK reason for this login (anonymous without a username)."""
    client = paho_client(username=username, password=password)
    codes: list[str] = []
    client.on_connect = lambda c, u, f, rc, p: codes.append(str(rc))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(lambda: codes, timeout=5)
    finally:
        client.loop_stop()
        client.disconnect()
    return codes[0]


@pytest.mark.slow
def assert_an_event_reaches_the_reader(
    stack: DevStack, credentials: dict[str, str], data: str
) -> None:
    """A GET answered 200, and the reader's login receives that very event."""
    login = {"username": "reader", "password": credentials["MQTT_TAIL_PASSWORD"]}
    with Peer(stack.broker_port, "track/#", **login) as reader:
        response = httpx.get(f"http://127.0.0.1:{stack.api_port}/1", params={"data": data})
        assert response.status_code == 200
        (message,) = reader.wait_for(1)
    assert message.event == response.json()["event"]


def test_make_run_brings_the_system_up_secured_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "var")
    process = stack.start()
    try:
        credentials = stack.credentials()
        mode = stat.S_IMODE((stack.var_dir / "credentials.env").stat().st_mode)
        assert mode == 0o600
        assert connect_result(stack.broker_port) == "Not authorized"

        assert_an_event_reaches_the_reader(stack, credentials, "hi")

        # The history asks for the broker's logins too: none or a wrong one is 401, an
        # account's login reads only its own account, the reader everything.
        history = f"http://127.0.0.1:{stack.api_port}/events"
        reader = ("reader", credentials["MQTT_TAIL_PASSWORD"])
        device = ("1", credentials["DEVICE_1_PASSWORD"])
        hour = {"since": "1h"}
        assert httpx.get(history, params=hour).status_code == 401
        assert httpx.get(history, params=hour, auth=("reader", "wrong")).status_code == 401
        other = {"account": "2", **hour}
        assert httpx.get(history, params=other, auth=device).status_code == 403

        def own_history() -> list[str]:
            own = httpx.get(history, params={"account": "1", **hour}, auth=device)
            return [event["data"] for event in own.json()["events"]]

        wait_until(lambda: own_history() == ["hi"], timeout=10, message="not archived")
        assert httpx.get(history, params=hour, auth=reader).status_code == 200

        # The admin API takes the tracker's login, which the credentials file now names.
        admin = f"http://127.0.0.1:{stack.api_port}/admin/accounts/1"
        service = ("tracker", credentials["MQTT_TRACKER_PASSWORD"])
        assert httpx.get(admin, auth=service).json()["accountId"] == "1"
        assert httpx.get(admin, auth=reader).status_code == 403

        # `make tail`, as the banner suggests, shows events with the reader's login.
        tail_err = stack.var_dir.parent / "tail.err"
        with open(tail_err, "wb") as err:
            tail = subprocess.Popen(
                ["make", "-s", "--no-print-directory", "tail", "ARGS=--count 1 --json --clean"],
                cwd=REPO,
                env=stack.env,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        try:
            wait_until(
                lambda: "subscribed to track/#" in tail_err.read_text(),
                timeout=10,
                message=f"make tail did not subscribe (see {tail_err})",
            )
            shown = httpx.get(f"http://127.0.0.1:{stack.api_port}/2", params={"data": "tail"})
            out, _ = tail.communicate(timeout=10)
        finally:
            tail.kill()
            tail.communicate()  # reaps it and closes its pipe, whatever happened
        assert tail.returncode == 0, tail_err.read_text()
        assert json.loads(out)["eventId"] == shown.json()["event"]["eventId"]

        # `make tail ARGS=--since …` replays from the API that credentials.env names: the
        # login goes only where the settings say.
        assert credentials["MQTT_TAIL_API"] == f"http://127.0.0.1:{stack.api_port}"
        replayed = subprocess.run(
            ["make", "-s", "--no-print-directory", "tail", "ARGS=--since 1h --count 1 --json"],
            cwd=REPO,
            env=stack.env,
            capture_output=True,
            timeout=30,
        )
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["data"] == "hi"
        output = stack.output.read_text()
        assert f"curl 'http://127.0.0.1:{stack.api_port}/1?data=hello'" in output
        assert f"mqtt-tail --port {stack.broker_port} --account +" in output
        assert "make tail" in output
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
    stack.stopped_cleanly(process)

    # A second run reuses credentials and data and is up within seconds; a credentials
    # file of an older `make run`, without the admin login's password or MQTT_TAIL_API,
    # gets them.
    older = stack.var_dir / "credentials.env"
    older.write_text(
        "".join(
            line
            for line in older.read_text().splitlines(True)
            if "MQTT_TRACKER_" not in line and "TAIL_API" not in line
        )
    )
    started = time.monotonic()
    process = stack.start()
    try:
        assert time.monotonic() - started < 15
        assert stack.credentials() == credentials
        assert stack.output.read_text().count("created local MQTT credentials") == 1

        # Another make run of this checkout meanwhile is refused and touches nothing of
        # this one: its pidfiles stay, and the broker and API go on serving.
        broker, api = stack.pid(BROKER_PIDFILE), stack.pid(API_PIDFILE)
        first_offset = stack.offset
        second = stack.launch()
        assert second.wait(20) == 1
        refusal = stack.latest()
        assert f"served by another `make run` of this checkout (pid {process.pid})" in refusal
        assert "Traceback" not in refusal
        assert (stack.pid(BROKER_PIDFILE), stack.pid(API_PIDFILE)) == (broker, api)
        assert_an_event_reaches_the_reader(stack, credentials, "still")
        assert process.poll() is None
        stack.offset = first_offset  # both write to one file: the first's end is checked
    finally:
        os.killpg(process.pid, signal.SIGINT)
    stack.stopped_cleanly(process)


def banner_commands(output: str) -> list[str]:
    """The commands the banner suggests, as a person would paste them (comments dropped)."""
    block = output.split("try it, in another terminal:\n", 1)[1].split("[make run]", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def shell(command: str, env: dict[str, str], timeout: float = 30) -> str:
    done = subprocess.run(
        ["sh", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_banner_commands_reach_this_system_with_moved_ports_state_and_logins(
    tmp_path: Path,
) -> None:
    """Ports and VAR_DIR moved, TRACKER_HTTP_AUTH=true: every command the banner prints,
    pasted into a shell that has none of those variables, reaches this system (not one
    on the default ports); the state directory is ignored by git wherever it is, and
    `make clean` removes it."""
    checkout = tmp_path / "checkout"  # a VAR_DIR inside some git work tree
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    stack = DevStack(checkout / "state")
    stack.output = tmp_path / "devstack.log"  # outside the work tree checked below
    stack.env["TRACKER_HTTP_AUTH"] = "true"
    process = stack.start()
    try:
        curl, tail_line, make_tail = banner_commands(stack.latest())
        bare = {k: v for k, v in stack.env.items() if k not in ("MQTT_PORT", "VAR_DIR")}
        bare = {k: v for k, v in bare.items() if not k.startswith("TRACKER_")}
        assert f"--port {stack.broker_port}" in tail_line
        assert make_tail == (
            f"make tail MQTT_PORT={stack.broker_port} VAR_DIR={stack.var_dir} "
            f"TRACKER_PORT={stack.api_port}"
        )
        # Logins on: the banner's curl carries the demo device's, and is answered 200.
        assert '-u "1:$DEVICE_1_PASSWORD"' in curl
        assert json.loads(shell(curl, bare))["event"]["data"] == "hello"
        anonymous = httpx.post(f"http://127.0.0.1:{stack.api_port}/1", json={"data": "x"})
        assert anonymous.status_code == 401

        tail_err = tmp_path / "tail.err"
        with open(tail_err, "wb") as err:
            tail = subprocess.Popen(
                ["sh", "-c", f"{make_tail} ARGS='--count 1 --json --clean'"],
                cwd=REPO,
                env={**bare, "MAKEFLAGS": "-s --no-print-directory"},
                stdout=subprocess.PIPE,
                stderr=err,
            )
        try:
            wait_until(
                lambda: "subscribed to track/#" in tail_err.read_text(),
                timeout=15,
                message=f"the banner's make tail did not subscribe: {tail_err.read_text()}",
            )
            assert f"connected to 127.0.0.1:{stack.broker_port}" in tail_err.read_text()
            sent = json.loads(shell(curl, bare))["event"]
            out, _ = tail.communicate(timeout=10)
        finally:
            tail.kill()
            tail.communicate()
        assert json.loads(out)["eventId"] == sent["eventId"]

        ignore = stack.var_dir / ".gitignore"
        assert ignore.read_text().splitlines()[1:] == ["*"]
        status = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert status.stdout == "", status.stdout  # credentials, database: nothing to commit
    finally:
        os.killpg(process.pid, signal.SIGINT)
    stack.stopped_cleanly(process)

    # make clean removes this VAR_DIR (marked as made by make run), and refuses one that
    # is not marked so.
    shell(f"make -s clean-state VAR_DIR={stack.var_dir}", bare)
    assert not stack.var_dir.exists()
    foreign = tmp_path / "not-ours"
    foreign.mkdir()
    refused = subprocess.run(
        ["make", "-s", "clean-state", f"VAR_DIR={foreign}"],
        cwd=REPO,
        env=bare,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert f"make clean: {foreign} was not made by make run or make cluster" in refused.stderr
    assert foreign.exists()


def test_make_help_aligns_every_description() -> None:
    lines = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    names = [line.split()[1] for line in lines]
    columns = {
        line.index(line.split()[2], len("  make ") + len(name))
        for line, name in zip(lines, names, strict=True)
    }

    assert "bench-cluster" in names
    assert len(columns) == 1, lines


@pytest.mark.slow
def test_hang_up_and_sigterm_stop_everything_and_a_leftover_broker_is_stopped(
    tmp_path: Path,
) -> None:
    stack = DevStack(tmp_path / "var")
    process = stack.start()
    os.killpg(process.pid, signal.SIGHUP)  # the terminal was closed
    stack.stopped_cleanly(process)
    assert "SIGHUP received: stopping" in stack.latest()

    # A broker left running by an earlier make run of this checkout (as before make run
    # stopped on SIGHUP) is recognised by its pidfile and configuration, and stopped.
    config = stack.var_dir / "mqtt" / "mosquitto.conf"
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    leftover = subprocess.Popen([mosquitto, "-c", str(config)], start_new_session=True)
    try:
        (stack.var_dir / BROKER_PIDFILE).write_text(f"{leftover.pid}\n")
        wait_until(lambda: port_open(stack.broker_port), timeout=10)

        process = stack.start()
        assert leftover.wait(10) == 0  # stopped with SIGTERM, not killed
        assert f"stopping a leftover of an earlier make run, pid {leftover.pid}" in stack.latest()
        process.send_signal(signal.SIGTERM)  # `kill <pid>` from another shell
        stack.stopped_cleanly(process)
    finally:
        leftover.kill()
        leftover.wait()


@pytest.mark.slow
def test_a_sigkilled_make_run_takes_its_children_with_it(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "var")
    process = stack.start()
    broker, api = stack.pid(BROKER_PIDFILE), stack.pid(API_PIDFILE)

    process.kill()
    process.wait()

    wait_until(lambda: not port_open(stack.broker_port) and not port_open(stack.api_port))
    for pid in (broker, api):
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=10)


@pytest.mark.slow
def test_a_busy_port_names_the_process_holding_it_and_nothing_is_left_running(
    tmp_path: Path,
) -> None:
    stack = DevStack(tmp_path / "var")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.api_port))
        squatter.listen()

        process = stack.launch()
        assert process.wait(20) != 0

    output = stack.latest()
    assert f"port {stack.api_port} (the API) is already in use by pid {os.getpid()}" in output
    assert "TRACKER_PORT=" in output
    assert "Traceback" not in output
    assert not port_open(stack.broker_port)


@pytest.mark.slow
def test_the_broker_is_restarted_when_it_dies_and_the_api_recovers_by_itself(
    tmp_path: Path,
) -> None:
    stack = DevStack(tmp_path / "var")
    process = stack.start()
    try:
        event = f"http://127.0.0.1:{stack.api_port}/1"
        api, first_broker = stack.pid(API_PIDFILE), stack.pid(BROKER_PIDFILE)

        os.kill(first_broker, signal.SIGKILL)

        wait_until(lambda: httpx.get(event, params={"data": "x"}).status_code == 503)
        wait_until(lambda: "broker restarted" in stack.latest(), timeout=15)
        wait_until(lambda: httpx.get(event, params={"data": "x"}).status_code == 200, timeout=10)
        assert "the broker was killed by SIGKILL; restarting it in 1 s" in stack.latest()
        assert stack.pid(API_PIDFILE) == api
        assert stack.pid(BROKER_PIDFILE) != first_broker
        assert process.poll() is None
    finally:
        os.killpg(process.pid, signal.SIGINT)
    assert process.wait(20) == 0


def test_the_archive_runs_on_its_own_and_is_restarted_when_it_dies_losing_nothing(
    tmp_path: Path,
) -> None:
    stack = DevStack(tmp_path / "var")
    process = stack.start()
    try:
        reader = ("reader", stack.credentials()["MQTT_TAIL_PASSWORD"])
        base = f"http://127.0.0.1:{stack.api_port}"

        def archived() -> list[str]:
            page = httpx.get(f"{base}/events", params={"since": "1h"}, auth=reader).json()
            return sorted(event["data"] for event in page["events"])

        first = stack.pid(ARCHIVE_PIDFILE)
        assert "tracker_api" in Path(f"/proc/{first}/cmdline").read_text()
        os.kill(first, signal.SIGKILL)
        # Sent while no archive runs: the broker keeps it in the archive's session.
        assert httpx.get(f"{base}/1", params={"data": "while down"}).status_code == 200
        wait_until(lambda: "the archive was killed by SIGKILL" in stack.latest(), timeout=10)
        wait_until(lambda: stack.pid(ARCHIVE_PIDFILE) != first, timeout=10)
        wait_until(lambda: archived() == ["while down"], timeout=15, message=stack.latest())
        # The API's own workers archive nothing: one archive, in its own process, whose
        # figures the API's /metrics shows.
        health = httpx.get(f"{base}/readyz").json()
        assert health["archive"] == "off"
        # Its lag, though, from the watermark it stores: caught up, under a few seconds.
        wait_until(lambda: (httpx.get(f"{base}/readyz").json()["archive_lag_s"] or 99) < 5)
        assert value(httpx.get(f"{base}/metrics").text, "tracker_archived_total") >= 1
    finally:
        os.killpg(process.pid, signal.SIGINT)
    stack.stopped_cleanly(process)


@pytest.mark.slow
def test_users_add_and_remove_make_the_broker_of_make_run_reload(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "var")
    process = stack.start()
    try:
        passwd = stack.var_dir / "mqtt" / "passwd"
        users = [str(Path(sys.executable).parent / "tracker-api"), "users"]
        options = ["--password-file", str(passwd)]
        assert connect_result(stack.broker_port, "42", "pw-42") == "Not authorized"

        added = subprocess.run(
            [*users, "add", "42", "--password", "pw-42", *options], capture_output=True, text=True
        )

        assert added.returncode == 0, added.stderr
        assert f"the broker (pid {stack.pid(BROKER_PIDFILE)}) reloaded" in added.stderr
        wait_until(lambda: connect_result(stack.broker_port, "42", "pw-42") == "Success")

        removed = subprocess.run([*users, "remove", "42", *options], capture_output=True, text=True)
        assert removed.returncode == 0, removed.stderr
        wait_until(lambda: connect_result(stack.broker_port, "42", "pw-42") == "Not authorized")
    finally:
        os.killpg(process.pid, signal.SIGINT)
    stack.stopped_cleanly(process)


@pytest.mark.slow
def test_ctrl_c_while_seeding_exits_quietly(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "var")
    process = stack.launch()
    # The credentials are announced right before the seed starts.
    wait_until(lambda: "created local MQTT credentials" in stack.latest(), timeout=20)

    os.killpg(process.pid, signal.SIGINT)

    assert process.wait(20) == 0
    output = stack.latest()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert not port_open(stack.broker_port)
    assert not port_open(stack.api_port)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TRACKER_PORT", "abc"), ("MQTT_PORT", "70000"), ("TRACKER_WORKERS", "0")],
)
def test_an_invalid_setting_stops_make_run_with_one_line_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    stack = DevStack(tmp_path / "var")
    stack.env[variable] = value

    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "run"],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("[make run]")]
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith(f"[make run] invalid configuration: {variable}: "), ours
    assert "Traceback" not in result.stderr + result.stdout
    assert not (stack.var_dir / "credentials.env").exists()  # nothing was started or made
