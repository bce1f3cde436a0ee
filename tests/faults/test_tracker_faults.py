"""The tracker when the path to the broker breaks: cut, silently black-holed, or the
broker frozen."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from devkit.broker import Mosquitto
from devkit.waiting import wait_until
from tests.helpers.api import api_client
from tests.helpers.mqtt_peer import Peer
from tests.helpers.proxy import Proxy


@pytest.fixture
def proxy(broker: Mosquitto) -> Iterator[Proxy]:
    with Proxy(broker.port) as proxy:
        yield proxy


@pytest.fixture
def api(proxy: Proxy, tmp_path: Path) -> Iterator[TestClient]:
    mqtt_url = f"mqtt://127.0.0.1:{proxy.port}"
    with api_client(tmp_path, mqtt_url, publish_timeout=0.5, mqtt_keepalive=5) as client:
        yield client


def timed_get(api: TestClient, data: str) -> tuple[int, float]:
    started = time.monotonic()
    status = api.get("/1", params={"data": data}).status_code
    return status, time.monotonic() - started


def test_half_open_broker_gives_504_within_the_timeout_and_recovers(
    api: TestClient, proxy: Proxy, broker: Mosquitto
) -> None:
    with Peer(broker.port, "track/#") as peer:
        proxy.blackhole()  # no FIN, no RST: the broker just stops answering
        status, elapsed = timed_get(api, "into the void")
        assert status == 504  # sent, never acknowledged: the outcome is unknown
        # From the 0.5 s publish timeout, not the keepalive (5 s: 7.5 s to give up).
        assert elapsed < 5.0

        proxy.restore()
        # The silent link was dropped at once, not after the keepalive: reconnects quickly.
        wait_until(lambda: timed_get(api, "after")[0] == 200, timeout=5)
        wait_until(lambda: "after" in [e["data"] for e in peer.events()], timeout=5)


def test_cut_connection_gives_503_and_recovers_by_itself(api: TestClient, proxy: Proxy) -> None:
    proxy.cut()
    proxy.blackhole()  # and refuse new ones for a while

    wait_until(lambda: api.get("/readyz").status_code == 503, timeout=5)
    status, elapsed = timed_get(api, "while cut")
    # Refused at once: nothing waits for a PUBACK that cannot come (keepalive is 5 s).
    assert (status, elapsed < 5.0) == (503, True)

    proxy.restore()
    wait_until(lambda: api.get("/readyz").status_code == 200, timeout=10)
    assert api.get("/1", params={"data": "back"}).status_code == 200


def test_frozen_broker_gives_504_and_the_event_may_still_be_delivered(
    broker: Mosquitto, tmp_path: Path
) -> None:
    assert broker.process is not None
    with (
        api_client(tmp_path, broker.url, publish_timeout=0.5) as api,
        Peer(broker.port, "track/#") as peer,
    ):
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = api.get("/1", params={"data": "frozen"}, headers={"Idempotency-Key": "f-1"})
            elapsed = time.monotonic() - started
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)

        assert response.status_code == 504
        assert response.headers["retry-after"] == "1"
        assert "retry with the same Idempotency-Key" in response.json()["detail"]
        assert elapsed < 5.0  # the 0.5 s publish timeout, not the 15 s keepalive
        # Which is why it is not a 503: the broker had the message and delivers it.
        wait_until(lambda: "f-1" in peer.event_ids(), timeout=10)
