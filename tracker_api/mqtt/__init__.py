"""A lean asyncio MQTT 3.1.1 client for the tracker's hot path.

Why not a general-purpose library: the tracker needs a QoS-1 publish whose PUBACK it can
await, refused at once while disconnected and never replayed later (a 503 must stay a
503), with a bounded in-flight window and many publishes coalesced into one socket write.
See docs/adr/0002-mqtt-client.md.

It speaks only what the tracker uses: CONNECT (credentials, will, TLS), PUBLISH QoS 0/1 out,
PUBLISH QoS 0/1 in with manual PUBACK, SUBSCRIBE, UNSUBSCRIBE, PINGREQ and DISCONNECT, in
three layers: ``codec`` (bytes, pure), ``transport`` (the socket) and ``client``.
"""

from tracker_api.mqtt.client import ClientStats, MqttClient
from tracker_api.mqtt.codec import Message, Will
from tracker_api.mqtt.errors import (
    ConnectionLost,
    ConnectionRefused,
    InflightFull,
    MqttError,
    NotConnected,
    ProtocolError,
    PublishTimeout,
)
from tracker_api.mqtt.transport import BrokerAddress

__all__ = [
    "BrokerAddress",
    "ClientStats",
    "ConnectionLost",
    "ConnectionRefused",
    "InflightFull",
    "Message",
    "MqttClient",
    "MqttError",
    "NotConnected",
    "ProtocolError",
    "PublishTimeout",
    "Will",
]
