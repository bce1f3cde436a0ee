"""The errors of the MQTT client, in one tree::

MqttError
  ├── ProtocolError      the broker broke MQTT 3.1.1: the connection is closed
  ├── ConnectionRefused  CONNACK with a refusal (bad login, not authorised, ...)
  ├── NotConnected       no live connection: nothing was sent
  ├── InflightFull       the in-flight window is full: nothing was sent
  ├── PublishTimeout     sent, no PUBACK within the acknowledgement timeout
  └── ConnectionLost     sent, the connection dropped before the PUBACK
"""

from __future__ import annotations

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttError(Exception):
    """Base of the errors raised by this client."""


class ProtocolError(MqttError):
    """The broker sent a packet that breaks MQTT 3.1.1."""


class ConnectionRefused(MqttError):
    """The broker answered CONNACK with a refusal."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.reason = CONNACK_REASONS.get(code, f"code {code}")
        super().__init__(f"refused: {self.reason}")


class NotConnected(MqttError):
    """The client has no live connection; nothing was sent."""


class InflightFull(MqttError):
    """The in-flight window is full; nothing was sent."""


class PublishTimeout(MqttError):
    """No PUBACK within the acknowledgement timeout."""


class ConnectionLost(MqttError):
    """The connection dropped before the broker acknowledged the message."""
