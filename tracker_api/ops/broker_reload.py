"""Make the Mosquitto that uses a password file reload it, or say exactly what to run.

`make run` keeps the broker's files side by side: ``passwd``, ``mosquitto.conf`` (which
names that ``passwd``) and ``mosquitto.pid``. A pid alone may have been reused by another
process since, so a broker counts as ours only while its command line still runs that
configuration file.

Any other Mosquitto is found by what it runs: a ``mosquitto -c CONF`` whose configuration
(or a file of its ``include_dir``) names the password file. Only those brokers are ever
signalled, never every Mosquitto on the machine; one that is not ours to signal (the
system's service) is named with the command that reloads it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

PIDFILE = "mosquitto.pid"
CONFIG = "mosquitto.conf"
SYSTEM_RELOAD = "sudo systemctl reload mosquitto"
COMPOSE_RELOAD = "docker compose kill -s HUP mosquitto"


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


# --- any other Mosquitto ------------------------------------------------------------------


def config_of(pid: int, argv: list[str]) -> Path | None:
    """The configuration file a ``mosquitto`` process runs (``-c``), made absolute
    against its working directory; None without one (no password file then)."""
    pairs = zip(argv, argv[1:], strict=False)
    value = next((value for flag, value in pairs if flag in ("-c", "--config-file")), None)
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute():
        try:
            path = Path(os.readlink(f"/proc/{pid}/cwd")) / path
        except OSError:  # another user's process: its working directory is hidden
            return None
    return path


def password_files(config: Path, base: Path) -> set[Path]:
    """The ``password_file`` entries of a Mosquitto configuration and of the ``.conf``
    files of its ``include_dir`` (relative paths read against ``base``)."""
    found: set[Path] = set()
    for path in [config, *included(config)]:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.strip().partition(" ")
            if key == "password_file" and value.strip():
                found.add((base / value.strip()).resolve())
    return found


def included(config: Path) -> list[Path]:
    try:
        lines = config.read_text(errors="replace").splitlines()
    except OSError:
        return []
    files: list[Path] = []
    for line in lines:
        key, _, value = line.strip().partition(" ")
        if key == "include_dir" and value.strip():
            files += sorted((config.parent / value.strip()).glob("*.conf"))
    return files


def brokers_using(password_file: Path) -> list[int]:
    """Every live Mosquitto whose configuration names ``password_file`` (Linux /proc)."""
    wanted = password_file.resolve()
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        argv = command_line(pid)
        if not argv or Path(argv[0]).name != "mosquitto":
            continue
        config = config_of(pid, argv)
        if config is not None and wanted in password_files(config, config.parent):
            pids.append(pid)
    return sorted(pids)


def system_service(pid: int) -> bool:
    """Whether ``pid`` is the system's ``mosquitto.service`` (systemd)."""
    try:
        return "/mosquitto.service" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


@dataclass
class Applied:
    """What ``apply_password_file`` did: the brokers that reloaded, and what to run
    (one command per line) for those it could not signal, or for none found."""

    reloaded: list[int] = field(default_factory=list)
    to_run: list[str] = field(default_factory=list)


def apply_password_file(password_file: Path) -> Applied:
    """Have the brokers using ``password_file`` reload it: `make run`'s, else any
    Mosquitto configured with it; the exact command for each one we may not signal."""
    ours = reload_broker(password_file)
    if ours is not None:
        return Applied(reloaded=[ours])
    applied = Applied()
    for pid in brokers_using(password_file):
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            continue
        except PermissionError:
            applied.to_run.append(SYSTEM_RELOAD if system_service(pid) else f"sudo kill -HUP {pid}")
        else:
            applied.reloaded.append(pid)
    return applied
