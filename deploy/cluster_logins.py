"""The compose cluster stack's logins, written from the environment by a one-shot job.

    python deploy/cluster_logins.py DIRECTORY

writes, for the logins ``tracker`` (MQTT_TRACKER_PASSWORD), ``reader``
(MQTT_READER_PASSWORD) and MQTT_EXTRA_USERS (space-separated ``user:password`` pairs, the
user an account id: the base file's mqtt-users job reads the same variables):

- ``rabbitmq-definitions.json``: users, permissions and topic permissions, which the
  RabbitMQ nodes import at boot (``load_definitions``); a node that imports definitions at
  boot creates no ``guest``;
- ``http-passwd``: the same logins in Mosquitto's password file format (PBKDF2-SHA512,
  ``tracker_api.passwords``), for the trackers' HTTP Basic check (TRACKER_PASSWORD_FILE), as
  the base file's mqtt-users job writes for its tracker.

The rules are those `make cluster` applies (``tracker_api.ops.cluster_roles``, the roles of
``mqtt/acl``). Each file is written beside its place and renamed into place, so a reader
sees the old file or the new one. Run as root, each is handed to its reader's user: the
definitions (0600) to RABBITMQ_UID (999, the official image's user), http-passwd (0400)
to the tracker image's user (uid 10001, see Dockerfile).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tracker_api.errors import InvalidRequest
from tracker_api.ops.cluster_roles import VHOST, check_login_name, definitions
from tracker_api.passwords import hash_password, is_placeholder

TRACKER_UID = 10001  # the tracker image's `tracker` user (Dockerfile)


def logins(env: Mapping[str, str]) -> dict[str, str]:
    """name -> password from the environment; ValueError names what is wrong."""
    found = {}
    for name, variable in (
        ("tracker", "MQTT_TRACKER_PASSWORD"),
        ("reader", "MQTT_READER_PASSWORD"),
    ):
        if not env.get(variable):
            raise ValueError(f"set {variable}")
        if is_placeholder(env[variable]):
            raise ValueError(f"{variable} is a placeholder (change-me...): set a real password")
        found[name] = env[variable]
    for pair in env.get("MQTT_EXTRA_USERS", "").split():
        name, _, password = pair.partition(":")
        if not password:
            raise ValueError(f"MQTT_EXTRA_USERS: {name!r} has no password (user:password)")
        if is_placeholder(password):
            raise ValueError(f"MQTT_EXTRA_USERS: {name!r} has a placeholder password")
        try:
            check_login_name(name)
        except InvalidRequest as error:
            raise ValueError(f"MQTT_EXTRA_USERS: {error.detail}") from None
        found[name] = password
    return found


def rabbitmq_definitions(passwords: Mapping[str, str]) -> dict[str, object]:
    # Imported at boot, the definitions must create the vhost the permissions refer to.
    return {"vhosts": [{"name": VHOST}], **definitions(passwords)}


def http_passwd(passwords: Mapping[str, str]) -> str:
    """A Mosquitto password file of the logins, which ``tracker_api.passwords.PasswordFile``
    (the tracker's TRACKER_PASSWORD_FILE) reads."""
    return "".join(f"{name}:{hash_password(password)}\n" for name, password in passwords.items())


def write(path: Path, text: str, owner: int, mode: int = 0o600) -> None:
    new = path.with_name(path.name + ".new")
    new.unlink(missing_ok=True)
    new.touch(mode=0o600)
    new.write_text(text)
    if os.geteuid() == 0:
        os.chown(new, owner, owner)
    new.chmod(mode)
    new.replace(path)


def main(argv: list[str], env: Mapping[str, str]) -> int:
    if len(argv) != 1:
        print("usage: cluster_logins.py DIRECTORY", file=sys.stderr)  # noqa: T201
        return 2
    try:
        passwords = logins(env)
    except ValueError as error:
        print(f"cluster-logins: {error}", file=sys.stderr)  # noqa: T201
        return 1
    directory = Path(argv[0])
    write(
        directory / "rabbitmq-definitions.json",
        json.dumps(rabbitmq_definitions(passwords)),
        int(env.get("RABBITMQ_UID", "999")),
    )
    write(directory / "http-passwd", http_passwd(passwords), TRACKER_UID, 0o400)
    print(f"cluster-logins: wrote {', '.join(sorted(passwords))} to {directory}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
