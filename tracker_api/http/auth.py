"""HTTP Basic logins for event requests and the history, checked against the broker's
password file.

A device has one credential for MQTT and HTTP: the login named after its account (or
``tracker``, the service's own) may send that account's events. Anything else is refused:
no login is 401 ``LoginRequired``, an unknown user or a wrong password 401 ``LoginRefused``
(one answer for both), a header that is not HTTP Basic 401 ``MalformedLogin``, another
account's login 403.

Checking a password costs a PBKDF2 key derivation (``passwords.verify_password``), far
more than the rest of an event request. So a login that verified is cached for ``ttl``
seconds under its ``Authorization`` header, and only then: a wrong header is never kept,
so junk headers cost no memory. Only the canonical spelling of a header is cached
(``Basic`` and the base64 of ``user:password``, as every client writes it), so one login
is one entry, whatever variants its holder sends; the entries go when their ttl ends
(swept once per ``STAT_INTERVAL``) and all at once as soon as the file changes (its
inode, size or mtime, looked at no more than once per ``STAT_INTERVAL``): a removed login
or changed password stops working within a second.

Nothing cached means a guesser pays nothing for a failure, so failures are throttled
instead (``throttle.LoginThrottle``: per login name and per client address, 429 with
``Retry-After``), before the password is looked at. An unknown user is checked against a
dummy hash of the file's own cost, so it is answered in the time a known one is.

Logins are checked on the event loop and on the history's threads at once, so the shared
state (the file's entries, the cache, the throttle) is read and changed under one lock;
the key derivation, the only slow part, runs outside it, and its result is cached only if
the file was not read again meanwhile. A check counts as a failure from its start and is
given back if the password was right, so however many threads check at once, no more
guesses pass the throttle than its budget.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

from tracker_api.errors import LoginForbidden, LoginRefused, LoginRequired, MalformedLogin
from tracker_api.http.throttle import LoginThrottle
from tracker_api.passwords import ITERATIONS, PasswordFile, hash_password, verify_password

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


def basic_header(user: str, password: str) -> str:
    """The canonical ``Authorization`` value of a login."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def usual_iterations(entries: dict[str, str]) -> int:
    """The PBKDF2 iteration count most entries of a password file use."""
    counts: Counter[int] = Counter()
    for hashed in entries.values():
        fields = hashed.split("$")
        if len(fields) == 5 and fields[2].isdigit():
            counts[int(fields[2])] += 1
    return counts.most_common(1)[0][0] if counts else ITERATIONS


class HttpAuth:
    def __init__(
        self,
        password_file: Path,
        ttl: float = 5.0,
        max_entries: int = 10_000,
        throttle: LoginThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.password_file = password_file
        self.ttl = ttl
        self.max_entries = max_entries
        self.throttle = throttle
        self._clock = clock
        self._entries: dict[str, str] = {}
        self._signature: tuple[int, int, int] | None = None
        self._next_stat = 0.0
        # Verified Authorization header -> (expiry, its login), in expiry order: every
        # entry lives ``ttl`` from its insertion, so the oldest is always first.
        self._verified: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._dummy = hash_password(secrets.token_urlsafe(16))
        self._lock = threading.Lock()
        self._generation = 0  # how many times the file was read
        self.derivations = 0  # key derivations done: what the cache saves

    @property
    def cached(self) -> int:
        """How many verified logins are held."""
        return len(self._verified)

    def _refresh(self, now: float) -> None:
        if now < self._next_stat:
            return
        self._next_stat = now + STAT_INTERVAL
        self._expire(now)
        try:
            stat = os.stat(self.password_file)
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            signature = None
        if signature != self._signature or signature is None:
            self._signature = signature
            self._generation += 1
            self._verified.clear()
            try:
                self._entries = PasswordFile(self.password_file).entries
            except OSError:
                self._entries = {}  # unreadable: nobody can log in, until it is readable
            iterations = usual_iterations(self._entries)
            if f"${iterations}$" not in self._dummy:
                self._dummy = hash_password(secrets.token_urlsafe(16), iterations=iterations)

    def _expire(self, now: float) -> None:
        verified = self._verified
        while verified and next(iter(verified.values()))[0] <= now:
            verified.popitem(last=False)

    def login(self, authorization: str | None, address: str = "") -> str:
        """The login an ``Authorization`` header proves, sent from the client ``address``;
        a ``LoginRequired`` (401) or ``LoginThrottled`` (429) otherwise."""
        if authorization is None:
            raise LoginRequired()
        with self._lock:
            now = self._clock()
            self._refresh(now)
            cached = self._verified.get(authorization)
            if cached is not None and cached[0] > now:
                return cached[1]
            credentials = decode_basic(authorization)
            if credentials is None:
                raise MalformedLogin()  # no key derivation: nothing to throttle
            user, password = credentials
            if self.throttle is not None:
                self.throttle.check(user, address, now)
                self.throttle.failed(user, address, now)  # until it proves right
            hashed = self._entries.get(user)
            dummy, generation = self._dummy, self._generation
            self.derivations += 1
        # An unknown user costs the same derivation as a known one: timing tells nothing.
        if verify_password(password, dummy if hashed is None else hashed) and hashed is not None:
            with self._lock:
                if self.throttle is not None:
                    self.throttle.succeeded(user, address, now)
                if generation == self._generation:
                    self._remember(authorization, user, password, now)
            return user
        raise LoginRefused()

    def _remember(self, authorization: str, user: str, password: str, now: float) -> None:
        if self.ttl <= 0 or authorization != basic_header(user, password):
            return  # another spelling of the login: verified each time, never stored
        self._verified.pop(authorization, None)  # expired, not yet swept
        self._verified[authorization] = (now + self.ttl, user)
        while len(self._verified) > self.max_entries:
            self._verified.popitem(last=False)

    def check(self, account_id: str, authorization: str | None, address: str = "") -> None:
        """Allow the account's own login and the service's; refuse everything else."""
        user = self.login(authorization, address)
        if user != account_id and user != SERVICE_LOGIN:
            raise LoginForbidden()
