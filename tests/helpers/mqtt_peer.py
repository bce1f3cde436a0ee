"""A real MQTT peer (paho) that records what it receives."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import orjson
import paho.mqtt.client as mqtt

from devkit.mqtt_client import paho_client
from devkit.waiting import wait_until


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool

    @property
    def event(self) -> dict[str, str]:
        value: dict[str, str] = orjson.loads(self.payload)
        return value


class Peer:
    """Connects, subscribes and records; ``clean=False`` keeps a session across runs."""

    def __init__(
        self,
        port: int,
        topics: str | list[str] = "track/#",
        *,
        client_id: str = "",
        clean: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.topics = [topics] if isinstance(topics, str) else topics
        self.messages: list[Received] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = paho_client(client_id, clean=clean, username=username, password=password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.port = port

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Received(message.topic, message.payload, message.qos, bool(message.retain))
            )

    def __enter__(self) -> Peer:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, timeout=5, message="peer could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def events(self) -> list[dict[str, str]]:
        with self._lock:
            return [m.event for m in self.messages if m.topic.startswith("track/")]

    def event_ids(self) -> list[str]:
        return [event["eventId"] for event in self.events()]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        wait_until(
            lambda: len(self.messages) >= count,
            timeout,
            message=f"expected {count} messages, got {len(self.messages)}",
        )
        with self._lock:
            return list(self.messages)

    def latest(self) -> dict[str, Received]:
        """The last message of each topic: for status topics, each connection's state."""
        with self._lock:
            return {message.topic: message for message in self.messages}

    def wait_for_topics(self, count: int, timeout: float = 5.0) -> dict[str, Received]:
        def enough() -> dict[str, Received]:
            latest = self.latest()
            return latest if len(latest) >= count else {}

        return wait_until(
            enough,
            timeout,
            message=f"expected {count} topics, got {sorted(self.latest())}",
        )
