"""The MQTT roles of ``mqtt/acl`` on a RabbitMQ cluster: users, permissions, topic rules.

RabbitMQ's MQTT plugin publishes to the ``amq.topic`` exchange with the topic as routing
key, ``/`` made ``.`` (``track/1`` is ``track.1``), and keeps each session in a queue
``mqtt-subscription-<clientId>qos<n>``. So a role is:

- vhost permissions: every login may declare, bind and consume its session queues; only
  logins that publish may write to ``amq.topic``;
- topic permissions on ``amq.topic``: regular expressions over routing keys, write (publish)
  and read (subscribe: the binding key, ``track.#`` for ``track/#``).

    tracker   reads ingest/#, track/# (the archive), tracker/status/#; publishes track/#,
              tracker/status/#
    reader    reads track/#, tracker/status/#
    <account> reads track/<account>; publishes ingest/<account>

(``users.ROLES`` and ``users.rights_of`` are these rules as data.)

An account's rules are written out for its login, escaped: RabbitMQ's ``{username}``
expansion inserts the name unescaped into the regular expression, and an account id may
contain ``.`` (a regex wildcard), so ``^track\\.{username}$`` would let account ``1.x`` read
account ``1ax``'s events. Logins are applied with one
``rabbitmqctl import_definitions`` (password hashes, never a password on a command line).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from tracker_api.ops.cluster import ClusterError, Layout, Node, cli_json, ctl, on_any_node
from tracker_api.ops.login_options import CONTEXT, login_name, login_options, login_password
from tracker_api.service.validation import check_account_id
from tracker_contract.ids import SESSION_SEPARATOR
from tracker_contract.roles import ROLES, describe_role, rights_of

VHOST = "/"
EXCHANGE = "amq.topic"
HASHING = "rabbit_password_hashing_sha256"
NOTHING = "^$"  # matches no routing key: an MQTT topic is never empty
T = TypeVar("T")


def routing_key(topic: str) -> str:
    """The routing key RabbitMQ 3.10's MQTT plugin uses for an MQTT topic.

    Only ``/`` changes: a ``.`` inside a level (account ``1.x``) becomes a level separator
    on the way back, so such an account's events reach ``track/#`` as ``track/1/x`` and not
    ``track/+`` (docs/scaling.md).
    """
    return topic.replace("/", ".")


def topic_regex(filters: tuple[str, ...]) -> str:
    """One regular expression over routing keys matching the MQTT topic filters given.

    ``a/#`` becomes ``^a\\.`` (``a/`` and anything below it: the binding keys ``a.#`` and
    ``a.*`` of a subscriber included); a filter without wildcards matches only itself.
    """
    if not filters:
        return NOTHING
    parts = []
    for topic in filters:
        if topic.endswith("/#"):
            parts.append(re.escape(routing_key(topic[:-1])))
        else:
            parts.append(re.escape(routing_key(topic)) + "$")
    return "^(" + "|".join(parts) + ")" if len(parts) > 1 else "^" + parts[0]


def session_queues(username: str) -> str:
    """The queues of the login's own sessions: RabbitMQ keeps a session of client id ``c``
    in ``mqtt-subscription-<c>qos1`` (and ``qos0``), and a login's client ids are
    ``<login>`` or ``<login>:...`` (ids.client_id_allowed). Declaring (resuming), deleting
    (a clean start), binding and consuming another login's queue is refused, so no login
    can read or empty a session that is not its own."""
    own = re.escape(username) + "(" + re.escape(SESSION_SEPARATOR) + ".*)?"
    return rf"^mqtt-subscription-{own}qos[01]$"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + pw))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(logins: Mapping[str, str]) -> dict[str, Any]:
    """RabbitMQ definitions for logins (name -> password): users, permissions, topic rules."""
    users, permissions, topic_permissions = [], [], []
    for username, password in logins.items():
        publish, subscribe = rights_of(username)
        users.append(
            {
                "name": username,
                "password_hash": password_hash(password),
                "hashing_algorithm": HASHING,
                "tags": [],
            }
        )
        own = session_queues(username)
        with_exchange = rf"^({re.escape(EXCHANGE)}|{own[1:-1]})$"
        permissions.append(
            {
                "user": username,
                "vhost": VHOST,
                "configure": own,
                # Publishing is writing to amq.topic; binding a session queue is writing to
                # it (and reading amq.topic).
                "write": with_exchange if publish else own,
                "read": with_exchange,
            }
        )
        topic_permissions.append(
            {
                "user": username,
                "vhost": VHOST,
                "exchange": EXCHANGE,
                "write": topic_regex(publish),
                "read": topic_regex(subscribe),
            }
        )
    return {"users": users, "permissions": permissions, "topic_permissions": topic_permissions}


def check_login_name(username: str) -> None:
    """A role name, or a valid account id; InvalidRequest otherwise."""
    if username not in ROLES:
        check_account_id(username)


def apply_logins(layout: Layout, node: Node, logins: Mapping[str, str]) -> None:
    """Add the logins (or change their passwords and rules) on the cluster, at once."""
    for username in logins:
        check_login_name(username)
    fd, path = tempfile.mkstemp(prefix=".logins-", suffix=".json", dir=layout.base)
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600, hashes only
            json.dump(definitions(logins), handle)
        ctl(layout, node, "import_definitions", path)
    finally:
        os.unlink(path)


def remove_login(layout: Layout, node: Node, username: str) -> bool:
    """Delete a login; False when there was none."""
    try:
        ctl(layout, node, "delete_user", username)
    except ClusterError as error:
        if "does not exist" in str(error):
            return False
        raise
    return True


def list_logins(layout: Layout, node: Node) -> list[str]:
    output = ctl(layout, node, "list_users", "--formatter", "json", "-q")
    return sorted(str(row["user"]) for row in cli_json(output, list))


def provision(layout: Layout, node: Node, logins: Mapping[str, str]) -> None:
    """The roles' logins, and no other way in: the first boot's default user goes."""
    apply_logins(layout, node, logins)
    remove_login(layout, node, "guest")


# --- `tracker-api cluster-users` ---------------------------------------------------------


CLUSTER_DIR = click.option(
    "--cluster-dir",
    type=click.Path(file_okay=False, path_type=str),
    default="var/cluster",
    envvar="TRACKER_CLUSTER_DIR",
    show_default=True,
    show_envvar=True,
    help="Base directory of the cluster (`make cluster` uses var/cluster).",
)
NODE = click.option(
    "--node",
    help="Node to run the change on (number, rabbit-N or rabbit-N@localhost); it reaches "
    "the whole cluster. Default: each node in turn until one answers.",
)


def on_cluster(
    cluster_dir: str, node: str | None, action: Callable[[Layout, Node], T]
) -> tuple[Node, T]:
    """``action`` on the node asked for, or on the first that answers; a ClickException
    saying why not."""
    try:
        layout = Layout.load(Path(cluster_dir))
        if node is not None:
            where = layout.node(node)
            return where, action(layout, where)
        return on_any_node(layout, lambda each: action(layout, each))
    except ClusterError as error:
        raise click.ClickException(str(error)) from None


@click.group("cluster-users", context_settings=CONTEXT)
def cluster_users() -> None:
    """Manage MQTT logins on the RabbitMQ cluster of `make cluster` (roles as mqtt/acl).

    \b
    tracker-api cluster-users add 42 --generate     # account 42's login
    tracker-api cluster-users add --role reader
    """


@cluster_users.command("add")
@login_options
@CLUSTER_DIR
@NODE
def add(
    username: str | None,
    cluster_dir: str,
    node: str | None,
    role: str | None,
    password: str | None,
    generate: bool,
) -> None:
    """Add a login or change its password and rules."""
    username = login_name(username, role)
    password = login_password(password, generate)
    where, _ = on_cluster(
        cluster_dir, node, lambda layout, at: apply_logins(layout, at, {username: password})
    )
    click.echo(f"set {username} ({describe_role(username)}) on the cluster of {where.name}")
    if generate:
        click.echo(f"password: {password}")


@cluster_users.command("remove")
@click.argument("username")
@CLUSTER_DIR
@NODE
def remove(username: str, cluster_dir: str, node: str | None) -> None:
    """Remove a login."""
    _, removed = on_cluster(
        cluster_dir, node, lambda layout, at: remove_login(layout, at, username)
    )
    if not removed:
        raise click.ClickException(f"no user {username!r} on the cluster")
    click.echo(f"removed {username}")


@cluster_users.command("list")
@CLUSTER_DIR
@NODE
def list_command(cluster_dir: str, node: str | None) -> None:
    """List logins and what each may do."""
    _, names = on_cluster(cluster_dir, node, list_logins)
    for username in names:
        click.echo(f"{username:<20} {describe_role(username)}")
