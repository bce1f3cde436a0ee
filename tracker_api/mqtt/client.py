"""The client: one supervised connection to a broker (or to one node of a cluster at a
time, failing over between them), with an in-flight window of QoS-1
publishes whose PUBACKs callers await, manual acknowledgement of incoming messages, and
keepalive. Used as ``async with MqttClient(...) as client:`` (as aiomqtt is); unlike
aiomqtt it never waits for a connection: while there is none, ``publish`` raises at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracker_api.mqtt.codec import (
    DISCONNECT_PACKET,
    MAX_PACKET,
    PINGREQ_PACKET,
    Acknowledged,
    Connack,
    Decoder,
    Message,
    Other,
    Suback,
    Will,
    decode_packet,
    decode_publish,
    encode_connect,
    encode_puback,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
)
from tracker_api.mqtt.errors import (
    ConnectionLost,
    ConnectionRefused,
    MqttError,
    NotConnected,
    ProtocolError,
)
from tracker_api.mqtt.transport import BrokerAddress, Link, open_link
from tracker_api.mqtt.window import InflightWindow
from tracker_api.tasks import cancel
from tracker_contract.backoff import Backoff
from tracker_contract.nodes import Rotation

logger = logging.getLogger(__name__)


@dataclass
class ClientStats:
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    received: int = 0
    oversize: int = 0  # incoming messages dropped for their size
    last_error: str = ""  # "refused: <CONNACK reason>" or "unreachable: <why>"
    state_listeners: list[Callable[[bool], None]] = field(default_factory=list)


class MqttClient:
    """A supervised connection to one broker, or to one node at a time of a cluster given
    as several addresses: a lost or refused node is left for the next one (``Rotation``);
    processes start at different nodes (by pid) so that a fleet spreads over the cluster.

    ``publish`` returns a future resolved by the broker's PUBACK (QoS 1) and raises
    ``NotConnected`` or ``InflightFull`` at once instead of queueing: the caller decides
    what a refusal means. Incoming messages go to ``on_message(message)``; for QoS 1 the
    caller must call ``ack(message)`` once it is done with the message.
    """

    def __init__(
        self,
        address: BrokerAddress | Sequence[BrokerAddress],
        client_id: str,
        *,
        keepalive: int = 15,
        clean_session: bool = True,
        will: Will | None = None,
        max_inflight: int = 10_000,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: Callable[[Message], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        backoff: tuple[float, float] = (0.1, 5.0),
        connect_timeout: float = 5.0,
        ack_timeout: float | None = None,
        max_packet: int = MAX_PACKET,
    ) -> None:
        nodes = (address,) if isinstance(address, BrokerAddress) else tuple(address)
        self._backoff = Backoff(*backoff)
        self.rotation = Rotation(nodes, self._backoff, start=os.getpid())
        self.client_id = client_id
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.will = will
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.on_connect = on_connect
        self.connect_timeout = connect_timeout
        self.max_packet = max_packet
        self.stats = ClientStats()
        self._window = InflightWindow(max_inflight, ack_timeout)
        self._link: Link | None = None
        self._connected = False
        self._up = asyncio.Event()
        self._connack: asyncio.Future[Connack] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._topic_cache: dict[str, bytes] = {}
        # Topic filters the broker refused (filter -> why), never subscribed again: a
        # refusal repeated on every reconnect would only take the connection down in a loop.
        self.refused: dict[str, str] = {}
        self._unanswered_subscribes = 0

    # -- state -------------------------------------------------------------------------

    @property
    def address(self) -> BrokerAddress:
        """The node connected to, or the one tried next."""
        return self.rotation.current

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def status(self) -> str:
        """``connected to <host>:<port>``, ``connecting``, ``refused: <reason>`` or
        ``unreachable: <why>``."""
        if self._connected:
            return f"connected to {self.address.host}:{self.address.port}"
        return self.stats.last_error or "connecting"

    @property
    def inflight(self) -> int:
        """Packet ids in use: publishes awaiting PUBACK, subscriptions awaiting SUBACK."""
        return len(self._window)

    def _set_connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            (self._up.set if value else self._up.clear)()
            for listener in self.stats.state_listeners:
                listener(value)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> MqttClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._supervisor is None:
            self._stopping = False
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"mqtt-{self.client_id}"
            )

    async def wait_connected(self, timeout: float) -> bool:
        """Whether a connection is up within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            pass
        return self._connected

    def stop_reconnecting(self) -> None:
        """Keep the link in hand, but make no new one once it is lost: a client on its way
        out must not take its client id back from the one that replaced it."""
        self._stopping = True

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Wait (bounded) for in-flight acknowledgements, then DISCONNECT cleanly."""
        self._stopping = True
        pending = self._window.pending()
        if pending and self._connected:
            # A lost connection fails them all, so this ends at the latest then.
            await asyncio.wait(pending, timeout=drain_timeout)
        link = self._link
        if link is not None and self._connected:
            link.write(DISCONNECT_PACKET)
            link.close()
        await cancel(self._supervisor)
        self._supervisor = None
        self._drop_link(ConnectionLost("client stopped"))

    # -- outgoing ----------------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Send one message; the future resolves on PUBACK (at once for QoS 0)."""
        link = self._link
        if not self._connected or link is None:
            raise NotConnected("not connected to the broker")
        encoded_topic = self._topic_cache.get(topic)
        if encoded_topic is None:
            encoded_topic = topic.encode()
            if len(self._topic_cache) < 100_000:
                self._topic_cache[topic] = encoded_topic
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if qos == 0:
            link.write(encode_publish(encoded_topic, payload, 0, retain, 0))
            future.set_result(None)
        else:
            mid = self._window.add(future)
            link.write(encode_publish(encoded_topic, payload, 1, retain, mid))
        self.stats.published += 1
        return future

    def holds(self, message: Message) -> bool:
        """Whether ``message`` came on the current connection: only then can it still be
        acknowledged; otherwise the broker hands it over again after the reconnect."""
        return self._connected and message.link is self._link

    def ack(self, message: Message) -> bool:
        """Acknowledge an incoming QoS-1 message; False when its connection is gone."""
        if message.qos == 0:
            return True
        if not self.holds(message):
            return False
        assert self._link is not None
        self._link.write(encode_puback(message.mid))
        return True

    def unsubscribe(self, topics: Sequence[str]) -> asyncio.Future[None]:
        """Stop receiving ``topics``; the future resolves on the broker's UNSUBACK."""
        link = self._link
        if not self._connected or link is None:
            raise NotConnected("not connected to the broker")
        self.subscriptions = [s for s in self.subscriptions if s[0] not in topics]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        mid = self._window.add(future, timed=False)
        link.write(encode_unsubscribe(mid, topics))
        return future

    def drop_connection(self, reason: str) -> None:
        """Abort the current connection (the supervisor reconnects)."""
        if self._link is not None:
            logger.warning("dropping the broker connection: %s", reason)
            self._link.abort()

    # -- incoming ----------------------------------------------------------------------

    def _on_puback(self, mid: int) -> None:
        self._window.release(mid)
        self.stats.acked += 1

    def _on_packet(self, header: int, body: bytes) -> None:
        packet = decode_packet(header, body, self._link)
        if isinstance(packet, Message):
            self._on_publish(packet)
        elif isinstance(packet, Acknowledged):
            self._on_puback(packet.mid)
        elif isinstance(packet, Connack):
            if self._connack is not None and not self._connack.done():
                if packet.code == 0:
                    # The broker may send redelivered messages in the same read: whoever
                    # handles them must already see a connected client that can publish.
                    self._set_connected(True)
                self._connack.set_result(packet)
        elif isinstance(packet, Suback):
            self._window.release(packet.mid)
            self._unanswered_subscribes = 0
            codes = zip(self.subscriptions, packet.codes, strict=False)
            self._refuse([topic for (topic, _), code in codes if code == 0x80], "SUBACK 0x80")
        elif isinstance(packet, Other) and packet.header != 0xD0:  # PINGRESP: heard
            logger.warning("unexpected packet type 0x%02x from broker", packet.header)

    def _refuse(self, topics: list[str], reason: str) -> None:
        if topics:
            logger.error("broker refused subscription to %s (%s)", ", ".join(topics), reason)
            self.refused.update(dict.fromkeys(topics, reason))
            self.subscriptions = [s for s in self.subscriptions if s[0] not in topics]

    def _on_publish(self, message: Message) -> None:
        self.stats.received += 1
        if self.on_message is None:
            self.ack(message)
            return
        try:
            self.on_message(message)
        except Exception:
            logger.exception(
                "message handler failed for %s; acknowledged to avoid a loop", message.topic
            )
            self.ack(message)

    def _on_oversize(self, header: int, head: bytes, length: int) -> None:
        """A PUBLISH over ``max_packet``: acknowledged (so it is not redelivered forever)
        and dropped, counted in ``stats.oversize``."""
        self.stats.oversize += 1
        try:
            message: Message | None = decode_publish(header, head, self._link)
        except ProtocolError:
            message = None
        logger.warning(
            "dropped a %d-byte message on %s: over the %d-byte limit",
            length,
            message.topic if message is not None else "?",
            self.max_packet,
        )
        if message is not None:
            self.ack(message)

    # -- supervisor --------------------------------------------------------------------

    def _drop_link(self, error: MqttError) -> None:
        self._set_connected(False)
        self._link = None
        self._window.fail_all(error)

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                await self._run_connection(asyncio.get_running_loop())
            except ConnectionRefused as exc:
                self._note_failure(
                    str(exc), logging.ERROR, " (check the login in TRACKER_MQTT_URL)"
                )
            except (TimeoutError, OSError, MqttError) as exc:
                self._note_failure(f"unreachable: {str(exc) or type(exc).__name__}")
            except Exception:  # a bug or an odd platform error: log it, never stop trying
                logger.exception("unexpected error in the broker connection; retrying")
                self.stats.last_error = "unexpected error"
            if self._stopping:
                break
            # Refused, unreachable or lost alike: the next node, at once within a round.
            await asyncio.sleep(self.rotation.failed())

    def _note_failure(self, reason: str, level: int = logging.WARNING, hint: str = "") -> None:
        if reason != self.stats.last_error:  # once per kind of failure, not per attempt
            logger.log(
                level,
                "broker %s:%s %s%s; retrying with backoff up to %.1f s",
                self.address.host,
                self.address.port,
                reason,
                hint,
                self._backoff.cap,
            )
        self.stats.last_error = reason

    async def _run_connection(self, loop: asyncio.AbstractEventLoop) -> None:
        address = self.address
        decoder = Decoder(self._on_packet, self._on_puback, self.max_packet, self._on_oversize)
        link = await open_link(address, decoder, self.connect_timeout)
        self._link = link
        subscribed: asyncio.Future[None] | None = None
        try:
            self._connack = connack = loop.create_future()
            link.write(
                encode_connect(
                    self.client_id,
                    self.keepalive,
                    self.clean_session,
                    address.username,
                    address.password,
                    self.will,
                )
            )
            closed_early = asyncio.ensure_future(asyncio.shield(link.closed))
            waiters: set[asyncio.Future[Any]] = {connack, closed_early}
            done, _ = await asyncio.wait(
                waiters, timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            closed_early.cancel()
            if connack not in done:
                raise ConnectionLost("no CONNACK from the broker")
            answer = connack.result()
            if answer.code:
                raise ConnectionRefused(answer.code)
            if self.subscriptions:
                # SUBSCRIBE shares the packet-id space: its id is held until the SUBACK.
                subscribed = loop.create_future()
                subscribed.add_done_callback(self._log_subscribed)
                mid = self._window.add(subscribed, timed=False)
                link.write(encode_subscribe(mid, self.subscriptions))
            self.stats.connects += 1
            self.stats.last_error = ""
            self.rotation.connected()
            logger.info(
                "connected to broker %s:%s as %s (session present: %s)",
                address.host,
                address.port,
                self.client_id,
                answer.session_present,
            )
            if self.on_connect is not None:
                self.on_connect()
            await self._keep_alive(link)
        finally:
            if subscribed is not None and not subscribed.done() and link.closed.done():
                # Some brokers (RabbitMQ) answer a SUBSCRIBE they refuse by hanging up;
                # twice in a row is that, not a network cut that happened to fall there.
                self._unanswered_subscribes += 1
                if self._unanswered_subscribes >= 2:
                    topics = [topic for topic, _ in self.subscriptions]
                    self._refuse(topics, "the broker closes the connection on SUBSCRIBE")
            was_connected = self._connected
            link.abort()
            self._drop_link(ConnectionLost("connection to the broker lost"))
            if was_connected and not self._stopping:
                self.stats.disconnects += 1
                logger.warning("disconnected from broker %s:%s", address.host, address.port)

    def _log_subscribed(self, suback: asyncio.Future[None]) -> None:
        """From here on the broker keeps for this session what it is subscribed to: the
        line a supervisor waits for before it lets anything be acknowledged."""
        if not suback.cancelled() and suback.exception() is None:
            topics = ", ".join(topic for topic, _ in self.subscriptions)
            logger.info("subscribed to %s as %s", topics, self.client_id)

    async def _keep_alive(self, link: Link) -> None:
        """Return when the connection must go: closed by the peer, silent for 1.5 x
        keepalive despite our PINGREQs (half-open), or silent while publishes time out."""
        ping_every = max(self.keepalive / 2, 0.05)
        ack_timeout = self._window.ack_timeout
        tick = min(ping_every, 0.05) if ack_timeout is not None else ping_every
        last_ping = last_tick = time.monotonic()
        skipped_late = False
        while True:
            # asyncio.wait, not wait_for: it leaves link.closed alone and never swallows
            # our own cancellation (stop() cancels this task).
            closed, _ = await asyncio.wait({link.closed}, timeout=tick)
            if closed:
                return
            now = time.monotonic()
            late, last_tick = now - last_tick > tick * 2 + 0.1, now
            # Overdue publishes fail even when our loop runs late: their callers must get
            # an answer within about the timeout either way.
            expired = self._window.expire(now)
            if late and not skipped_late:
                # Our own loop was blocked: what the broker sent may still sit unread in
                # the socket, so don't judge the link on this tick (but on the next one).
                skipped_late = True
                continue
            skipped_late = False
            silent = now - link.last_received
            if silent > self.keepalive * 1.5:
                logger.warning("broker silent for %.1f s: connection is half-open", silent)
                return
            if expired and ack_timeout is not None and silent >= ack_timeout:
                # Nothing at all from the broker while acknowledgements are overdue:
                # don't wait for the keepalive to notice.
                logger.warning("no answer from the broker for %.1f s: dropping the link", silent)
                return
            if now - last_ping >= ping_every:
                link.write(PINGREQ_PACKET)
                last_ping = now
