"""The device HTTP API against real parts: a batch through a real Mosquitto to a real
subscriber, request and trace ids shown by the real `mqtt-tail`, and the rate limit of a
real server with two workers."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from devkit.broker import Mosquitto
from devkit.loadbalancer import haproxy_binary, haproxy_config
from devkit.net import free_port, port_open
from devkit.tail import Tail
from devkit.waiting import wait_until
from tests.helpers.accounts import seeded_sqlite
from tests.helpers.api import api_client
from tests.helpers.mqtt_peer import Peer
from tests.helpers.tail import assert_exactly_once
from tests.helpers.tracker import TrackerProcess
from tracker_api.passwords import PasswordFile

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


@pytest.mark.parametrize("trusted", [True, False], ids=["behind-a-named-proxy", "direct"])
def test_failed_logins_are_counted_per_client_address_as_the_proxy_names_it(
    broker: Mosquitto, tmp_path: Path, trusted: bool
) -> None:
    """Behind a proxy named in TRACKER_FORWARDED_ALLOW_IPS, X-Forwarded-For is the client:
    one client's failures do not throttle another. From anyone else the header is
    ignored: a client cannot shed its failures by naming another address."""
    password_file = tmp_path / "passwd"
    with PasswordFile.edit(password_file) as passwords:
        passwords.set("1", "one-secret")
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    proxy = {"TRACKER_FORWARDED_ALLOW_IPS": "127.0.0.1"} if trusted else {}
    with TrackerProcess(
        tmp_path,
        broker.url,
        url,
        TRACKER_INGEST="false",
        TRACKER_HTTP_AUTH="true",
        TRACKER_PASSWORD_FILE=str(password_file),
        TRACKER_LOGIN_FAILURES_PER_LOGIN="0",
        TRACKER_LOGIN_FAILURES_PER_ADDRESS="3",
        **proxy,
    ) as tracker:

        def post(client: str, login: tuple[str, str]) -> int:
            headers = {"X-Forwarded-For": client}
            return httpx.post(
                tracker.base_url + "/1", json={"data": "x"}, headers=headers, auth=login
            ).status_code

        guesses = [post("203.0.113.5", ("1", f"guess-{n}")) for n in range(4)]
        neighbour = post("203.0.113.6", ("1", "one-secret"))

    assert guesses == [401, 401, 401, 429]
    assert neighbour == (200 if trusted else 429)


def test_behind_the_projects_load_balancer_a_client_cannot_name_its_own_address(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """HAProxy as `make cluster` and compose configure it drops a client's own
    X-Forwarded-For and adds the address it saw: a guesser cannot shed its failures by
    claiming to be someone else."""
    haproxy = haproxy_binary()
    if haproxy is None:
        pytest.skip("haproxy not installed: scripts/ensure-cluster-tools.sh")
    password_file = tmp_path / "passwd"
    with PasswordFile.edit(password_file) as passwords:
        passwords.set("1", "one-secret")
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    engine.dispose()
    with TrackerProcess(
        tmp_path,
        broker.url,
        url,
        TRACKER_INGEST="false",
        TRACKER_HTTP_AUTH="true",
        TRACKER_PASSWORD_FILE=str(password_file),
        TRACKER_LOGIN_FAILURES_PER_LOGIN="0",
        TRACKER_LOGIN_FAILURES_PER_ADDRESS="3",
        TRACKER_FORWARDED_ALLOW_IPS="127.0.0.1",
    ) as tracker:
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(port, [tracker.port], "tests"))
        proxy = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_until(lambda: port_open(port), timeout=10, message="haproxy did not start")

            def post(claimed: str) -> int:
                return httpx.post(
                    f"http://127.0.0.1:{port}/1",
                    json={"data": "x"},
                    headers={"X-Forwarded-For": claimed},
                    auth=("1", "guess"),
                    timeout=5,
                ).status_code

            statuses = [post(f"203.0.113.{n}") for n in range(1, 5)]
        finally:
            proxy.terminate()
            proxy.wait(10)

    assert statuses == [401, 401, 401, 429]
