"""Mosquitto password files, managed without hand edits or the mosquitto_passwd binary.

Entries use Mosquitto 2's format: ``user:$7$<iterations>$<salt>$<hash>`` with
PBKDF2-HMAC-SHA512 and base64 fields. Which user may do what is decided by the ACL file
(``mqtt/acl``, as data in ``tracker_contract.roles``).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tracker_contract.ids import ACCOUNT_ID, ACCOUNT_ID_HELP

ITERATIONS = 101  # mosquitto_passwd's own default
SALT_BYTES = 12
# What an example file puts where a secret goes ("change-me", "CHANGEME-postgres"): such a
# value passes every "is it set" check, so whatever starts with it is refused as unset.
PLACEHOLDER_PREFIXES = ("change-me", "changeme")


def is_placeholder(password: str) -> bool:
    """True for a password left at an example's placeholder (any case)."""
    return password.lower().startswith(PLACEHOLDER_PREFIXES)


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    encode = base64.b64encode
    return f"$7${iterations}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    expected = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return hmac.compare_digest(expected, base64.b64decode(digest))


class PasswordFile:
    """Load, change and atomically save a Mosquitto password file.

    Lines that are not entries (comments, blank lines) and the order of entries are kept;
    new users are appended. A saved file keeps the mode and owner it had (0600 when new).
    Use ``PasswordFile.edit(path)`` to change a file that others may change at the same
    time: it holds a lock from load to save.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, str] = {}
        # The file as read: a user name where an entry was, the text of any other line.
        self._layout: list[tuple[str | None, str]] = []
        self._loaded = path.read_text() if path.exists() else None
        if self._loaded is not None:
            for line in self._loaded.splitlines():
                if line.strip() and not line.startswith("#"):
                    user, _, hashed = line.partition(":")
                    self.entries[user] = hashed
                    self._layout.append((user, ""))
                else:
                    self._layout.append((None, line))

    @classmethod
    @contextmanager
    def edit(cls, path: Path) -> Iterator[PasswordFile]:
        """Load under an exclusive lock, let the caller change it, save, unlock.

        The lock is on a sidecar file (``<name>.lock``): the password file itself is
        replaced on save, and a lock on a replaced inode would not exclude anyone.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            passwords = cls(path)
            yield passwords
            if passwords.render() != (passwords._loaded or ""):
                passwords.save()
        finally:
            os.close(lock)  # releases the lock

    def set(self, username: str, password: str) -> bool:
        """Add or change a user; True when the user is new."""
        # A role's name or an account id: the roles' names follow the same rule.
        if not ACCOUNT_ID.match(username):
            raise ValueError(f"invalid user name {username!r}: {ACCOUNT_ID_HELP}")
        if not password:
            raise ValueError("the password must not be empty")
        created = username not in self.entries
        self.entries[username] = hash_password(password)
        return created

    def remove(self, username: str) -> bool:
        return self.entries.pop(username, None) is not None

    def check(self, username: str, password: str) -> bool:
        hashed = self.entries.get(username)
        return hashed is not None and verify_password(password, hashed)

    def render(self) -> str:
        lines = []
        for user, text in self._layout:
            if user is None:
                lines.append(text)
            elif user in self.entries:
                lines.append(f"{user}:{self.entries[user]}")
        placed = {user for user, _ in self._layout}
        lines += [f"{user}:{hashed}" for user, hashed in self.entries.items() if user not in placed]
        return "".join(f"{line}\n" for line in lines)

    def save(self) -> None:
        """Write a unique temporary file beside the target, then rename it over the target:
        readers (the broker on SIGHUP) see the old file or the new one, never a mix."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                if current is not None:
                    os.fchmod(handle.fileno(), current.st_mode & 0o7777)
                    if (current.st_uid, current.st_gid) != (os.getuid(), os.getgid()):
                        # The broker may read the file as its own user or group.
                        os.fchown(handle.fileno(), current.st_uid, current.st_gid)
                handle.write(self.render())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise
