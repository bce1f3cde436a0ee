"""MQTT client ids for worker processes: unique among live processes on a host, and the
same again after a restart.

A worker takes ``<prefix>-<host>-<slot>``, the lowest slot whose lock file it can flock.
Stability matters for ingest: the broker keeps the persistent session of a worker that
died, with the device messages it had not acknowledged, and hands them to the worker that
takes the same slot next.

The lock files live in ``<state dir>/client-slots``. The directory is created 0700 and
refused when another user owns it or others may write to it, and each file is opened with
``O_NOFOLLOW`` and never truncated: whoever can plant files there could otherwise steal
ids or make us clobber a file of theirs through a symlink.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from pathlib import Path


class StateDirError(Exception):
    """The state directory is unsafe to use; the message says why, in one line."""


def safe_directory(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing; refuse it unless it is a real directory
    owned by us that nobody else may write to."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"{path} is not a directory (a symlink?); refusing to use it")
    if info.st_uid != os.geteuid():
        raise StateDirError(
            f"{path} belongs to uid {info.st_uid}, not to us (uid {os.geteuid()}); refusing it"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(
            f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); "
            "refusing it: chmod 700 it"
        )
    return path


def try_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive ``flock`` (closing it drops the
    lock), or None while another process holds it. The file is created 0600, opened without
    following a symlink and never truncated; StateDirError when it cannot be opened."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        raise StateDirError(f"cannot open {path}: {error}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class ClientIdSlot:
    """Holds ``<prefix>-<host>-<slot>`` until ``release()`` (or the process exits)."""

    def __init__(self, prefix: str, state_dir: Path, max_slots: int = 1024) -> None:
        host = socket.gethostname().split(".")[0][:20] or "host"
        directory = safe_directory(state_dir) / "client-slots"
        safe_directory(directory)
        for slot in range(max_slots):
            fd = try_lock(directory / f"{prefix}-{host}-{slot}.lock")
            if fd is None:
                continue
            self._fd: int | None = fd
            self.client_id = f"{prefix}-{host}-{slot}"
            return
        raise StateDirError(f"no free client id slot in {directory}")  # pragma: no cover

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
