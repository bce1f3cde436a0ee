"""`make run`: the whole system on 127.0.0.1, in the foreground; Ctrl-C stops it all.

1. local credentials (first run only): random passwords for the tracker, a reader and a
   demo device, stored in var/credentials.env (0600) and in Mosquitto's password file;
2. the accounts database var/tracker.db, seeded (idempotent);
3. Mosquitto on 127.0.0.1:1883 with the project's shared settings and var/mqtt/data,
   restarted with backoff whenever it dies (the API answers 503 meanwhile and reconnects);
4. the API on 127.0.0.1:9000 (TRACKER_* from the environment or .env still apply).

Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop the API, then the broker. The children
also get SIGTERM from the kernel if this process dies without a word (SIGKILL).
"""

from __future__ import annotations

import getpass
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from scripts.foreground import (
    Supervised,
    Supervisor,
    announcer,
    command_line_help,
    described,
    ended,
    listening_pids,
    make_state_dir,
    refuse_busy,
    run_in_foreground,
    shown,
    spawn,
    stop_child,
    stop_pid,
    wait_for,
)
from tracker_api.config import ConfigError, Settings, describe, load_settings
from tracker_api.ops import local_credentials
from tracker_api.ops.broker_reload import command_line, config_for, pidfile_for, running_broker
from tracker_api.ops.ports import port_free, port_open
from tracker_api.passwords import PasswordFile

REPO = Path(__file__).resolve().parents[1]

say = announcer("make run")
# Before the settings are read or a port is looked at: --help never starts anything.
command_line_help(
    "python -m scripts.devstack",
    __doc__,
    "settings (environment or make variables): MQTT_PORT (1883), VAR_DIR (var), and the\n"
    "API's TRACKER_* (README.md, Configuration).",
)

USERS = ("tracker", "reader", "1")  # "1": demo device and per-account reader of account 1


DEFAULT_MQTT_PORT, DEFAULT_VAR = 1883, REPO / "var"


class DevStackSettings(BaseSettings):
    """What `make run` reads besides the API's own TRACKER_* settings."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    mqtt_port: int = Field(DEFAULT_MQTT_PORT, ge=1, le=65535)
    var_dir: Path = DEFAULT_VAR


def read_settings() -> tuple[DevStackSettings, Settings]:
    """Validated settings, or one line naming the bad variable and exit 2."""
    try:
        ours = DevStackSettings()
        api = api_settings(ours.var_dir.resolve() / "mqtt" / "passwd")
    except ValidationError as error:
        fail(describe(error, prefix=""))
    except ConfigError as error:
        fail(str(error))
    return ours, api


def api_settings(passwd: Path) -> Settings:
    """The API's settings as `make run` starts it: with its broker's password file unless
    TRACKER_PASSWORD_FILE names another, so TRACKER_HTTP_AUTH=true needs nothing more. On a
    first run that file is written after this check (nothing is made before the settings
    are known to be valid): until then any existing file stands in for it."""
    if load_settings(http_auth=False).password_file is not None:  # named: checked as is
        return load_settings()
    stand_in = passwd if passwd.is_file() else Path(__file__)
    return load_settings(password_file=stand_in).model_copy(update={"password_file": passwd})


def fail(message: str) -> None:
    sys.stderr.write(f"[make run] invalid configuration: {message}\n")
    raise SystemExit(2)


SETTINGS, API = read_settings()
API_HOST, API_PORT = API.host, API.port
BROKER_PORT = SETTINGS.mqtt_port
VAR = SETTINGS.var_dir.resolve()
MQTT_DIR = VAR / "mqtt"
CREDENTIALS = VAR / local_credentials.FILE_NAME
PASSWD = MQTT_DIR / "passwd"
API_PIDFILE = VAR / "api.pid"
ARCHIVE_PIDFILE = VAR / "archive.pid"
ARCHIVE_LOG = VAR / "archive.log"
DEFAULT_API_PORT = 9000
# The API as a client reaches it: a wildcard bind address is reached on the loopback.
API_URL = f"http://{'127.0.0.1' if API_HOST in ('0.0.0.0', '') else API_HOST}:{API_PORT}"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(
        name, path="/usr/sbin:/usr/local/sbin:/opt/homebrew/sbin"
    )
    if not found:
        sys.exit(f"[make run] {name} not found: run scripts/ensure-mosquitto.sh")
    return found


def load_credentials() -> dict[str, str]:
    """Read var/credentials.env, creating it (and the password file) on first run."""
    if CREDENTIALS.exists() and PASSWD.exists():
        stored = local_credentials.read(CREDENTIALS)
        if stored.get("MQTT_TAIL_API") != API_URL:
            # Written by an earlier run (or for another TRACKER_PORT): mqtt-tail --since
            # sends the login only to an API it is given, so name this run's.
            stored["MQTT_TAIL_API"] = API_URL
            local_credentials.write(CREDENTIALS, stored)
        # MQTT_PORT may differ from the first run's.
        url = urlsplit(stored[local_credentials.TRACKER_URL])
        login = url.netloc.rsplit(":", 1)[0]
        url = url._replace(netloc=f"{login}:{BROKER_PORT}")
        stored[local_credentials.TRACKER_URL] = url.geturl()
        if "MQTT_TRACKER_PASSWORD" not in stored:  # written by an older `make run`
            stored["MQTT_TRACKER_PASSWORD"] = unquote(url.password or "")
            with open(CREDENTIALS, "a") as file:
                file.write(f"MQTT_TRACKER_PASSWORD={stored['MQTT_TRACKER_PASSWORD']}\n")
        return stored
    MQTT_DIR.mkdir(parents=True, exist_ok=True)
    passwords = {user: secrets.token_urlsafe(18) for user in USERS}
    PASSWD.unlink(missing_ok=True)
    password_file = PasswordFile(PASSWD)
    for user, password in passwords.items():
        password_file.set(user, password)
    password_file.save()
    values = {
        local_credentials.TRACKER_URL: (
            f"mqtt://tracker:{passwords['tracker']}@127.0.0.1:{BROKER_PORT}"
        ),
        local_credentials.READER_USERNAME: "reader",
        local_credentials.READER_PASSWORD: passwords["reader"],
        local_credentials.device_variable("1"): passwords["1"],
        # The admin API's login (HTTP Basic), as compose's .env names it.
        "MQTT_TRACKER_PASSWORD": passwords["tracker"],
        # Where mqtt-tail --since reads the history (with the reader's login).
        "MQTT_TAIL_API": API_URL,
    }
    local_credentials.write(CREDENTIALS, values)
    say(f"created local MQTT credentials in {shown(CREDENTIALS)} (mode 0600):")
    say("  tracker  publishes track/#            (the API uses it; the admin API's login)")
    say(f"  reader   reads track/#               password {passwords['reader']}")
    say(f"  1        account 1: reads track/1, publishes ingest/1, password {passwords['1']}")
    say(f"  load them in a shell with: set -a; . {shown(CREDENTIALS)}; set +a")
    return values


def session_owner_plugin() -> Path:
    """mqtt/plugin/session_owner.so, built into the broker's folder when missing or stale."""
    build = [str(REPO / "mqtt" / "plugin" / "build.sh"), str(MQTT_DIR / "plugin")]
    built = subprocess.run(build, stdout=subprocess.PIPE, text=True)
    if built.returncode != 0:
        sys.exit(
            "[make run] cannot build the broker plugin (mqtt/plugin): "
            "run scripts/ensure-mosquitto.sh, which installs a C compiler and its headers"
        )
    return Path(built.stdout.strip())


def broker_config() -> Path:
    data = MQTT_DIR / "data"
    data.mkdir(parents=True, exist_ok=True)
    conf = config_for(PASSWD)
    conf.write_text(
        "\n".join(
            [
                "# Generated by scripts/devstack.py; edit mqtt/conf.d or mqtt/acl instead.",
                f"user {getpass.getuser()}",
                "per_listener_settings false",
                "allow_anonymous false",
                f"password_file {PASSWD}",
                f"acl_file {REPO / 'mqtt' / 'acl'}",
                # A login may use only its own client ids (docs/adr/0016).
                f"plugin {session_owner_plugin()}",
                f"persistence_location {data}/",
                f"log_dest file {MQTT_DIR / 'mosquitto.log'}",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "connection_messages true",
                f"include_dir {REPO / 'mqtt' / 'conf.d'}",
                f"listener {BROKER_PORT} 127.0.0.1",
                "",
            ]
        )
    )
    return conf


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def ours(pid: int) -> bool:
    """Started by `make run` in this checkout (same var directory), live or left over."""
    if pid == running_broker(PASSWD):
        return True
    try:
        recorded = int(API_PIDFILE.read_text())
    except (OSError, ValueError):
        return False
    return pid == recorded and "tracker_api" in (command_line(pid) or [])


def stop_leftover(pidfile: Path, name: str) -> None:
    """Stop a process an earlier `make run` of this checkout left behind (its pid file
    names a live tracker_api process)."""
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    if "tracker_api" in (command_line(pid) or []):
        say(f"stopping a leftover {name} of an earlier make run, {described(pid)}")
        stop_pid(pid, signal.SIGTERM, timeout=10.0)


def is_make_run(command: list[str]) -> bool:
    """Whether a command line is `make run`'s: ``python -m scripts.devstack`` (or the
    script run as a file)."""
    return "scripts.devstack" in command or any(arg.endswith("devstack.py") for arg in command)


def free_port_or_exit(port: int, name: str, variable: str) -> None:
    """Stop a leftover of an earlier `make run` here; refuse with who holds it otherwise."""
    if port_free(port):
        return
    for pid in listening_pids(port):
        if not ours(pid):
            continue
        parent = parent_of(pid)
        if parent and is_make_run(command_line(parent) or []):
            sys.exit(
                f"[make run] port {port} ({name}) is served by another `make run` of this "
                f"checkout (pid {parent}): stop it with Ctrl-C in its terminal, or: kill {parent}"
            )
        say(f"port {port} ({name}): stopping a leftover of an earlier make run, {described(pid)}")
        stop_pid(pid, signal.SIGTERM, timeout=10.0)
    refuse_busy(port, name, "make run", f"stop it, or choose another port with {variable}=...")


def spawn_recorded(
    args: list[str],
    pidfile: Path,
    *,
    env: dict[str, str] | None = None,
    output: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    child = spawn(args, env=env, output=output)
    pidfile.write_text(f"{child.pid}\n")
    return child


def start_broker(config: Path) -> subprocess.Popen[bytes]:
    with open(MQTT_DIR / "mosquitto.log", "ab") as log:  # start-up chatter, too
        args = [tool("mosquitto"), "-c", str(config)]
        return spawn_recorded(args, pidfile_for(PASSWD), output=log)


def hints() -> list[str]:
    """The banner's commands, for this run's ports and state directory: each one reaches
    this system, whatever was moved (TRACKER_PORT, MQTT_PORT, VAR_DIR)."""
    bin_dir = shown(Path(sys.executable).parent)
    load = f"set -a; . {shown(CREDENTIALS)}; set +a"
    # With logins on, events come as a JSON POST with the device's login (an anonymous
    # request is a 401, a GET a 405): the demo device's login, from the credentials.
    if API.http_auth:
        url = f"http://{API_HOST}:{API_PORT}/1"
        curl = (
            f"{load}; curl -u \"1:$DEVICE_1_PASSWORD\" -H 'Content-Type: application/json' "
            f'--data \'{{"data": "hello"}}\' {url}'
        )
    else:
        curl = f"curl 'http://{API_HOST}:{API_PORT}/1?data=hello'"
    port = f" --port {BROKER_PORT}" if BROKER_PORT != DEFAULT_MQTT_PORT else ""
    return [
        curl,
        f"{load}; {bin_dir}/mqtt-tail{port} --account +",
        f"make tail{make_overrides()}            # the same, in short",
    ]


def make_overrides() -> str:
    """`make` variables naming what this run moved from the defaults the Makefile knows."""
    moved = []
    if BROKER_PORT != DEFAULT_MQTT_PORT:
        moved.append(f"MQTT_PORT={BROKER_PORT}")
    if VAR != DEFAULT_VAR:
        moved.append(f"VAR_DIR={shlex.quote(str(shown(VAR)))}")
    if API_PORT != DEFAULT_API_PORT:  # where `make tail ARGS=--since…` reads the history
        moved.append(f"TRACKER_PORT={API_PORT}")
    return "".join(f" {variable}" for variable in moved)


class Stack:
    def __init__(self) -> None:
        self.seed: subprocess.Popen[bytes] | None = None
        self.broker: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        # The archive in a process of its own (docs/adr/0015-event-archive.md), unless
        # TRACKER_ARCHIVE=false turns it off.
        self.archive: subprocess.Popen[bytes] | None = None
        self.archive_env: dict[str, str] | None = None
        self.supervised: list[Supervised] = []  # the broker and the archive, once supervised

    def run(self) -> int:
        free_port_or_exit(BROKER_PORT, "the broker", "MQTT_PORT")
        free_port_or_exit(API_PORT, "the API", "TRACKER_PORT")
        make_state_dir(VAR)
        env = {**os.environ, **load_credentials()}
        env.setdefault("TRACKER_DATABASE_URL", f"sqlite:///{VAR / 'tracker.db'}")
        # The leases and client id slots beside the rest of this run's state, wherever
        # VAR_DIR puts it (not in the working directory's var/).
        env.setdefault("TRACKER_STATE_DIR", str(VAR))
        # The broker needs logins, so the history does too: an account's login reads only
        # its own events there, as on the broker.
        env.setdefault("TRACKER_PASSWORD_FILE", str(PASSWD))
        # In its own session like the others: a Ctrl-C that lands while its interpreter is
        # still starting would print a traceback; we stop it with SIGTERM instead.
        self.seed = spawn([sys.executable, str(REPO / "data" / "seed.py")], env=env)
        if self.seed.wait() != 0:
            say(f"seeding failed (code {self.seed.returncode})")
            return 1

        config = broker_config()
        self.broker = start_broker(config)
        if not wait_for(lambda: port_open(BROKER_PORT), self.broker, 10):
            say(f"mosquitto did not start: see {shown(MQTT_DIR / 'mosquitto.log')}")
            return 1
        say(f"broker on 127.0.0.1:{BROKER_PORT} (log: {shown(MQTT_DIR / 'mosquitto.log')})")

        if env.get("TRACKER_ARCHIVE", "true").lower() not in ("false", "0", "no", "off"):
            # One metrics directory for the API and the archive: the API's /metrics then
            # shows the archive's figures (lag, archived, malformed) too.
            env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="tracker-metrics-"))
            # At least INFO: its log says when it consumes (and is read for that here).
            level = "DEBUG" if env.get("TRACKER_LOG_LEVEL") == "DEBUG" else "INFO"
            self.archive_env = {**env, "TRACKER_LOG_LEVEL": level}
            env = {**env, "TRACKER_ARCHIVE": "false"}  # the API's workers leave it to it
            # Subscribed before the API accepts anything: every acknowledged event is
            # then queued for it, even while it restarts.
            if not self.start_archive():
                return 1
        self.api = spawn_recorded([sys.executable, "-m", "tracker_api"], API_PIDFILE, env=env)
        if not wait_for(lambda: port_open(API_PORT, API_HOST), self.api, 30):
            say("the API did not start")
            return 1
        self.banner()
        return self.supervise(config)

    def banner(self) -> None:
        say(f"API on http://{API_HOST}:{API_PORT}  (docs: http://{API_HOST}:{API_PORT}/docs)")
        say("try it, in another terminal:")
        try:
            for line in hints():
                print(f"    {line}")
        except OSError:
            pass
        say("Ctrl-C stops everything")

    def spawn_archive(self) -> subprocess.Popen[bytes]:
        """``tracker-api archive``, its output appended to ARCHIVE_LOG."""
        assert self.archive_env is not None
        with open(ARCHIVE_LOG, "ab") as log:
            args = [sys.executable, "-m", "tracker_api", "archive"]
            return spawn_recorded(args, ARCHIVE_PIDFILE, env=self.archive_env, output=log)

    def start_archive(self) -> bool:
        """Start the archive and wait until it consumes its session."""
        stop_leftover(ARCHIVE_PIDFILE, "archive")
        start = ARCHIVE_LOG.stat().st_size if ARCHIVE_LOG.exists() else 0
        self.archive = archive = self.spawn_archive()

        def consuming() -> bool:
            with open(ARCHIVE_LOG, "rb") as log:
                log.seek(start)
                return b"subscribed to " in log.read()

        if not wait_for(consuming, archive, 30):
            say(f"the archive did not start: see {shown(ARCHIVE_LOG)}")
            return False
        say(f"archive running (pid {archive.pid}, log: {shown(ARCHIVE_LOG)})")
        return True

    def supervise(self, config: Path) -> int:
        """Until a signal: keep the broker and the archive up; stop everything if the API
        exits."""
        assert self.broker is not None and self.api is not None
        self.supervised = [
            Supervised(
                "the broker",
                self.broker,
                start=lambda: start_broker(config),
                ready=lambda: port_open(BROKER_PORT),
                meanwhile="meanwhile the API answers 503",
                back=lambda pid: f"broker restarted on 127.0.0.1:{BROKER_PORT} (pid {pid})",
            )
        ]
        if self.archive is not None:
            self.supervised.append(
                Supervised(
                    "the archive",
                    self.archive,
                    start=self.spawn_archive,
                    ready=lambda: True,
                    meanwhile="the broker keeps its events meanwhile",
                    back=lambda pid: f"archive restarted (pid {pid})",
                )
            )
        supervisor = Supervisor(say, self.supervised)
        while True:
            if self.api.poll() is not None:
                say(f"the API {ended(self.api.returncode)}; stopping")
                return 1
            supervisor.tick()
            time.sleep(0.2)

    def stop(self) -> None:
        stop_child(self.seed)
        # The API first, so it disconnects from a broker that is still there.
        stop_child(self.api, API_PIDFILE)
        running = {item.name: item.process for item in self.supervised}
        stop_child(running.get("the archive", self.archive), ARCHIVE_PIDFILE)
        stop_child(running.get("the broker", self.broker), pidfile_for(PASSWD))


if __name__ == "__main__":
    sys.exit(run_in_foreground(Stack(), say))
