"""Retiring a member of the ingest group: its held device messages become events.

An offline member of ``$share/tracker/ingest/+`` keeps its persistent session, and the
broker keeps queueing its share of device messages there (until the session expires).
``retire_member`` takes that client id over, republishes what the session holds through
the normal ingest path, leaves the group, and ends the session.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tracker_api.config import Settings
from tracker_api.consumers import ingest
from tracker_api.mqtt import Message, MqttClient, MqttError
from tracker_api.service.accounts import accounts_for
from tracker_api.service.broker import STATUS_TOPIC, BrokerConnection, Session
from tracker_api.service.events import EventService
from tracker_api.storage import db
from tracker_contract.ids import client_id_for

logger = logging.getLogger(__name__)


class RetireFailed(Exception):
    """The member could not be retired; the message says why."""


async def _settle(connection: BrokerConnection, quiet: float) -> None:
    """Return once nothing arrived and nothing was in progress for ``quiet`` seconds."""
    seen, since = connection.received, time.monotonic()
    while time.monotonic() - since < quiet:
        await asyncio.sleep(0.05)
        if connection.received != seen or connection.busy:
            seen, since = connection.received, time.monotonic()
        if not connection.connected:
            raise RetireFailed(f"lost the broker connection: {connection.broker_status}")


def check_member_id(settings: Settings, client_id: str) -> None:
    """Only a worker's id (``<prefix>-<host>-<slot>``) names a member of the ingest group:
    retiring the archive's or the ingest leader's session would hand its queued events to
    ingest as device messages and end it, losing them for good."""
    prefix = settings.worker_client_id_prefix + "-"
    if client_id in (settings.archive_session, settings.ingest_session) or not (
        client_id.startswith(prefix) and len(client_id) > len(prefix)
    ):
        raise RetireFailed(
            f"{client_id} is not an ingest group member: members are {prefix}<host>-<slot>, "
            f"as tracker/status/# lists them"
        )


async def member_status(settings: Settings, client_id: str, wait: float = 2.0) -> str | None:
    """What the member last said on ``tracker/status/<id>`` (``online``/``offline``, kept
    retained by its will), or None when it never said anything."""
    said: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_message(message: Message) -> None:
        if not said.done():
            said.set_result(message.payload.decode(errors="replace"))

    topic = STATUS_TOPIC.format(client_id=client_id)
    observer = client_id_for(settings.client_id_owner, "retire-check")
    async with MqttClient(
        settings.broker, observer, subscriptions=[(topic, 0)], on_message=on_message
    ) as client:
        if not await client.wait_connected(timeout=10):
            raise RetireFailed(f"cannot reach the broker: {client.status}")
        try:
            return await asyncio.wait_for(said, wait)
        except TimeoutError:
            return None


async def retire_member(settings: Settings, client_id: str, quiet: float = 1.0) -> int:
    """Republish what ``client_id``'s session holds, then end it; the messages handled.
    Refused (RetireFailed) for an id that is no member's, or a member that is online."""
    check_member_id(settings, client_id)
    if await member_status(settings, client_id) == "online":
        raise RetireFailed(
            f"{client_id} is online: stop its tracker first (retiring a connected member "
            "would take its session from under it)"
        )
    engine = db.make_engine(settings.database_url)
    accounts = accounts_for(settings, engine)
    # The session is resumed with its subscription: its queued messages arrive by
    # themselves after the CONNACK.
    connection = BrokerConnection(settings, client_id, session=Session.PERSISTENT)
    service = EventService(accounts, connection, settings.max_data_bytes)
    connection.consume_with(lambda acks: ingest.Ingest(service, acks))
    try:
        async with connection:
            if not await connection.wait_connected(timeout=10):
                raise RetireFailed(f"cannot connect as {client_id}: {connection.broker_status}")
            await _settle(connection, quiet)
            # Leave the group, then take what was already on its way to us.
            await connection.unsubscribe([ingest.SUBSCRIPTION[0]], timeout=5)
            await _settle(connection, quiet)
            handled = connection.received
    except (MqttError, TimeoutError) as error:
        raise RetireFailed(f"retiring {client_id} failed: {error}") from None
    finally:
        engine.dispose()
    # A clean session on connect discards the old one (and its subscription) for good.
    async with MqttClient(settings.broker, client_id, clean_session=True) as ender:
        if not await ender.wait_connected(timeout=10):
            raise RetireFailed(f"cannot end the session of {client_id}: {ender.status}")
    logger.info("retired %s: %d held message(s) handled", client_id, handled)
    return handled
