"""Hold a lease, then consume: the one way a single consumer is chosen among any number of
tracker processes (ingest in ``leader`` mode, the archive).

While a ``LeasedConsumer`` holds its lease (``ingest_lease.Lease``), it reads its
subscriptions on a connection of its own, with a persistent session under one fixed client
id, so whoever holds the lease next resumes the same session, unacknowledged messages
included. Losing the lease closes the connection at once; the others keep asking for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from tracker_api.config import Settings
from tracker_api.consumers.lease import Lease
from tracker_api.service.broker import Acknowledger, BrokerConnection, Consumer, Session
from tracker_api.tasks import cancel

logger = logging.getLogger(__name__)

# Followers ask for the lease, and the holder checks it is still its own, this often.
LEASE_CHECK = 1.0


class LeasedConsumer:
    def __init__(
        self,
        settings: Settings,
        lease: Lease,
        *,
        name: str,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]],
        consumer: Callable[[Acknowledger], Consumer],
        check_every: float = LEASE_CHECK,
    ) -> None:
        self.settings = settings
        self.lease = lease
        self.name = name
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.make_consumer = consumer
        self.check_every = check_every
        self._connection: BrokerConnection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connection(self) -> BrokerConnection | None:
        """The holder's connection while the lease is held (it publishes, too)."""
        return self._connection

    @property
    def status(self) -> str:
        """``leader``, ``follower``, or ``refused: <why>`` when the broker refuses the
        holder's login or subscription."""
        connection = self._connection
        if connection is None:
            return "follower"
        if connection.broker_status.startswith("refused"):
            return connection.broker_status
        return connection.refusal or "leader"

    async def __aenter__(self) -> LeasedConsumer:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._compete(), name=f"{self.name}-lease")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await cancel(self._task)

    async def _compete(self) -> None:
        logger.info("%s: competing for the lease as a follower", self.name)
        while True:
            try:
                if await asyncio.to_thread(self.lease.try_acquire):
                    try:
                        await self._lead()
                    finally:
                        await asyncio.to_thread(self.lease.release)  # may wait on the database
            except Exception:  # the lease's file or database, or a consumer failing to start
                logger.exception("%s: the lease or its consumer failed; competing again", self.name)
            await asyncio.sleep(self.check_every)

    async def _lead(self) -> None:
        logger.info(
            "%s: leader, consuming %s as %s",
            self.name,
            ", ".join(topic for topic, _ in self.subscriptions),
            self.client_id,
        )
        connection = BrokerConnection(
            self.settings,
            self.client_id,
            session=Session.PERSISTENT,
            subscriptions=self.subscriptions,
            consumer=self.make_consumer,
            publishing=False,
        )
        async with connection:
            self._connection = connection
            try:
                await self.while_leading()
            finally:
                self._connection = None
        logger.error("%s: lease lost, stopped consuming; competing again", self.name)

    async def while_leading(self) -> None:
        """Runs while the lease is held; returns once it is lost."""
        while await asyncio.to_thread(self.lease.held):
            await asyncio.sleep(self.check_every)
