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

from . import db, ingest
from .accounts import accounts_for
from .config import Settings
from .events import EventService
from .mqtt import MqttClient, MqttError
from .publisher import BrokerConnection, Session

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


async def retire_member(settings: Settings, client_id: str, quiet: float = 1.0) -> int:
    """Republish what ``client_id``'s session holds, then end it; the messages handled."""
    engine = db.make_engine(settings.database_url)
    accounts = accounts_for(settings, engine)
    # The session is resumed with its subscription: its queued messages arrive by
    # themselves after the CONNACK.
    connection = BrokerConnection(
        settings,
        client_id,
        session=Session.PERSISTENT,
        consumer=lambda acks: ingest.Ingest(service, acks),
    )
    service = EventService(accounts, connection, settings.max_data_bytes)
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
