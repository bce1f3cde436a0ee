"""What the archive costs, and how fast it catches up and replays (docs/benchmarks.md).

- ``archive_cost``: the peak run with the archive on and with it off, alternating, best of
  each over two rounds, in one run: the archive-on share of archive-off throughput.
- ``catch_up``: the archive stopped while ``count`` events are acknowledged by the broker
  (published on ``track/<id>`` with the tracker's login, as the tracker does), then
  ``tracker-api archive`` alone stores the backlog: events per second, and 0 lost,
  0 duplicated (the table's rows against the eventIds sent).
- ``replay``: the stored events read back as NDJSON from ``GET /events`` and through
  ``mqtt-tail --since``: events per second.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson

from bench import archive
from bench.stack import ARCHIVE_PROCESS, tracker_process
from devkit.waiting import wait_until
from tracker_api.mqtt import BrokerAddress, MqttClient
from tracker_api.service.events import Clock, EventIds

ACCOUNTS = 100
PUBLISH_WINDOW = 5_000


async def publish_envelopes(port: int, password: str, count: int) -> float:
    """``count`` envelopes on ``track/<id>`` at QoS 1, all acknowledged; seconds taken."""
    ids, clock = EventIds(), Clock()
    address = BrokerAddress(port=port, username="tracker", password=password)
    async with MqttClient(address, "tracker:bench-backlog", max_inflight=PUBLISH_WINDOW) as client:
        if not await client.wait_connected(10):
            raise RuntimeError(f"bench publisher: {client.status}")
        started = time.monotonic()
        pending: list[asyncio.Future[None]] = []
        for n in range(count):
            account = str(1 + n % ACCOUNTS)
            payload = orjson.dumps(
                {"eventId": ids.new(), "accountId": account, "timestamp": clock.now(),
                 "data": f"backlog-{n}"}
            )  # fmt: skip
            pending.append(client.publish(f"track/{account}", payload, qos=1))
            if len(pending) >= PUBLISH_WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.monotonic() - started


def archive_env(base_env: dict[str, str], database_url: str) -> dict[str, str]:
    # INFO: the archive says when it leads, which is when its session is subscribed.
    return {**base_env, "TRACKER_DATABASE_URL": database_url, "TRACKER_LOG_LEVEL": "INFO"}


def run_archive(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tracker_api", "archive"]
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def rows_now(database_url: str) -> int:
    return archive.archived(database_url)[0]


class LagWatch:
    """``/readyz``'s ``archive_lag_s`` sampled twice a second in a thread: what an operator
    sees of a catch-up."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.samples: list[float | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.samples.append(
                    httpx.get(self.base_url + "/readyz", timeout=5).json()["archive_lag_s"]
                )
            except (httpx.HTTPError, ValueError, KeyError):
                self.samples.append(None)

    def summary(self) -> dict[str, Any]:
        seen = [lag for lag in self.samples if lag is not None]
        return {"lag_max_s": max(seen, default=None), "lag_last_s": seen[-1] if seen else None,
                "lag_samples": len(self.samples)}  # fmt: skip


def catch_up(
    say: Callable[[str], None],
    base_env: dict[str, str],
    broker_port: int,
    tracker_password: str,
    database_url: str,
    workdir: Path,
    count: int,
    label: str,
) -> dict[str, Any]:
    """The archive's session made, the archive stopped, ``count`` events acknowledged,
    then ``tracker-api archive`` alone stores them."""
    # A session of its own: nothing the runs before queued for the archive gets in.
    env = {**archive_env(base_env, database_url),
           "TRACKER_ARCHIVE_CLIENT_ID": f"tracker:archive-catchup-{label.lower()}"}  # fmt: skip
    log = workdir / f"archive-{label}.log"
    before = rows_now(database_url)
    first = run_archive(env, log)  # subscribes its session: the broker queues from here
    try:
        wait_until(
            lambda: "subscribed to " in log.read_text(errors="replace"),
            30,
            interval=0.1,
            message=f"the archive did not start consuming (see {log})",
            error=RuntimeError,
        )
    finally:
        stop(first)
    say(f"catch-up on {label}: {count:,} events acknowledged while the archive is stopped")
    published_s = asyncio.run(publish_envelopes(broker_port, tracker_password, count))
    say(f"  published in {published_s:.1f} s; now `tracker-api archive` alone")
    # A tracker beside it, as make run has one: its /readyz shows the lag meanwhile.
    api_env = {**env, "TRACKER_ARCHIVE": "false", ARCHIVE_PROCESS: "false"}
    with tracker_process(api_env, workdir / f"tracker-{label}.log"):
        second, started = run_archive(env, log), time.monotonic()
        try:
            with LagWatch(f"http://127.0.0.1:{env['TRACKER_PORT']}") as watch:
                rows, seconds = archive.wait_rows(database_url, before + count, started=started)
                # Caught up: the next marks come back at once.
                wait_until(lambda: (watch.samples[-1:] or [None])[0] is not None
                           and watch.samples[-1] < 5, 15, 0.2)  # type: ignore[operator]  # fmt: skip
        finally:
            stop(second)
    stored = rows - before
    rate = stored / seconds if seconds else 0.0
    result = {
        "events": count,
        "stored": stored,
        "lost": max(0, count - stored),
        "duplicates": max(0, stored - count),
        "seconds": round(seconds, 2),
        "events_per_s": round(rate),
        **watch.summary(),
    }
    say(f"  stored {stored:,} in {seconds:.1f} s: {rate:,.0f} events/s "
        f"(lost {result['lost']}, duplicated {result['duplicates']}); /readyz archive_lag_s "
        f"up to {result['lag_max_s']} s meanwhile, {result['lag_last_s']} s after")  # fmt: skip
    return result


def replay(
    say: Callable[[str], None], base_url: str, reader_env: dict[str, str], broker_port: int,
    reader_password: str, count: int,
) -> dict[str, Any]:  # fmt: skip
    """The archived events back: NDJSON from the history API, then ``mqtt-tail --since``."""
    auth = ("reader", reader_password)
    started = time.monotonic()
    lines = 0
    with httpx.stream(
        "GET", f"{base_url}/events", params={"since": "1h"}, auth=auth,
        headers={"Accept": "application/x-ndjson"}, timeout=300,
    ) as answer:  # fmt: skip
        for chunk in answer.iter_bytes():
            lines += chunk.count(b"\n")
    ndjson_s = time.monotonic() - started
    say(f"replay: GET /events as NDJSON, {lines:,} events in {ndjson_s:.1f} s: "
        f"{lines / ndjson_s:,.0f} events/s")  # fmt: skip
    tail = [str(Path(sys.executable).parent / "mqtt-tail"), "--port", str(broker_port), "-q",
            "--json", "--since", "1h", "--api", base_url, "--count", str(count),
            "--client-id", "reader:bench-replay", "--clean"]  # fmt: skip
    started = time.monotonic()
    subprocess.run(tail, env=reader_env, stdout=subprocess.DEVNULL, check=True, timeout=600)
    tail_s = time.monotonic() - started
    say(f"replay: mqtt-tail --since, {count:,} events in {tail_s:.1f} s: "
        f"{count / tail_s:,.0f} events/s")  # fmt: skip
    return {
        "ndjson_events": lines,
        "ndjson_events_per_s": round(lines / ndjson_s),
        "tail_events": count,
        "tail_events_per_s": round(count / tail_s),
    }
