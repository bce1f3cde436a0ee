"""MqttPublisher: 504 when sent but not acknowledged, 503 when not sent."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.silent_broker import SilentBroker
from tests.helpers.waiting import wait_until
from tracker_api.config import load_settings
from tracker_api.errors import PublishFailed, PublishOutcomeUnknown
from tracker_api.publisher import MqttPublisher


def test_no_puback_within_the_timeout_is_outcome_unknown_and_the_silent_link_dropped() -> None:
    silent = SilentBroker()

    async def scenario() -> float:
        async with silent.serving() as port:
            settings = load_settings(mqtt_url=f"mqtt://127.0.0.1:{port}", publish_timeout=0.3)
            publisher = MqttPublisher(settings, client_id="t-1")
            await publisher.start()
            assert publisher.connected
            started = time.monotonic()
            with pytest.raises(PublishOutcomeUnknown):
                await publisher.publish("track/1", b"{}")
            elapsed = time.monotonic() - started
            # The link said nothing for a whole timeout: dropped and dialled again.
            await asyncio.to_thread(wait_until, lambda: silent.connections >= 2, timeout=5)
            await publisher.stop()
            return elapsed

    elapsed = asyncio.run(scenario())
    assert elapsed < 0.6


def test_publisher_without_broker_refuses_immediately() -> None:
    async def scenario() -> None:
        settings = load_settings(mqtt_url="mqtt://127.0.0.1:1", publish_timeout=0.3)
        publisher = MqttPublisher(settings)
        await publisher.start()  # does not raise: the API serves 503s meanwhile
        assert not publisher.connected
        with pytest.raises(PublishFailed):
            await publisher.publish("track/1", b"{}")
        await publisher.stop()

    asyncio.run(scenario())
