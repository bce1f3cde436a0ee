"""paho clients as the project's own clients speak: MQTT 3.1.1, callback API 2."""

from __future__ import annotations

import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tracker_contract.ids import client_id_for


def paho_client(
    client_id: str = "",
    *,
    clean: bool = True,
    username: str | None = None,
    password: str | None = None,
    **options: Any,
) -> mqtt.Client:
    """A paho client (callback API 2) speaking MQTT 3.1.1, as the project's own clients do;
    anonymous without a username. With a login and no client id it takes one of the
    login's own (``<login>:peer-…``): the broker refuses a login any other id."""
    if username is not None and not client_id:
        client_id = client_id_for(username, f"peer-{uuid.uuid4().hex[:12]}")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean,
        protocol=mqtt.MQTTv311,
        **options,
    )
    if username is not None:
        client.username_pw_set(username, password)
    return client
