"""The broker roles of ``mqtt/acl`` as data: what each login may publish and read.

``tracker`` and ``reader`` are roles by name, and any other login name is an account id
(reads ``track/<id>``, publishes ``ingest/<id>``). The role names are therefore never
account ids (``ids.check_account_id``), so the two namespaces cannot overlap.
"""

from __future__ import annotations

from typing import NamedTuple


class Rights(NamedTuple):
    """The MQTT topic filters a login may publish to and read (subscribe to)."""

    publishes: tuple[str, ...]
    reads: tuple[str, ...]


# What mqtt/acl grants each role: the one copy in Python. The cluster's rules
# (tracker_api/ops/cluster_roles.py, deploy/cluster_logins.py) and every description are
# made from it.
ROLES: dict[str, Rights] = {
    "tracker": Rights(
        publishes=("track/#", "tracker/status/#"),
        reads=("ingest/#", "track/#", "tracker/status/#"),  # track/#: the archive
    ),
    "reader": Rights(publishes=(), reads=("track/#", "tracker/status/#")),
}


def rights_of(username: str) -> Rights:
    """A role's rights, or (any other name) an account's: it reads its own events and
    publishes to its own ingest topic (mqtt/acl's patterns)."""
    role = ROLES.get(username)
    if role is not None:
        return role
    return Rights(publishes=(f"ingest/{username}",), reads=(f"track/{username}",))


def describe_role(username: str) -> str:
    """What a login may do, as ``tracker-api users`` and ``cluster-users`` show it."""
    rights = rights_of(username)
    parts = [f"reads {', '.join(rights.reads)}"] if rights.reads else []
    if rights.publishes:
        parts.append(f"publishes {', '.join(rights.publishes)}")
    described = "; ".join(parts)
    return described if username in ROLES else f"account {username}: {described}"
