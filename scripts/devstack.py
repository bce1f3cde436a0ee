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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from foreground import (  # noqa: E402
    announcer,
    described,
    listening_pids,
    refuse_busy,
    run_in_foreground,
    shown,
    spawn,
    stop_child,
    stop_pid,
    wait_for,
)

from tracker_api.config import ConfigError, describe, load_settings  # noqa: E402
from tracker_api.ops.broker_reload import command_line, config_for, pidfile_for, running_broker  # noqa: E402
from tracker_api.ops.ports import port_free, port_open  # noqa: E402
from tracker_api.passwords import PasswordFile  # noqa: E402

say = announcer("make run")

USERS = ("tracker", "reader", "1")  # "1": demo device and per-account reader of account 1
FIRST_RESTART_DELAY, MAX_RESTART_DELAY = 1.0, 30.0
STABLE_AFTER = 30.0  # a broker up this long is healthy again: the next restart is quick


class DevStackSettings(BaseSettings):
    """What `make run` reads besides the API's own TRACKER_* settings."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    mqtt_port: int = Field(1883, ge=1, le=65535)
    var_dir: Path = REPO / "var"


def read_settings() -> tuple[DevStackSettings, str, int]:
    """Validated settings, or one line naming the bad variable and exit 2."""
    try:
        ours = DevStackSettings()
        api = load_settings()
    except ValidationError as error:
        fail(describe(error, prefix=""))
    except ConfigError as error:
        fail(str(error))
    return ours, api.host, api.port


def fail(message: str) -> None:
    sys.stderr.write(f"[make run] invalid configuration: {message}\n")
    raise SystemExit(2)


SETTINGS, API_HOST, API_PORT = read_settings()
BROKER_PORT = SETTINGS.mqtt_port
VAR = SETTINGS.var_dir.resolve()
MQTT_DIR = VAR / "mqtt"
CREDENTIALS = VAR / "credentials.env"
PASSWD = MQTT_DIR / "passwd"
API_PIDFILE = VAR / "api.pid"
# The API as a client reaches it: a wildcard bind address is reached on the loopback.
API_URL = f"http://{'127.0.0.1' if API_HOST in ('0.0.0.0', '') else API_HOST}:{API_PORT}"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(
        name, path="/usr/sbin:/usr/local/sbin:/opt/homebrew/sbin"
    )
    if not found:
        sys.exit(f"[make run] {name} not found: run scripts/ensure-mosquitto.sh")
    return found


def write_credentials(values: dict[str, str]) -> None:
    """var/credentials.env, readable by its owner only (passwords)."""
    CREDENTIALS.touch(mode=0o600)
    os.chmod(CREDENTIALS, 0o600)
    CREDENTIALS.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def load_credentials() -> dict[str, str]:
    """Read var/credentials.env, creating it (and the password file) on first run."""
    if CREDENTIALS.exists() and PASSWD.exists():
        pairs = (line.split("=", 1) for line in CREDENTIALS.read_text().splitlines() if "=" in line)
        stored = dict(pairs)
        if stored.get("MQTT_TAIL_API") != API_URL:
            # Written by an earlier run (or for another TRACKER_PORT): mqtt-tail --since
            # sends the login only to an API it is given, so name this run's.
            stored["MQTT_TAIL_API"] = API_URL
            write_credentials(stored)
        url = urlsplit(stored["TRACKER_MQTT_URL"])  # MQTT_PORT may differ from the first run's
        login = url.netloc.rsplit(":", 1)[0]
        stored["TRACKER_MQTT_URL"] = url._replace(netloc=f"{login}:{BROKER_PORT}").geturl()
        return stored
    MQTT_DIR.mkdir(parents=True, exist_ok=True)
    passwords = {user: secrets.token_urlsafe(18) for user in USERS}
    PASSWD.unlink(missing_ok=True)
    password_file = PasswordFile(PASSWD)
    for user, password in passwords.items():
        password_file.set(user, password)
    password_file.save()
    values = {
        "TRACKER_MQTT_URL": f"mqtt://tracker:{passwords['tracker']}@127.0.0.1:{BROKER_PORT}",
        "MQTT_TAIL_USERNAME": "reader",
        "MQTT_TAIL_PASSWORD": passwords["reader"],
        "DEVICE_1_PASSWORD": passwords["1"],
        # Where mqtt-tail --since reads the history (with the reader's login).
        "MQTT_TAIL_API": API_URL,
    }
    write_credentials(values)
    say(f"created local MQTT credentials in {shown(CREDENTIALS)} (mode 0600):")
    say("  tracker  publishes track/#            (the API uses it)")
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


def free_port_or_exit(port: int, name: str, variable: str) -> None:
    """Stop a leftover of an earlier `make run` here; refuse with who holds it otherwise."""
    if port_free(port):
        return
    for pid in listening_pids(port):
        if not ours(pid):
            continue
        parent = parent_of(pid)
        if parent and "devstack.py" in " ".join(command_line(parent) or []):
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


def ended(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


class Stack:
    def __init__(self) -> None:
        self.seed: subprocess.Popen[bytes] | None = None
        self.broker: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None

    def run(self) -> int:
        free_port_or_exit(BROKER_PORT, "the broker", "MQTT_PORT")
        free_port_or_exit(API_PORT, "the API", "TRACKER_PORT")
        env = {**os.environ, **load_credentials()}
        env.setdefault("TRACKER_DATABASE_URL", f"sqlite:///{VAR / 'tracker.db'}")
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

        self.api = spawn_recorded([sys.executable, "-m", "tracker_api"], API_PIDFILE, env=env)
        if not wait_for(lambda: port_open(API_PORT, API_HOST), self.api, 30):
            say("the API did not start")
            return 1
        self.banner()
        return self.supervise(config)

    def banner(self) -> None:
        bin_dir = shown(Path(sys.executable).parent)
        port = f" --port {BROKER_PORT}" if BROKER_PORT != 1883 else ""
        say(f"API on http://{API_HOST}:{API_PORT}  (docs: http://{API_HOST}:{API_PORT}/docs)")
        say("try it, in another terminal:")
        try:
            print(f"    curl 'http://{API_HOST}:{API_PORT}/1?data=hello'")
            print(
                f"    set -a; . {shown(CREDENTIALS)}; set +a; {bin_dir}/mqtt-tail{port} --account +"
            )
            print("    make tail            # the same, in short")
        except OSError:
            pass
        say("Ctrl-C stops everything")

    def supervise(self, config: Path) -> int:
        """Until a signal: keep the broker up; stop everything if the API exits."""
        assert self.broker is not None and self.api is not None
        delay, up_since = FIRST_RESTART_DELAY, time.monotonic()
        while True:
            if self.api.poll() is not None:
                say(f"the API {ended(self.api.returncode)}; stopping")
                return 1
            if self.broker.poll() is None:
                if time.monotonic() - up_since > STABLE_AFTER:
                    delay = FIRST_RESTART_DELAY
                time.sleep(0.2)
                continue
            say(
                f"the broker {ended(self.broker.returncode)}; restarting it in {delay:g} s "
                "(meanwhile the API answers 503)"
            )
            time.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)
            self.broker = start_broker(config)
            if wait_for(lambda: port_open(BROKER_PORT), self.broker, 10):
                say(f"broker restarted on 127.0.0.1:{BROKER_PORT} (pid {self.broker.pid})")
                up_since = time.monotonic()

    def stop(self) -> None:
        stop_child(self.seed)
        # The API first, so it disconnects from a broker that is still there.
        stop_child(self.api, API_PIDFILE)
        stop_child(self.broker, pidfile_for(PASSWD))


if __name__ == "__main__":
    sys.exit(run_in_foreground(Stack(), say))
