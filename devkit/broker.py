"""A real Mosquitto broker for tests and the benchmark: own port, own config, own data
directory.

The broker loads the project's shared settings (``mqtt/conf.d``) so tests and benchmarks
exercise the same durability limits as production. Anonymous access is allowed only here,
unless the caller passes a password file and an ACL.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
from pathlib import Path

from .net import free_port, port_open
from .waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
SHARED_CONF_DIR = REPO / "mqtt" / "conf.d"
PLUGIN_DIR = REPO / ".venv" / "mosquitto-plugin"


def session_owner_plugin() -> Path:
    """The project's broker plugin (a login may use only its own client ids), built by
    mqtt/plugin/build.sh when missing or older than its source."""
    built = subprocess.run(
        [str(REPO / "mqtt" / "plugin" / "build.sh"), str(PLUGIN_DIR)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(built.stdout.strip())


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("mosquitto is not installed: run scripts/ensure-mosquitto.sh")
    return found


class Mosquitto:
    """One broker process. ``start``/``stop``/``kill`` may be called repeatedly;
    the port and the data directory stay the same, so sessions survive restarts."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        extra: str = "",
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "mosquitto.log"
        self.conf_path = workdir / "mosquitto.conf"
        lines = [
            # Stay the user we are: a broker started by root would otherwise switch to
            # `mosquitto`, which cannot write into a private temporary directory.
            f"user {getpass.getuser()}",
            f"persistence_location {self.data_dir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"include_dir {SHARED_CONF_DIR}",
            f"listener {self.port} 127.0.0.1",
        ]
        if password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += [
                "allow_anonymous false",
                f"password_file {password_file}",
                f"plugin {session_owner_plugin()}",
            ]
        if acl_file is not None:
            lines.append(f"acl_file {acl_file}")
        self.conf_path.write_text("\n".join(lines) + "\n" + extra)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        assert not self.running, "broker already running"
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: port_open(self.port) or self.process.poll() is not None,  # type: ignore[union-attr]
                timeout=timeout,
            )
        except AssertionError:
            self.kill()
            raise
        if self.process.poll() is not None:
            raise RuntimeError(f"mosquitto exited at start:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM): Mosquitto saves its database before exiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout)
        self.process = None

    def kill(self) -> None:
        """Crash (SIGKILL): whatever was not autosaved is lost."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
