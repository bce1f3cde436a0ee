"""Chaos for the trackers and the accounts database, under a steady HTTP load.

Two real tracker processes behind a real HAProxy with `make cluster`'s configuration
(GET /readyz checks), a real PostgreSQL and a real broker. The broker is one Mosquitto:
what breaks here is a tracker or the database, never the broker (the node kills are
tests/cluster's other scenarios), and a RabbitMQ cluster would only add CPU.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest

from devkit.broker import Mosquitto
from devkit.loadbalancer import haproxy_binary, haproxy_config
from devkit.net import free_port, port_open
from devkit.postgres import PostgresCluster
from devkit.waiting import wait_until
from tests.helpers.tracker import TrackerProcess

REPO = Path(__file__).resolve().parents[2]

CLIENTS = 4  # concurrent requests in flight at any time: the most a kill may cost


@dataclass
class Load:
    """``CLIENTS`` threads sending GET /1 through HAProxy, recording every outcome."""

    url: str
    outcomes: list[tuple[float, str]] = field(default_factory=list)  # (time, "200"/"503"/...)
    running: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self.running.set()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running.clear()
        for thread in self.threads:
            thread.join(15)

    def client(self) -> None:
        with httpx.Client(timeout=10) as http:
            while self.running.is_set():
                try:
                    outcome = str(http.get(self.url, params={"data": "load"}).status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                with self.lock:
                    self.outcomes.append((time.monotonic(), outcome))

    def since(self, start: float) -> Counter[str]:
        with self.lock:
            return Counter(outcome for at, outcome in self.outcomes if at >= start)

    def first_ok_after(self, start: float) -> float | None:
        with self.lock:
            return next((at for at, o in self.outcomes if at >= start and o == "200"), None)


@dataclass
class Stack:
    trackers: list[TrackerProcess]
    postgres: PostgresCluster
    lb_port: int
    haproxy_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}/1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    haproxy = haproxy_binary()
    if haproxy is None:
        pytest.skip("haproxy not installed: scripts/ensure-cluster-tools.sh")
    try:
        postgres = PostgresCluster()
    except FileNotFoundError:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    workdir = tmp_path_factory.mktemp("chaos")
    broker = Mosquitto(workdir / "mqtt")
    broker.start()
    postgres.start()
    proxy: subprocess.Popen[bytes] | None = None
    trackers: list[TrackerProcess] = []
    try:
        subprocess.run(
            [sys.executable, str(REPO / "data" / "seed.py"), "--database-url", postgres.url],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for _ in range(2):
            tracker = TrackerProcess(
                workdir,
                f"mqtt://127.0.0.1:{broker.port}",
                postgres.url,
                TRACKER_ACCOUNT_CACHE_TTL="0",  # every request asks the database
                TRACKER_INGEST="false",
            )
            trackers.append(tracker.__enter__())
        lb_port = free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(lb_port, [t.port for t in trackers], "chaos tests"))
        log = workdir / "haproxy.log"
        with open(log, "wb") as output:
            proxy = subprocess.Popen(
                [haproxy, "-db", "-f", str(config)],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: port_open(lb_port), timeout=10, message="haproxy did not start")
        yield Stack(trackers, postgres, lb_port, log)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for tracker in trackers:
            tracker.stop()
        postgres.destroy()
        broker.stop()


def steady(load: Load, seconds: float = 0.5) -> None:
    """Until the load has run ``seconds`` with only 200s (what follows starts from calm)."""

    def calm() -> bool:
        recent = load.since(time.monotonic() - seconds)
        return set(recent) == {"200"} and recent.total() > 5  # requests, not outcome kinds

    try:
        wait_until(calm, timeout=20)
    except AssertionError:  # say what the load saw at the deadline, not at the start
        recent = load.since(time.monotonic() - seconds)
        raise AssertionError(f"no steady 200s in the last {seconds} s: {recent}") from None


def test_a_sigkilled_tracker_costs_at_most_its_in_flight_requests(stack: Stack) -> None:
    victim, survivor = stack.trackers
    with Load(stack.url) as load:
        steady(load, seconds=1.0)
        killed_at = time.monotonic()
        victim.kill()
        wait_until(
            lambda: "tracker-1 is DOWN" in stack.haproxy_log.read_text(),
            timeout=10,
            message=f"HAProxy did not mark it down:\n{stack.haproxy_log.read_text()}",
        )
        marked_down = time.monotonic() - killed_at
        served_by_survivor = survivor.metric("tracker_requests_total", outcome="accepted")
        steady(load, seconds=1.0)
        during = load.since(killed_at)
        victim.__enter__()  # restarted on its port: HAProxy takes it back after one check
        wait_until(
            lambda: "tracker-1 is UP" in stack.haproxy_log.read_text(), timeout=10, message="UP"
        )
    failed = sum(count for outcome, count in during.items() if outcome != "200")
    print(  # noqa: T201 - the measured figures, shown with -s
        f"tracker SIGKILL under load: {sum(during.values())} requests after the kill, "
        f"{failed} failed ({dict(during)}), HAProxy marked it down after {marked_down:.1f} s"
    )
    assert failed <= CLIENTS, dict(during)
    assert during["200"] > 0 and served_by_survivor > 0


def test_a_stopped_database_answers_503_then_recovers_by_itself(stack: Stack) -> None:
    postgres = stack.postgres
    direct = stack.trackers[0].base_url
    with Load(stack.url) as load:
        steady(load)
        stopped_at = time.monotonic()
        subprocess.run(
            [*postgres.prefix, postgres.pg_ctl, "-D", str(postgres.data), "-m", "immediate"]
            + ["-w", "stop"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_until(lambda: load.since(time.monotonic() - 0.3)["503"] > 0, timeout=10)
        ready = httpx.get(direct + "/readyz", timeout=5)
        wait_until(lambda: time.monotonic() - stopped_at > 1.5, timeout=5)  # a stretch of it
        during = load.since(stopped_at)
        started_at = time.monotonic()
        postgres.start()
        wait_until(lambda: load.first_ok_after(started_at), timeout=30, message="no recovery")
        recovered_at = load.first_ok_after(started_at)
        assert recovered_at is not None
        steady(load)
    recovery = recovered_at - started_at
    print(  # noqa: T201 - the measured figures, shown with -s
        f"PostgreSQL stop -m immediate under load: {dict(during)}; "
        f"first 200 {recovery:.2f} s after it was back"
    )
    assert ready.status_code == 503 and ready.json()["database"] is False
    assert set(during) <= {"200", "503"}, dict(during)  # no 500, no timeout
    assert during["503"] > 0
    assert recovery < 10
