"""The MQTT topics of the wire contract, and how a topic names its account. Standard
library only: the tracker and ``mqtt-tail`` share it.

``track/<accountId>`` carries events, ``ingest/<accountId>`` device messages,
``tracker/status/<clientId>`` each tracker connection's online/offline status, and
``tracker/status/<clientId>/mark`` the archive's marks to itself (its watermark).

An account id may contain ``.``, and RabbitMQ's MQTT plugin maps ``/`` to ``.`` in routing
keys and back: an event published on ``track/a.b`` reaches subscribers there as
``track/a/b``, and only subscriptions with ``#`` see it (``track/+`` binds ``track.*``, one
word). So readers of every account subscribe to ``track/#``, and a topic's account is what
follows the prefix with each ``/`` read as ``.``: the same account on either broker. That
cannot confuse two accounts, because an account id never contains ``/`` and the brokers
let only an account's own login publish on its ``ingest/`` topic.
"""

from __future__ import annotations

TRACK = "track/"
INGEST = "ingest/"
STATUS = "tracker/status/"

EVERY_ACCOUNT = TRACK + "#"
EVERY_INGEST = INGEST + "#"
INGEST_GROUP = "$share/tracker/" + EVERY_INGEST


def track(account_id: str) -> str:
    return TRACK + account_id


def ingest(account_id: str) -> str:
    return INGEST + account_id


def status(client_id: str) -> str:
    return STATUS + client_id


def archive_mark(client_id: str) -> str:
    """Where the archive consuming as ``client_id`` sends itself marks: behind every
    event acknowledged before them, in its session's order (docs/adr/0018)."""
    return STATUS + client_id + "/mark"


def account_of(topic: str, prefix: str = TRACK) -> str | None:
    """The account a ``prefix`` topic names (``track/a/b`` on RabbitMQ is account ``a.b``),
    or None for a topic outside ``prefix``. Callers check the id's syntax."""
    if not topic.startswith(prefix):
        return None
    return topic[len(prefix) :].replace("/", ".")
