"""The device HTTP API against real parts: a batch through a real Mosquitto to a real
subscriber, request and trace ids shown by the real `mqtt-tail`, and the rate limit of a
real server with two workers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.helpers.accounts import seeded_sqlite
from tests.helpers.api import api_client
from tests.helpers.broker import Mosquitto
from tests.helpers.mqtt_peer import Peer
from tests.helpers.tail import Tail, assert_exactly_once
from tests.helpers.tracker import TrackerProcess
from tests.helpers.waiting import wait_until

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "fastapi-routes"])
def test_every_event_of_an_acknowledged_batch_is_delivered_once(
    broker: Mosquitto, tmp_path: Path, fast_path: bool
) -> None:
    with (
        api_client(tmp_path, broker.url, fast_path=fast_path, ingest=False) as api,
        Peer(broker.port, "track/#") as peer,
    ):
        response = api.post("/1", json=[{"data": f"n{n}"} for n in range(1000)])
        assert response.status_code == 200
        sent = [event["eventId"] for event in response.json()["events"]]
        peer.wait_for(1000, timeout=10)

    assert_exactly_once(peer.event_ids(), set(sent))
    assert peer.event_ids() == sent  # one connection, QoS 1: in request order


def test_request_and_trace_ids_reach_mqtt_tail(broker: Mosquitto, tmp_path: Path) -> None:
    template = "{requestId}|{traceId}|{data}"
    with (
        Tail(tmp_path / "tail", "--account", "1", "--format", template, port=broker.port) as tail,
        api_client(tmp_path, broker.url, ingest=False) as api,
    ):
        tail.wait_subscribed()
        headers = {"X-Request-ID": "req-7", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
        assert api.post("/1", json=[{"data": "a"}, {"data": "b"}], headers=headers).is_success
        assert api.get("/1?data=c").is_success  # neither id given: both fields empty

        wait_until(lambda: tail.stdout().count("\n") >= 3, timeout=10, message=tail.stderr())

    assert tail.stdout().splitlines() == [f"req-7|{TRACE}|a", f"req-7|{TRACE}|b", "||c"]


def test_two_workers_together_keep_to_the_rate_limit(broker: Mosquitto, tmp_path: Path) -> None:
    """Each of the two workers enforces half of the limit: whichever worker a request
    reaches, the server as a whole never accepts more than the limit (plus one second's
    burst)."""
    limit = 20
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    with TrackerProcess(
        tmp_path,
        broker.url,
        url,
        TRACKER_WORKERS="2",
        TRACKER_RATE_LIMIT=str(limit),
        TRACKER_INGEST="false",
    ) as tracker:
        # No keep-alive: a new connection each time, so both workers take requests.
        http = httpx.Client(
            base_url=tracker.base_url, limits=httpx.Limits(max_keepalive_connections=0)
        )

        def send(n: int) -> httpx.Response:
            return http.get("/1", params={"data": str(n)})

        started = time.monotonic()
        with http, ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(send, range(150)))
        elapsed = time.monotonic() - started
        rate_limited = tracker.metric("tracker_requests_total", outcome="rate_limited")

    statuses = [response.status_code for response in responses]
    accepted = statuses.count(200)
    assert set(statuses) == {200, 429}
    assert accepted <= limit + limit * elapsed + 1, (accepted, elapsed)
    assert accepted >= limit / 2  # at least one worker's full burst
    assert rate_limited == statuses.count(429)
    refused = next(response for response in responses if response.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
