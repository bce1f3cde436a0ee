"""HTTP Basic logins for event requests, checked against the broker's password file.

A device has one credential for MQTT and HTTP: the login named after its account (or
``tracker``, the service's own) may send that account's events. Anything else is refused:
no or a wrong login is 401 with ``WWW-Authenticate``, another account's login 403.

Checking a password costs a PBKDF2 key derivation (``users.verify_password``), far more
than the rest of an event request. So every answer for an ``Authorization`` header is
cached for ``ttl`` seconds (at most ``max_entries`` headers, oldest dropped first), and the
whole cache is dropped as soon as the file changes (its inode, size or mtime, looked at no
more than once per ``STAT_INTERVAL``): a removed login or changed password stops working
within a second, an unchanged one costs a dict lookup.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from tracker_api.errors import LoginForbidden, LoginRequired
from tracker_api.passwords import PasswordFile, verify_password

SERVICE_LOGIN = "tracker"
STAT_INTERVAL = 1.0


def decode_basic(authorization: str) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic …`` value, None when malformed."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class HttpAuth:
    def __init__(
        self,
        password_file: Path,
        ttl: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.password_file = password_file
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, str] = {}
        self._signature: tuple[int, int, int] | None = None
        self._next_stat = 0.0
        # Authorization header -> (expiry, the login it proves, or None for a wrong one).
        self._verified: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self.derivations = 0  # key derivations done: what the cache saves

    def _refresh(self, now: float) -> None:
        if now < self._next_stat:
            return
        self._next_stat = now + STAT_INTERVAL
        try:
            stat = os.stat(self.password_file)
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            signature = None
        if signature != self._signature or signature is None:
            self._signature = signature
            self._verified.clear()
            try:
                self._entries = PasswordFile(self.password_file).entries
            except OSError:
                self._entries = {}  # unreadable: nobody can log in, until it is readable

    def login(self, authorization: str | None) -> str:
        """The login an ``Authorization`` header proves; ``LoginRequired`` otherwise."""
        if authorization is None:
            raise LoginRequired()
        now = self._clock()
        self._refresh(now)
        cached = self._verified.get(authorization)
        if cached is not None and cached[0] > now:
            user = cached[1]
        else:
            user = self._verify(authorization)
            self._verified.pop(authorization, None)
            self._verified[authorization] = (now + self.ttl, user)
            while len(self._verified) > self.max_entries:
                self._verified.popitem(last=False)
        if user is None:
            raise LoginRequired()
        return user

    def _verify(self, authorization: str) -> str | None:
        credentials = decode_basic(authorization)
        if credentials is None:
            return None
        user, password = credentials
        hashed = self._entries.get(user)
        if hashed is None:
            return None
        self.derivations += 1
        return user if verify_password(password, hashed) else None

    def check(self, account_id: str, authorization: str | None) -> None:
        """Allow the account's own login and the service's; refuse everything else."""
        user = self.login(authorization)
        if user != account_id and user != SERVICE_LOGIN:
            raise LoginForbidden()
