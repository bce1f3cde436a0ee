"""Small paho clients that report what the broker answered: CONNACK, SUBACK, PUBACK, loss."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt

from devkit.mqtt_client import paho_client
from devkit.waiting import wait_until


class Client:
    """A paho client on one node that records its messages and the broker's answers."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None = None,
        *,
        client_id: str = "",
        clean: bool = True,
    ) -> None:
        self.port = port
        self.connack: mqtt.ReasonCode | None = None
        self.session_present: bool | None = None
        self.granted: dict[int, list[int]] = {}
        self.acked: set[int] = set()
        self.messages: list[tuple[str, bytes]] = []
        self.lost = threading.Event()
        self._lock = threading.Lock()
        self.paho = paho_client(
            client_id,
            clean=clean,
            username=username,
            password=password,
            reconnect_on_failure=False,
        )
        self.paho.max_inflight_messages_set(1000)
        self.paho.max_queued_messages_set(0)
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = lambda *args: self.lost.set()
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_publish = self._on_publish
        self.paho.on_message = self._on_message

    def _on_connect(self, _c: object, _u: object, flags: object, rc: object, _p: object) -> None:
        self.connack = rc  # type: ignore[assignment]
        self.session_present = bool(getattr(flags, "session_present", False))

    def _on_subscribe(self, _c: object, _u: object, mid: int, codes: object, _p: object) -> None:
        self.granted[mid] = [code.value for code in codes]  # type: ignore[attr-defined]

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        with self._lock:
            self.acked.add(mid)

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload))

    def connect(self) -> mqtt.ReasonCode:
        self.paho.connect("127.0.0.1", self.port, keepalive=30)
        self.paho.loop_start()
        wait_until(lambda: self.connack is not None or self.lost.is_set(), timeout=10)
        assert self.connack is not None, "no CONNACK"
        return self.connack

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()

    def subscribe(self, topic: str) -> int:
        """The granted QoS, or 0x80 for a refusal (also when the broker hangs up instead)."""
        _, mid = self.paho.subscribe(topic, qos=1)
        wait_until(lambda: mid in self.granted or self.lost.is_set(), timeout=10)
        return self.granted.get(mid, [0x80])[0]

    def publish(self, topic: str, payload: bytes | str) -> int:
        return self.paho.publish(topic, payload, qos=1).mid

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)


@contextmanager
def connected(
    port: int, username: str | None, password: str | None = None, **options: object
) -> Iterator[Client]:
    client = Client(port, username, password, **options)  # type: ignore[arg-type]
    try:
        assert client.connect() == 0, f"{username} refused: {client.connack}"
        yield client
    finally:
        client.close()
