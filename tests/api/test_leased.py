"""Competing for a lease survives a failure of the lease itself: logged, then asked again."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tracker_api.config import load_settings
from tracker_api.consumers.leased import LeasedConsumer
from tracker_api.service.client_ids import StateDirError


class BrokenThenBusy:
    """A lease whose file cannot be opened at first (a planted symlink, say), then is held
    by somebody else."""

    def __init__(self) -> None:
        self.asked = 0

    def try_acquire(self) -> bool:
        self.asked += 1
        if self.asked == 1:
            raise StateDirError("cannot open lease.lock: too many levels of symbolic links")
        return False

    def held(self) -> bool:
        return False

    def release(self) -> None:
        pass


def test_a_failing_lease_is_logged_and_asked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lease = BrokenThenBusy()

    async def scenario() -> None:
        settings = load_settings(mqtt_url="mqtt://127.0.0.1:1", state_dir=tmp_path)
        consumer = LeasedConsumer(
            settings,
            lease,
            name="archive",
            client_id="archive",
            subscriptions=[("track/#", 1)],
            consumer=lambda acks: None,  # type: ignore[arg-type,return-value]
            check_every=0.01,
        )
        async with consumer:
            async with asyncio.timeout(5):
                while lease.asked < 3:
                    await asyncio.sleep(0.01)
            assert consumer.status == "follower"

    with caplog.at_level(logging.ERROR, logger="tracker_api.consumers.leased"):
        asyncio.run(scenario())
    assert "archive: the lease or its consumer failed; competing again" in caplog.text
    assert "too many levels of symbolic links" in caplog.text
