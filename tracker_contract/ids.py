"""The syntax of account ids: the one definition the API, ingest, the seed, broker logins
and ``mqtt-tail --account`` share. Kept free of heavy imports so the CLI can use it.

An account id is a topic level (``track/<accountId>``), so it can never contain ``/``,
``+`` or ``#`` and can never inject topic levels or wildcards.
"""

from __future__ import annotations

import re

from tracker_contract.roles import ROLES

ACCOUNT_ID_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
ACCOUNT_ID_PATTERN = f"^{ACCOUNT_ID_RULE}$"
"""As OpenAPI and JSON Schema write it."""
# \Z, not $: `$` also matches before a trailing newline, and `\Z` makes `.match` as strict
# as `.fullmatch`, whichever a caller uses.
ACCOUNT_ID = re.compile(rf"(?:{ACCOUNT_ID_RULE})\Z")
ACCOUNT_ID_HELP = "1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit"

RESERVED_SEGMENTS = frozenset(
    {
        "admin",
        "docs",
        "events",
        "favicon.ico",
        "healthz",
        "metrics",
        "openapi.json",
        "readyz",
        "redoc",
    }
)
"""First path segments of the API's fixed endpoints, never account ids: ``GET /<id>``
must not shadow them. The app checks at build that every fixed route's first segment is
here, so an endpoint added without its name fails at start and in every test."""


def account_id_problem(account_id: str) -> str | None:
    """Why ``account_id`` cannot be an account id (one message for the API, ingest, the
    seed and the login tools alike), or None when it can."""
    if ACCOUNT_ID.match(account_id) is None or account_id in RESERVED_SEGMENTS:
        return f"Invalid account id: {ACCOUNT_ID_HELP}"
    if account_id in ROLES:
        # A login's name is its account id (mqtt/acl patterns): an account named after a
        # role would share that role's login, and the role's rights.
        return f"Invalid account id: {account_id!r} is the name of a broker role"
    return None


CLIENT_ID_RULE = "[A-Za-z0-9_.:-]{1,64}"
CLIENT_ID_PATTERN = f"^{CLIENT_ID_RULE}$"
CLIENT_ID = re.compile(rf"(?:{CLIENT_ID_RULE})\Z")
"""The client ids the project itself makes or accepts: safe in file names and logs."""

SESSION_SEPARATOR = ":"
"""Between a login and the rest of its client ids. Never part of a login (account ids and
role names have no ``:``), so one login's ids can never be another's: with ``-`` login
``1`` could claim ``1-x``, the id of login ``1-x``."""

CLIENT_ID_OWNERSHIP = "a login's client ids are <login> or start with <login>:"


def client_id_allowed(login: str | None, client_id: str) -> bool:
    """Whether ``login`` may connect as ``client_id``: the rule every broker we configure
    enforces at CONNECT (mqtt/plugin/session_owner.c on Mosquitto, the session queues'
    permissions on RabbitMQ), so no login can take over another login's session. A
    connection without a login (only on an anonymous broker) may use any id."""
    if not login:
        return True
    return client_id == login or client_id.startswith(login + SESSION_SEPARATOR)


def client_id_for(login: str | None, name: str) -> str:
    """``<login>:<name>``: the id of one of a login's connections (``name`` alone when the
    broker is anonymous)."""
    return f"{login}{SESSION_SEPARATOR}{name}" if login else name
