"""The MQTT side of mqtt-tail: connect, resubscribe, reconnect forever (to the next node
of a cluster when one fails, ``Rotation``), acknowledge late.

One thread drives paho's public primitives (``socket``, ``want_write``, ``loop_read``,
``loop_write``, ``loop_misc``) from our own loop rather than ``loop_forever``, because the
delivery guarantee needs control over *when* PUBACKs go out: messages are handed to the
handler, the handler writes and flushes the whole batch, and only then is the batch
acknowledged (``manual_ack=True``). A crash before the flush leaves the messages
unacknowledged, so the broker redelivers them.

Speed (ADR 4): reading goes on packet after packet while packets keep coming, without a
select() in between, and the PUBACKs of a batch leave in one ``loop_write`` with the
socket corked, so the broker gets them in a few segments instead of one per message.

Where a session is (connecting, live, holding messages back for a catch-up, stopping...)
is one ``State``; ``TRANSITIONS`` lists the moves between states, and the callbacks and
the loop make them in one place, ``Session._become``.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from subscriber.sockets import buffered, corked, error_text, until_broker_closes
from tracker_contract.backoff import Backoff as Backoff
from tracker_contract.nodes import Rotation
from tracker_contract.topics import EVERY_ACCOUNT

logger = logging.getLogger(__name__)

BATCH_MAX = 2000
"""Messages handled before a flush and an acknowledgement, at most. The broker's own
window (``max_inflight_messages``, 5,000 in ours) may be larger; paho's 65,535 message
ids are not at risk because nothing is held for longer than one batch."""
POLL_INTERVAL = 0.2
"""Longest wait in select(): how quickly a stop request or a timer is noticed."""
SHUTDOWN_WAIT = 2.0
"""Longest wait at exit for the broker to close the connection after DISCONNECT."""

TAKEOVER_CLOSES, TAKEOVER_WINDOW = 3, 30.0
"""A connection the broker closes this many times within the window, each time just after
connecting again at the first try, is being taken by another client with the same id:
two processes with one client id each make the broker drop the other as they connect."""

# CONNACK codes (as paho reports them for MQTT 3.1.1) that retrying cannot fix: what the
# broker said, and which kind of refusal it is (the CLI gives a hint per kind).
_REFUSED = {
    132: ("the broker does not support MQTT 3.1.1", "protocol"),
    133: ("the broker rejected the client id", "client-id"),
    134: ("bad username or password", "login"),
    135: ("not authorised", "login"),
}


CLOSED_BY_BROKER = "connection lost: closed by the broker"


class Refused(Exception):
    """The broker said no (credentials, ACL, client id): not a network error, no retry.

    ``kind`` is ``"login"``, ``"client-id"``, ``"protocol"``, ``"subscription"`` or
    ``"taken-over"`` (another client keeps connecting with the same id).
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class State(Enum):
    """Where a session is. ``Session._become`` alone moves it, along ``TRANSITIONS``."""

    WIPING = "wiping"
    """``--clean``: this connection discards the stored session and ends, unsubscribed."""
    CONNECTING = "connecting"
    """No connection the broker accepted: connecting, or waiting to try again."""
    SUBSCRIBING = "subscribing"
    """CONNACK accepted and SUBSCRIBE sent; messages (a resumed session's) are shown."""
    HOLDING = "holding"
    """As SUBSCRIBING, but a catch-up is due: messages are left unacknowledged (the broker
    sends them again), so none is shown before the history it follows."""
    HANDING_OVER = "handing-over"
    """SUBACK in while holding: the broker queues every live message for the session from
    now on; at the end of the batch the session leaves to catch up, even if the connection
    was lost in that batch."""
    CATCHING_UP = "catching-up"
    """DISCONNECT (the broker keeps the session, queueing), then the catch-up runs; a new
    connection follows."""
    LIVE = "live"
    """Subscribed: messages are shown, and acknowledged once their batch is flushed."""
    STOPPING = "stopping"
    """``stop()`` came true: what was shown is acknowledged, then DISCONNECT. The end."""
    REFUSED = "refused"
    """The broker said no for good (``Refused``); ``run`` raises it, or stops if asked to
    first. Nothing more is shown."""

    def may_become(self, other: State) -> bool:
        """Whether ``TRANSITIONS`` has the move from this state to ``other``."""
        return other in TRANSITIONS[self]


TRANSITIONS: Mapping[State, frozenset[State]] = {
    # The clean connection ended (however it ended), the CONNACK refused it, Ctrl-C.
    State.WIPING: frozenset({State.CONNECTING, State.REFUSED, State.STOPPING}),
    # CONNACK accepted (a catch-up due or not), refused for good, Ctrl-C.
    State.CONNECTING: frozenset({State.SUBSCRIBING, State.HOLDING, State.REFUSED, State.STOPPING}),
    # SUBACK, connection lost, SUBACK refused or taken over, Ctrl-C.
    State.SUBSCRIBING: frozenset({State.LIVE, State.CONNECTING, State.REFUSED, State.STOPPING}),
    # As SUBSCRIBING, the SUBACK starting the hand-over to the catch-up.
    State.HOLDING: frozenset({State.HANDING_OVER, State.CONNECTING, State.REFUSED, State.STOPPING}),
    # The catch-up follows the SUBACK even if the connection is lost in the same batch.
    State.HANDING_OVER: frozenset({State.CATCHING_UP, State.REFUSED}),
    # Done, or stopped early: back to connecting (the loop then stops if asked to).
    State.CATCHING_UP: frozenset({State.CONNECTING}),
    # Connection lost, taken over, Ctrl-C (or --count, --timeout, a closed pipe).
    State.LIVE: frozenset({State.CONNECTING, State.REFUSED, State.STOPPING}),
    State.STOPPING: frozenset(),
    # A stop request seen before the refusal is raised wins: a clean DISCONNECT, no error.
    State.REFUSED: frozenset({State.STOPPING}),
}
"""Every legal move of a session; any other is a bug (``IllegalTransition``)."""

_ACCEPTED = frozenset({State.SUBSCRIBING, State.HOLDING, State.HANDING_OVER, State.LIVE})
"""The broker accepted the connection: a close the session did not ask for is a loss."""
_SHOWING = frozenset({State.SUBSCRIBING, State.LIVE})
"""Messages go to the handler; in any other state they stay unacknowledged."""


class IllegalTransition(RuntimeError):
    """A move ``TRANSITIONS`` does not have: a bug in the session, not the broker's doing."""

    def __init__(self, current: State, wanted: State) -> None:
        super().__init__(f"a session cannot go from {current.value} to {wanted.value}")
        self.current = current
        self.wanted = wanted


class Handler(Protocol):
    def on_message(self, topic: str, payload: bytes | bytearray) -> bool:
        """Process one message; False leaves it unacknowledged (the broker keeps it)."""

    def on_batch_end(self) -> bool:
        """Flush what the batch produced; False means it could not be delivered."""

    def on_tick(self, now: float) -> None:
        """Called at least every POLL_INTERVAL seconds, connected or not."""


class CatchUp(Protocol):
    """What the live stream cannot deliver (history before the subscription, the gap of a
    lost session), fetched elsewhere while the broker queues the live messages."""

    def due(self, *, first: bool, session_present: bool) -> bool:
        """Whether this connection, once subscribed, must catch up before going live."""

    def run(self, stop: Callable[[], bool]) -> None:
        """Show what was missed; returns early when ``stop()`` becomes true."""


@dataclass(frozen=True)
class ConnectOptions:
    # The broker, or the nodes of one cluster in the order they are tried: whichever
    # answers resumes the session (the cluster keeps it, not the node).
    nodes: Sequence[tuple[str, int]] = (("127.0.0.1", 1883),)
    client_id: str = "mqtt-tail"
    topics: Sequence[str] = (EVERY_ACCOUNT,)
    clean: bool = False
    username: str | None = None
    password: str | None = None
    tls: bool = False
    cafile: str | None = None
    keepalive: int = 5
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0


class Session:
    """Keeps a persistent MQTT session alive and feeds its messages to a handler.

    ``run(stop)`` returns when ``stop()`` is true, after a clean DISCONNECT (the broker
    keeps the session), or raises ``Refused``. ``state`` says where it is (``State``);
    what is not a state (connections made, the node, the closes counted for a takeover)
    is plain data beside it.
    """

    def __init__(
        self, options: ConnectOptions, handler: Handler, catch_up: CatchUp | None = None
    ) -> None:
        self.options = options
        self.handler = handler
        self.catch_up = catch_up
        self._state = State.WIPING if options.clean else State.CONNECTING
        self.rotation = Rotation(
            options.nodes, Backoff(options.reconnect_min, options.reconnect_max)
        )
        # True from the first SUBACK on: the topics are logged once, not at each reconnection.
        self.subscribed = False
        self.connections = 0
        self._refusal: Refused | None = None
        self._pending: list[int] = []
        self._reported_down: set[tuple[str, int]] = set()
        self._received = 0
        self._closed_by_broker: list[float] = []
        # paho's disconnect reason for a dropped connection is "Unspecified error"; the
        # exception it logs just before says what happened.
        self._last_error = _LastError()
        self._paho_log = logging.Logger(f"{__name__}.paho", logging.ERROR)
        self._paho_log.addHandler(self._last_error)
        self._client = self._new_client(clean=options.clean)

    @property
    def state(self) -> State:
        """Where the session is now."""
        return self._state

    def _become(self, state: State) -> None:
        """The one place a session changes state; a move not in ``TRANSITIONS`` raises."""
        if not self._state.may_become(state):
            raise IllegalTransition(self._state, state)
        logger.debug("state %s -> %s", self._state.value, state.value)
        self._state = state

    def _refuse(self, refusal: Refused) -> None:
        """To REFUSED, keeping what ``run`` raises."""
        self._become(State.REFUSED)
        self._refusal = refusal

    def _new_client(self, *, clean: bool) -> mqtt.Client:
        options = self.options
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=options.client_id,
            clean_session=clean,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if options.tls or options.cafile:
            client.tls_set(ca_certs=options.cafile)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        # With a write callback registered, paho queues packets instead of sending each
        # one at once; our loop writes them together (see module docstring).
        client.on_socket_register_write = _ignore
        client.enable_logger(self._paho_log)
        return client

    # -- paho callbacks (run inside our loop, on our thread) ---------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            if reason.value in _REFUSED:
                said, kind = _REFUSED[reason.value]
                self._refuse(Refused(f"connection refused: {said}", kind))
            else:
                logger.warning("connection refused by the broker: %s; retrying", reason)
            return
        self.rotation.connected()
        self._reported_down.clear()
        where = self._where()
        if self._state is State.WIPING:
            logger.info("connected to %s; discarding the stored session (--clean)", where)
            client.disconnect()
            return
        self.connections += 1
        if flags.session_present:
            logger.info("connected to %s as %s, session resumed", where, self.options.client_id)
        elif self.connections == 1:
            logger.info("connected to %s as %s, new session", where, self.options.client_id)
        else:
            logger.warning(
                "connected to %s as %s, but the broker has no session for it: "
                "events published while disconnected may have been missed",
                where,
                self.options.client_id,
            )
        due = self.catch_up is not None and self.catch_up.due(
            first=self.connections == 1, session_present=bool(flags.session_present)
        )
        self._become(State.HOLDING if due else State.SUBSCRIBING)
        client.subscribe([(topic, 1) for topic in self.options.topics])

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Any,
    ) -> None:
        for topic, reason in zip(self.options.topics, reasons, strict=False):
            if reason.is_failure:
                self._refuse(
                    Refused(f"subscription to {topic} refused by the broker (ACL?)", "subscription")
                )
                return
        if not self.subscribed:
            logger.info("subscribed to %s", ", ".join(self.options.topics))
        self.subscribed = True
        # From the SUBACK on, the broker queues every live message for the session.
        self._become(State.HANDING_OVER if self._state is State.HOLDING else State.LIVE)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if self._state in _ACCEPTED:
            self._connection_lost(self._lost(reason))
        # PUBACKs for this connection's messages must not go out on the next one: the
        # broker redelivers them and the deduplicator drops the copies.
        self._pending.clear()

    def _connection_lost(self, lost: str) -> None:
        """A connection the broker had accepted closed unasked: say how and reconnect, or
        leave the client id to the client that keeps taking it."""
        if self._taken_over(lost):
            self._refuse(
                Refused(
                    f"client id {self.options.client_id} is in use by another client: the "
                    f"broker closed this connection {TAKEOVER_CLOSES} times as the other one "
                    "connected; leaving the session to it",
                    "taken-over",
                )
            )
            return
        logger.warning("%s; reconnecting", lost)
        if self._state is not State.HANDING_OVER:  # subscribed: the catch-up comes first
            self._become(State.CONNECTING)

    def _taken_over(self, lost: str) -> bool:
        if lost != CLOSED_BY_BROKER:
            self._closed_by_broker.clear()
            return False
        now = time.monotonic()
        recent = [t for t in self._closed_by_broker if now - t < TAKEOVER_WINDOW]
        self._closed_by_broker = [*recent, now]
        return len(self._closed_by_broker) >= TAKEOVER_CLOSES

    def _lost(self, reason: ReasonCode) -> str:
        if reason == "Keep alive timeout":
            return (
                "connection lost: no answer from the broker within the keepalive "
                f"({self.options.keepalive} s)"
            )
        if self._last_error.error is not None:
            return f"connection lost: network error: {error_text(self._last_error.error)}"
        if reason == "Unspecified error":  # the socket read end-of-file
            return CLOSED_BY_BROKER
        return f"connection lost ({reason})"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._received += 1
        if self._state not in _SHOWING:
            return
        if self.handler.on_message(message.topic, message.payload) and message.qos:
            self._pending.append(message.mid)

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop: Callable[[], bool]) -> None:
        next_attempt = 0.0
        while not stop():
            now = time.monotonic()
            self.handler.on_tick(time.time())
            if self._state is State.REFUSED:
                self._close()
                assert self._refusal is not None
                raise self._refusal
            sock = self._client.socket()
            if sock is None:
                if now < next_attempt:
                    time.sleep(min(POLL_INTERVAL, next_attempt - now))
                    continue
                if self._connect():
                    continue
                delay = self.rotation.failed()
                next_attempt = time.monotonic() + delay
                logger.debug("next connection attempt in %.1f s", delay)
                continue
            self._service(sock)
            if self._state is State.HANDING_OVER and self.catch_up is not None:
                self._pause_for(self.catch_up, stop)
                next_attempt = 0.0
                continue
            if self._client.socket() is None:
                if self._state is State.WIPING:
                    # The clean-session connection ended: from now on, a persistent one.
                    self._client = self._new_client(clean=False)
                    self._become(State.CONNECTING)
                    next_attempt = 0.0
                else:
                    next_attempt = time.monotonic() + self.rotation.failed()
        self._become(State.STOPPING)
        self._shutdown()

    def _where(self) -> str:
        host, port = self.rotation.current
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _connect(self) -> bool:
        node = self.rotation.current
        self._client.connect_async(*node, self.options.keepalive)  # sets the node only
        self._last_error.error = None
        try:
            self._client.reconnect()
        except (OSError, ssl.SSLError) as error:
            if node not in self._reported_down:  # once per node until connected again
                logger.warning(
                    "broker %s unreachable (%s); retrying", self._where(), error_text(error)
                )
                self._reported_down.add(node)
            self._closed_by_broker.clear()  # the broker was away (a restart), not taken
            return False
        return True

    def _service(self, sock: Any) -> None:
        client = self._client
        if not buffered(sock):
            wants = client.want_write()
            readable, _, _ = select.select([sock], [sock] if wants else [], [], POLL_INTERVAL)
        else:
            readable = [sock]
        if readable:
            # loop_read handles one packet and says the same whether it read one or found
            # the socket empty: a read that delivered no message ends the batch, and the
            # next select() tells whether more is coming.
            for _ in range(BATCH_MAX):
                received = self._received
                if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                if client.socket() is None:
                    break
                if self._received == received and not buffered(sock):
                    break
        self._end_batch()
        self._write()
        if client.socket() is not None:
            client.loop_misc()
            self._write()

    def _end_batch(self) -> None:
        delivered = self.handler.on_batch_end()
        pending, self._pending = self._pending, []
        if delivered:
            for mid in pending:
                self._client.ack(mid, 1)

    def _write(self) -> None:
        """Send what paho queued; corked, so a batch of PUBACKs leaves in few segments."""
        client = self._client
        sock = client.socket()
        if sock is not None and client.want_write():
            with corked(sock):
                client.loop_write()

    def _pause_for(self, catch_up: CatchUp, stop: Callable[[], bool]) -> None:
        """Leave the broker (the session keeps queueing live messages, unacknowledged and
        so bounded by the broker's limits, not our memory), catch up, then come back."""
        self._become(State.CATCHING_UP)
        self._shutdown()
        catch_up.run(stop)
        self._client = self._new_client(clean=False)
        self._become(State.CONNECTING)

    def _shutdown(self) -> None:
        """Acknowledge what was shown, then DISCONNECT: the broker keeps the session."""
        client = self._client
        sock = client.socket()
        self._end_batch()
        if sock is not None:
            with until_broker_closes(sock, SHUTDOWN_WAIT):
                client.disconnect()
                # DISCONNECT goes out before the socket is closed, even if acknowledgements
                # fill the socket's buffer: the broker then keeps the session quietly.
                if isinstance(sock, socket.socket):
                    sock.settimeout(1.0)
                client.loop_write()
        self._close()

    def _close(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            sock.close()


def _ignore(*args: object) -> None:
    return None


class _LastError(logging.Handler):
    """Keeps the exception of the last error paho logged."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.error = next((arg for arg in args if isinstance(arg, BaseException)), self.error)
