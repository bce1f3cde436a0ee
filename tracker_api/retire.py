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
from .accounts import AccountCache, state_from_database
from .config import Settings
from .events import EventService
from .mqtt import MqttClient, MqttError
from .publisher import MqttPublisher

logger = logging.getLogger(__name__)


class RetireFailed(Exception):
    """The member could not be retired; the message says why."""


async def _settle(client: MqttClient, consumer: ingest.Ingest, quiet: float) -> None:
    """Return once nothing arrived and nothing was in progress for ``quiet`` seconds."""
    seen, since = client.stats.received, time.monotonic()
    while time.monotonic() - since < quiet:
        await asyncio.sleep(0.05)
        if client.stats.received != seen or consumer.busy:
            seen, since = client.stats.received, time.monotonic()
        if not client.connected:
            raise RetireFailed(f"lost the broker connection: {client.status}")


async def retire_member(settings: Settings, client_id: str, quiet: float = 1.0) -> int:
    """Republish what ``client_id``'s session holds, then end it; the messages handled."""
    engine = db.make_engine(settings.database_url)
    publisher = MqttPublisher(settings, client_id=client_id, clean_session=False)
    accounts = AccountCache(
        lambda account_id: state_from_database(engine, account_id),
        ttl=settings.account_cache_ttl,
        max_entries=settings.account_cache_size,
    )
    consumer = ingest.Ingest(
        EventService(accounts, publisher, settings.max_data_bytes), publisher.client
    )
    client = publisher.client
    client.on_message = consumer.handle
    try:
        client.start()
        if not await client.wait_connected(timeout=10):
            raise RetireFailed(f"cannot connect as {client_id}: {client.status}")
        # The session's queued messages arrive on their own after CONNACK.
        await _settle(client, consumer, quiet)
        # Leave the group, then take what was already on its way to us.
        await asyncio.wait_for(client.unsubscribe([ingest.SUBSCRIPTION[0]]), 5)
        await _settle(client, consumer, quiet)
        handled = client.stats.received
    except (MqttError, TimeoutError) as error:
        raise RetireFailed(f"retiring {client_id} failed: {error}") from None
    finally:
        await publisher.stop()
        engine.dispose()
    # A clean session on connect discards the old one (and its subscription) for good.
    ender = MqttClient(settings.broker, client_id, clean_session=True)
    ender.start()
    try:
        if not await ender.wait_connected(timeout=10):
            raise RetireFailed(f"cannot end the session of {client_id}: {ender.status}")
    finally:
        await ender.stop()
    logger.info("retired %s: %d held message(s) handled", client_id, handled)
    return handled
