"""Mosquitto password files, managed without hand edits or the mosquitto_passwd binary.

Entries use Mosquitto 2's format: ``user:$7$<iterations>$<salt>$<hash>`` with
PBKDF2-HMAC-SHA512 and base64 fields. Which user may do what is decided by the ACL file
(``mqtt/acl``): ``tracker`` and ``reader`` are roles by name, and any other user name is an
account id (reads ``track/<id>``, publishes ``ingest/<id>``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

ITERATIONS = 101  # mosquitto_passwd's own default
SALT_BYTES = 12
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ROLES = {"tracker": "publishes track/#, reads ingest/#", "reader": "reads track/#"}


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


def describe_role(username: str) -> str:
    return ROLES.get(
        username, f"account {username}: reads track/{username}, publishes ingest/{username}"
    )


class PasswordFile:
    """Load, change and atomically save a Mosquitto password file (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, str] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    user, _, hashed = line.partition(":")
                    self.entries[user] = hashed

    def set(self, username: str, password: str) -> bool:
        """Add or change a user; True when the user is new."""
        if not USERNAME.fullmatch(username):
            raise ValueError(f"invalid user name {username!r}: use A-Z a-z 0-9 _ . -")
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

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(f"{user}:{hashed}\n" for user, hashed in sorted(self.entries.items()))
        os.replace(temporary, self.path)
