"""`make run`'s credentials file (``var/credentials.env``), beside its broker's files.

`make run` writes a random password for each of its logins twice: into the broker's
password file (``var/mqtt/passwd``) and, for people and scripts, into
``var/credentials.env`` as shell variables. ``tracker-api users add`` changes the first;
``update`` keeps the second in step, so a login changed by hand does not leave a stale
password behind for `make tail` and the examples that load the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit

FILE_NAME = "credentials.env"
TRACKER_URL = "TRACKER_MQTT_URL"
READER_USERNAME, READER_PASSWORD = "MQTT_TAIL_USERNAME", "MQTT_TAIL_PASSWORD"


def device_variable(login: str) -> str:
    """The variable holding an account login's password: ``DEVICE_1_PASSWORD``."""
    return f"DEVICE_{login}_PASSWORD"


def beside(password_file: Path) -> Path:
    """Where `make run` keeps the credentials of the broker using ``password_file``:
    ``<var>/credentials.env`` for ``<var>/mqtt/passwd``."""
    return password_file.parent.parent / FILE_NAME


def read(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


def write(path: Path, values: dict[str, str]) -> None:
    """The file, mode 0600 from the start (it holds passwords)."""
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))


def with_password(url: str, password: str) -> str:
    """``url`` (``mqtt://tracker:old@host:port``) with another password."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{parts.username}:{quote(password, safe='')}@{host}").geturl()


def update(password_file: Path, login: str, password: str) -> str | None:
    """Store ``login``'s new password in the credentials file beside ``password_file``
    when that file holds it; the variable changed, or None (no such file or login)."""
    path = beside(password_file)
    if password_file.parent.name != "mqtt" or not path.is_file():
        return None
    values = read(path)
    if login == "tracker" and TRACKER_URL in values:
        values[TRACKER_URL] = with_password(values[TRACKER_URL], password)
        variable = TRACKER_URL
    elif login == values.get(READER_USERNAME) and READER_PASSWORD in values:
        values[READER_PASSWORD] = password
        variable = READER_PASSWORD
    elif device_variable(login) in values:
        variable = device_variable(login)
        values[variable] = password
    else:
        return None
    write(path, values)
    return variable
