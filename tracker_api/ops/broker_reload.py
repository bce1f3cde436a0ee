"""Find the Mosquitto that `make run` started for a password file, and make it reload.

`make run` keeps the broker's files side by side: ``passwd``, ``mosquitto.conf`` (which
names that ``passwd``) and ``mosquitto.pid``. A pid alone may have been reused by another
process since, so a broker counts as ours only while its command line still runs that
configuration file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

PIDFILE = "mosquitto.pid"
CONFIG = "mosquitto.conf"
RELOAD_HINT = (
    "kill -HUP $(pidof mosquitto)   (under docker compose: docker compose kill -s HUP mosquitto)"
)


def pidfile_for(password_file: Path) -> Path:
    return password_file.parent / PIDFILE


def config_for(password_file: Path) -> Path:
    return password_file.parent / CONFIG


def command_line(pid: int) -> list[str] | None:
    """A process's arguments, or None when it is gone (or not ours to see)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part] or None


def runs_config(argv: list[str], config: Path) -> bool:
    """Whether ``argv`` is a mosquitto started with ``-c config``."""
    if not argv or Path(argv[0]).name != "mosquitto":
        return False
    pairs = zip(argv, argv[1:], strict=False)
    return any(flag == "-c" and Path(value).resolve() == config.resolve() for flag, value in pairs)


def running_broker(password_file: Path) -> int | None:
    """The pid of the live broker `make run` started with ``password_file``, if any."""
    try:
        pid = int(pidfile_for(password_file).read_text().strip())
    except (OSError, ValueError):
        return None
    argv = command_line(pid)
    return pid if argv and runs_config(argv, config_for(password_file)) else None


def reload_broker(password_file: Path) -> int | None:
    """SIGHUP (reload passwords and ACL) to our broker; its pid, or None when none runs."""
    pid = running_broker(password_file)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    return pid
