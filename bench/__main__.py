"""`make bench`: end-to-end throughput, latency and a zero-loss check, on 127.0.0.1 only.

1. a durable, secured Mosquitto (the project's shared settings, passwords and ACL);
2. the ceiling: a bare ASGI app served like the tracker (uvicorn, uvloop, httptools,
   same worker count), driven by wrk;
3. the tracker with N workers and a lean counting subscriber; wrk at full speed; the
   tracker's own count of acknowledged events is compared with the unique eventIds the
   subscriber received (exit 1 on any loss);
4. latency at 25 / 50 / 75 % of the measured peak: wrk paced by bench/paced.lua, p50 /
   p99 / p99.9 from wrk's full histogram;
5. the real `mqtt-tail`, in --json mode and in --aggregate mode, subscribed during a
   full-speed run: did it keep up, did it lose anything;
6. batches: POST /1 with 100 events per request (bench/batch.lua) against the same
   tracker, events/s beside the single GETs of the same run (target: at least 3x), every
   event delivered;
7. logins on: a second tracker with TRACKER_HTTP_AUTH=true (the first one idle), one
   event per POST (bench/event.lua: with logins on the tracker refuses event GETs) with
   the account's HTTP Basic login, req/s beside the peak without (the cost of checking
   logins, and of a POST's body);
8. optionally (--soak SECONDS) a run at half the peak rate sampling each worker's RSS.

Results go to bench/results/<time>.json, a row in docs/benchmarks.md and a chart,
docs/bench-latency.png.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from bench import archive, catchup
from bench.stack import (
    ARCHIVE_PROCESS,
    BIN,
    EVENT_PATH,
    CpuMeter,
    Stack,
    accepted,
    children_running,
    counter_process,
    drain,
    metrics_text,
    peak_rss_mib,
    process,
    read_status,
    rss_mib,
    say,
    seed,
    settle,
    tail_json_count,
    tracker_process,
    wrk,
    wrk_at_rate,
)
from devkit.net import free_port, port_open
from devkit.postgres import PostgresCluster
from devkit.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"
CHART = REPO / "docs" / "bench-latency.png"
MARK = "<!-- results: one row per `make bench`, newest first -->"
ARCHIVE_MARK = "<!-- archive: one row per `make bench`, newest first -->"


def measure_ceiling(
    stack: Stack, seconds: float, connections: int, logs: Path, rates: list[float]
) -> dict[str, Any]:
    port = free_port()
    args = [str(BIN / "uvicorn"), "bench.hello:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(stack.workers), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--no-proxy-headers", "--no-server-header",
            "--log-level", "warning"]  # fmt: skip
    with process(args, logs / "hello.log", env={**os.environ, "PYTHONPATH": str(REPO)}):
        wait_until(
            lambda: port_open(port),
            20,
            message="timed out waiting for the hello app",
            error=click.ClickException,
        )
        wrk(f"http://127.0.0.1:{port}/", 2, connections)  # warm-up
        ceiling = wrk(f"http://127.0.0.1:{port}/", seconds, connections)
        # The same paced load on the bare app: the latency floor of server, harness and VM.
        ceiling["latency"] = [wrk_at_rate(f"http://127.0.0.1:{port}/", r, seconds) for r in rates]
        return ceiling


def run(options: dict[str, Any]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tracker-bench-"))
    logs = workdir
    seconds, connections, workers = options["duration"], options["connections"], options["workers"]
    stack = Stack(workdir, workers, options["broker_extra"], options["archive"])
    archive_url = stack.database_url if stack.archive else None
    stack.broker.start()
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
            "mosquitto": mosquitto_version(),
        },
        "workers": workers,
        "connections": connections,
        "duration_s": seconds,
    }
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        url = base + EVENT_PATH
        status = workdir / "counter.json"
        with (
            counter_process(stack, [stack.broker.port], status, logs / "counter.log") as counter,
            tracker_process(stack.serve_env(port), logs / "tracker.log") as tracker,
        ):
            # uvicorn's workers, not multiprocessing's resource tracker
            worker_pids = children_running(tracker.pid, b"spawn_main")
            wrk(url, 2, connections)  # warm-up: caches, JIT-free but allocators settle

            pids = {f"worker{i + 1}": pid for i, pid in enumerate(worker_pids)}
            pids |= {"mosquitto": stack.broker.process.pid, "counter": counter.pid}  # type: ignore[union-attr]
            meter = CpuMeter(pids)
            say(f"peak: tracker, {workers} worker(s), wrk -c{connections} {seconds:.0f}s")
            lag_before = archive.lag_buckets(metrics_text(base))
            meter.start()
            started = time.monotonic()
            wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            peak = wrk(url, seconds, connections)
            elapsed = time.monotonic() - started
            wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            peak["cpu_percent"] = meter.stop(elapsed) | {
                "wrk": round(100 * (wrk_after.ru_utime + wrk_after.ru_stime
                                    - wrk_before.ru_utime - wrk_before.ru_stime) / elapsed, 1)
            }  # fmt: skip
            say(
                "  CPU (% of one core): "
                + ", ".join(f"{k} {v}" for k, v in peak["cpu_percent"].items())
            )
            result["peak"] = settle(base, peak, status, archive_url, lag_before)

            result["latency"] = []
            for fraction in (0.25, 0.5, 0.75):
                rate = peak["rps"] * fraction
                say(
                    f"latency at {fraction:.0%} of peak ({rate:,.0f} req/s offered, {seconds:.0f}s)"
                )
                row = {"fraction": fraction, **wrk_at_rate(url, rate, seconds)}
                result["latency"].append(row)
                say(f"  achieved {row['achieved_rps']:,} req/s: p50 {row['p50_ms']} ms, "
                    f"p99 {row['p99_ms']} ms, p99.9 {row['p999_ms']} ms")  # fmt: skip

            result["batch"] = measure_batches(base, seconds, connections, status)
            say(f"  {result['batch']['events_per_s']:,.0f} events/s in batches of {BATCH}: "
                f"{result['batch']['events_per_s'] / peak['rps']:.1f}x the single GETs; "
                f"acknowledged {result['batch']['acknowledged']:,}, "
                f"delivered {result['batch']['delivered']:,}")  # fmt: skip

            result["auth"] = measure_auth(stack, seconds, connections, logs)
            result["auth"]["cost"] = round(1 - result["auth"]["rps"] / result["peak"]["rps"], 3)
            change = result["auth"]["rps"] / result["peak"]["rps"] - 1
            say(f"  {result['auth']['rps']:,.0f} req/s with logins: "
                f"{abs(change):.0%} {'below' if change < 0 else 'above'} the peak without "
                "(the two runs are back to back; runs vary by ±15 % here)")  # fmt: skip

            # Last: each tail's persistent session is ended after it, but until then the
            # broker queues every event for it, which would slow the phases above.
            result["tail"] = {}
            for mode, extra in (
                ("json", ["--json"]),
                ("aggregate", ["--aggregate", "--json", "--window", "0.5"]),
            ):
                out = workdir / f"tail-{mode}.out"
                with process([str(BIN / "mqtt-tail"), "--port", str(stack.broker.port), "-q",
                              "--client-id", f"reader:bench-tail-{mode}", *extra],
                             out, env=stack.reader_env()) as tail:  # fmt: skip
                    time.sleep(1.0)  # the tail subscribes; nothing to poll for but its output
                    before = accepted(base)
                    say(f"mqtt-tail {' '.join(extra)}: full speed {seconds:.0f}s")
                    load = wrk(url, seconds, connections)
                    sent = accepted(base) - before
                    if mode == "json":
                        shown, drain_s = drain(lambda out=out: tail_json_count(out)[0], sent, 10)
                        duplicates = tail_json_count(out)[1] - shown
                    else:
                        _, drain_s = drain(lambda out=out: aggregate_total(out), sent, 10)
                        tail.send_signal(signal.SIGTERM)
                        tail.wait(15)
                        shown, duplicates = aggregate_total(out), 0
                    result["tail"][mode] = {
                        "rps": load["rps"], "acknowledged": sent, "shown": shown,
                        "lost": max(0, sent - shown), "duplicates": duplicates, "drain_s": drain_s,
                    }  # fmt: skip
                    say(f"  {load['rps']:,.0f} req/s; acknowledged {sent:,}, shown {shown:,}, "
                        f"drained {drain_s} s after the load stopped")  # fmt: skip
                # Its session ended: the broker would queue (and save) the soak's events
                # for it, which would slow the soak and whatever runs beside this broker.
                forget_session(stack, f"reader:bench-tail-{mode}")

            if archive_url is not None:
                result["archive_run"] = archive_whole_run(archive_url, status)

            result["rss_mib"] = {
                name: round(peak_rss_mib(pid), 1)
                for name, pid in pids.items()
                if name.startswith("worker")
            }
            if options["soak"]:
                # The workers, and `tracker-api archive` beside them when it runs.
                archives = children_running(os.getpid(), b"tracker_api\x00archive")
                watched = {f"worker{i + 1}": pid for i, pid in enumerate(worker_pids)}
                watched |= {f"archive{i + 1}": pid for i, pid in enumerate(archives)}
                result["soak"] = soak(url, peak["rps"] / 2, options["soak"], watched)

        rates = [row["achieved_rps"] * 1.0 for row in result["latency"]]
        say(f"ceiling: bare ASGI hello, {workers} worker(s), wrk -c{connections} {seconds:.0f}s, "
            "then the same paced rates")  # fmt: skip
        ceiling = measure_ceiling(stack, seconds, connections, logs, rates)
        result["ceiling"] = ceiling
        result["peak"]["ratio_to_ceiling"] = round(result["peak"]["rps"] / ceiling["rps"], 3)
        say(
            f"  {ceiling['rps']:,.0f} req/s: the tracker reached {result['peak']['ratio_to_ceiling']:.0%}"
        )
        for row in ceiling["latency"]:
            say(f"  hello at {row['achieved_rps']:,} req/s: p50 {row['p50_ms']} ms, "
                f"p99 {row['p99_ms']} ms, p99.9 {row['p999_ms']} ms")  # fmt: skip
        if stack.archive:
            # Each on a broker of its own: the one above still queues, for the sessions of
            # the counter and the archives it ran, every event sent since they stopped.
            with fresh_broker(stack, "broker-archive-cost"):
                result["archive_cost"] = measure_archive_cost(stack, seconds, connections, logs)
            with fresh_broker(stack, "broker-catchup-sqlite"):
                result["catch_up"] = measure_catch_up(stack, options["backlog"])
    finally:
        stack.broker.stop()
    if stack.archive:
        result["postgres"] = peak_on_postgres(stack, seconds, connections)
    if options["cluster"]:
        from bench.cluster import measure_cluster

        result["cluster"] = measure_cluster(stack, seconds, connections)
    result["logs"] = str(workdir)
    return result


@contextmanager
def fresh_broker(stack: Stack, name: str) -> Iterator[None]:
    """``stack.broker`` replaced by a new one (the same logins and settings) meanwhile."""
    before, stack.broker = stack.broker, stack.new_broker(name)
    stack.broker.start()
    try:
        yield
    finally:
        stack.broker.stop()
        stack.broker = before


def mosquitto_sub(stack: Stack, client_id: str, *options: str) -> list[str]:
    """``mosquitto_sub`` on ``track/#`` under ``client_id``, with the login it belongs to
    (``<login>:…``)."""
    user = client_id.partition(":")[0]
    return ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(stack.broker.port), "-u", user,
            "-P", stack.passwords[user], "-q", "1", "-i", client_id, "-t", "track/#",
            *options]  # fmt: skip


@contextmanager
def bare_subscriber(stack: Stack, client_id: str) -> Iterator[None]:
    """A subscriber of ``track/#`` that does nothing with what it gets, on a persistent
    QoS-1 session as the archive's: ``mosquitto_sub`` (C) writing to /dev/null. What it
    costs is what any archive fed by the broker costs at least."""
    # Subscribed before it returns (-E: exit on the SUBACK); the broker queues from there.
    subprocess.run(mosquitto_sub(stack, client_id, "-c", "-E"), check=True, timeout=30)
    with subprocess.Popen(mosquitto_sub(stack, client_id, "-c"), stdout=subprocess.DEVNULL) as sub:
        try:
            yield
        finally:
            sub.terminate()
            sub.wait(10)


def forget_session(stack: Stack, client_id: str) -> None:
    """End a persistent session (a clean one under its id), so that the broker no longer
    queues every later event for it: a cost the next rounds would pay."""
    subprocess.run(mosquitto_sub(stack, client_id, "-E"), check=True, timeout=30)


ARCHIVE_MODES = ("off", "on", "subscriber")


def measure_archive_cost(
    stack: Stack, seconds: float, connections: int, logs: Path
) -> dict[str, Any]:
    """The peak with the archive off, on, and with only a bare subscriber of the events
    (``bare_subscriber``) in its place, alternating, best of two rounds each."""
    say(f"archive cost: the peak with the archive off, on, and a bare subscriber in its "
        f"place, alternating, 2 rounds of wrk -c{connections} {seconds:.0f}s")  # fmt: skip
    best = dict.fromkeys(ARCHIVE_MODES, 0.0)
    for round_ in (1, 2):
        for mode in ARCHIVE_MODES if round_ == 1 else ARCHIVE_MODES[::-1]:
            port = free_port()
            client_id = f"tracker:archive-cost-{mode}-{round_}"
            env = {**stack.serve_env(port), ARCHIVE_PROCESS: "true" if mode == "on" else "false",
                   "TRACKER_ARCHIVE_CLIENT_ID": client_id}  # fmt: skip
            with ExitStack() as running:
                if mode == "subscriber":
                    running.enter_context(bare_subscriber(stack, client_id))
                running.enter_context(
                    tracker_process(env, logs / f"tracker-archive-{mode}-{round_}.log")
                )
                url = f"http://127.0.0.1:{port}{EVENT_PATH}"
                wrk(url, 2, connections)  # warm-up
                rps = wrk(url, seconds, connections)["rps"]
            if mode != "off":
                forget_session(stack, client_id)
            say(f"  round {round_}, {mode}: {rps:,.0f} req/s")
            best[mode] = max(best[mode], rps)

    def share(mode: str) -> float:
        return round(best[mode] / best["off"], 3) if best["off"] else 0.0

    say(f"  archive on keeps {share('on'):.0%} of the archive-off throughput; a bare "
        f"subscriber in its place {share('subscriber'):.0%}")  # fmt: skip
    return {"on_rps": round(best["on"]), "off_rps": round(best["off"]), "ratio": share("on"),
            "subscriber_rps": round(best["subscriber"]),
            "subscriber_ratio": share("subscriber")}  # fmt: skip


def measure_catch_up(stack: Stack, backlog: int) -> dict[str, Any]:
    """The archive's catch-up after an outage on SQLite and PostgreSQL, then the replay
    rates of what it stored (bench/catchup.py)."""
    result: dict[str, Any] = {}
    base_env = stack.serve_env(free_port())
    password = stack.passwords["tracker"]
    sqlite_url = f"sqlite:///{stack.workdir / 'catchup.db'}"
    seed(sqlite_url)
    result["sqlite"] = catchup.catch_up(
        say, base_env, stack.broker.port, password, sqlite_url, stack.workdir, backlog, "SQLite"
    )
    if not result["sqlite"]["stored"]:
        say("replay: skipped (nothing was stored)")
        return result
    port = free_port()
    env = {**stack.serve_env(port, database_url=sqlite_url), ARCHIVE_PROCESS: "false",
           "TRACKER_PASSWORD_FILE": str(stack.workdir / "passwd")}  # fmt: skip
    with tracker_process(env, stack.workdir / "tracker-replay.log"):
        result["replay"] = catchup.replay(
            say, f"http://127.0.0.1:{port}", stack.reader_env(), stack.broker.port,
            stack.passwords["reader"], result["sqlite"]["stored"],
        )  # fmt: skip
    try:
        database = PostgresCluster()
    except FileNotFoundError as error:
        say(f"catch-up on PostgreSQL: skipped ({error})")
        return result
    database.start()
    try:
        seed(database.url)
        # A broker of its own: the first one may still be saving the SQLite run's backlog.
        with fresh_broker(stack, "broker-catchup-postgres"):
            result["postgres"] = catchup.catch_up(
                say, stack.serve_env(free_port()), stack.broker.port, password, database.url,
                stack.workdir, backlog, "PostgreSQL",
            )  # fmt: skip
    finally:
        database.destroy()
    return result


def archive_whole_run(database_url: str, status: Path) -> dict[str, int]:
    """Every event that reached the broker in the whole run (all phases, both trackers),
    in the archive once: the table's rows against the counter's unique eventIds."""
    delivered = int(read_status(status)["unique"])
    rows, _ = archive.wait_rows(database_url, delivered)
    whole = {
        "delivered": delivered,
        "archived": rows,
        "lost": max(0, delivered - rows),
        "duplicates": archive.duplicates(rows, archive.archived(database_url), delivered),
    }
    say(f"archive over the whole run: {rows:,} archived of {delivered:,} delivered")
    return whole


def peak_on_postgres(stack: Stack, seconds: float, connections: int) -> dict[str, Any]:
    """The peak run again with the tracker's database (accounts and archive) on a
    throwaway PostgreSQL, on a fresh broker: does the archive keep up there too."""
    try:
        database = PostgresCluster()
    except FileNotFoundError as error:
        say(f"archive on PostgreSQL: skipped ({error})")
        return {"skipped": str(error)}
    say(f"archive on PostgreSQL: the peak run again, wrk -c{connections} {seconds:.0f}s")
    broker = stack.new_broker("broker-postgres")
    database.start()
    broker.start()
    try:
        seed(database.url)
        port, status = free_port(), stack.workdir / "counter-postgres.json"
        base = f"http://127.0.0.1:{port}"
        env = stack.serve_env(port, [broker.port], database.url)
        logs = stack.workdir
        with (
            counter_process(stack, [broker.port], status, logs / "counter-postgres.log"),
            tracker_process(env, logs / "tracker-postgres.log"),
        ):
            wrk(base + EVENT_PATH, 2, connections)  # warm-up
            lag_before = archive.lag_buckets(metrics_text(base))
            load = wrk(base + EVENT_PATH, seconds, connections)
            return settle(base, load, status, database.url, lag_before)
    finally:
        broker.stop()
        database.destroy()


BATCH = 100


def measure_batches(base: str, seconds: float, connections: int, status: Path) -> dict[str, Any]:
    """POST /1 with BATCH events a request at full speed on the running tracker."""
    say(f"batches: POST {BATCH} events a request, wrk -c{connections} {seconds:.0f}s")
    before, shown_before = accepted(base), int(read_status(status)["unique"])
    load = wrk(f"{base}/1", seconds, connections, "-s", str(REPO / "bench" / "batch.lua"))
    # Requests still in flight when wrk stopped are answered after it: count them too.
    acknowledged, _ = drain(lambda: accepted(base) - before, 1 << 62, 0.5)
    shown, _ = drain(lambda: int(read_status(status)["unique"]) - shown_before, acknowledged, 10)
    return {
        "requests_per_s": load["rps"],
        "events_per_s": round(acknowledged / load["seconds"]),
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "non_2xx": load["non_2xx"],
        "acknowledged": acknowledged,
        "delivered": shown,
        "lost": max(0, acknowledged - shown),
    }


def measure_auth(stack: Stack, seconds: float, connections: int, logs: Path) -> dict[str, Any]:
    """Single events at full speed on a tracker that checks HTTP logins: one JSON object
    per POST, since with logins on an event GET is refused (405)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/1"
    say(f"logins on: TRACKER_HTTP_AUTH=true, POST one event, wrk -c{connections} {seconds:.0f}s")
    with tracker_process(stack.auth_env(port), logs / "tracker-auth.log"):
        options = ("-s", str(REPO / "bench" / "event.lua"), "-H", stack.basic_auth())
        wrk(url, 2, connections, *options)  # warm-up
        load = wrk(url, seconds, connections, *options)
    return {"rps": load["rps"], "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
            "non_2xx": load["non_2xx"]}  # fmt: skip


def aggregate_total(path: Path) -> int:
    """The running total of the newest complete --aggregate --json report."""
    lines = path.read_bytes().split(b"\n")[:-1]
    for line in reversed(lines):
        if line.startswith(b"{"):
            return int(json.loads(line).get("total", 0))
    return 0


def soak(url: str, rate: float, seconds: int, pids: dict[str, int]) -> dict[str, Any]:
    """``seconds`` at ``rate`` req/s, sampling the resident memory of each of ``pids``
    (name -> pid) every 10 s: flat when none grew by 10 % or more."""
    say(f"soak: {seconds}s at {rate:,.0f} req/s, sampling the RSS of {', '.join(pids)} "
        "every 10 s")  # fmt: skip
    proc = subprocess.Popen(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(REPO / "bench" / "paced.lua"), url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "WRK_DELAY_MS": str(max(1, round(32 / rate * 1000)))},
    )  # fmt: skip
    samples: list[list[float]] = []
    while proc.poll() is None:
        samples.append([round(rss_mib(pid), 1) for pid in pids.values()])
        time.sleep(10)
    first, last = samples[min(1, len(samples) - 1)], samples[-1]  # skip the warm-up sample
    growth = max((b - a) / a for a, b in zip(first, last, strict=True))
    say(f"  RSS ({', '.join(pids)}) {first} -> {last} MiB (growth {growth:.1%})")
    return {
        "seconds": seconds,
        "rate": round(rate),
        "processes": list(pids),
        "rss_samples_mib": samples,
        "growth": round(growth, 3),
        "flat": growth < 0.10,
    }


# -- reporting ----------------------------------------------------------------------------


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mosquitto_version() -> str:
    from devkit.broker import mosquitto_binary

    out = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True).stdout
    match = re.search(r"mosquitto version (\S+)", out)
    return match.group(1) if match else "unknown"


def add_row(text: str, mark: str, row: str) -> str:
    """``text`` with ``row`` first in the table that follows ``mark`` (if there is one)."""
    if mark not in text:
        return text
    head, _, rest = text.partition(mark)
    table_header, _, rows = rest.partition("|---")
    separator, _, rows = rows.partition("\n")
    return f"{head}{mark}{table_header}|---{separator}\n{row}\n{rows}"


def write_docs(result: dict[str, Any]) -> None:
    peak, latency = result["peak"], {row["fraction"]: row for row in result["latency"]}
    tail = result.get("tail", {})
    row = (
        f"| {result['date']} | {result['machine']['cores']} | {result['workers']} "
        f"| {result['ceiling']['rps']:,.0f} | **{peak['rps']:,.0f}** | {peak['ratio_to_ceiling']:.0%} "
        f"| {latency[0.5]['p50_ms']} / {latency[0.5]['p99_ms']} / {latency[0.5]['p999_ms']} "
        f"(bare ASGI: {result['ceiling']['latency'][1]['p99_ms']} p99) "
        f"| {peak['acknowledged']:,} / {peak['delivered']:,} "
        f"| {tail.get('json', {}).get('lost', '–')} / {tail.get('aggregate', {}).get('lost', '–')} "
        f"| {', '.join(f'{v:.0f}' for v in result['rss_mib'].values())} |"
    )
    text = add_row(DOC.read_text(), MARK, row)
    cost, catch_up = result.get("archive_cost"), result.get("catch_up", {})
    if cost and catch_up:

        def rate(name: str) -> str:
            figures = catch_up.get(name)
            return f"{figures['events_per_s']:,}" if figures else "–"

        replayed = catch_up.get("replay", {})
        text = add_row(text, ARCHIVE_MARK, (
            f"| {result['date']} | {result['machine']['cores']} | {cost['on_rps']:,} "
            f"| {cost['off_rps']:,} | **{cost['ratio']:.2f}** | {cost['subscriber_ratio']:.2f} "
            f"| {cost['on_rps'] / result['ceiling']['rps']:.2f} "
            f"| {rate('sqlite')} | {rate('postgres')} "
            f"| {replayed.get('tail_events_per_s', 0):,} | {replayed.get('ndjson_events_per_s', 0):,} |"
        ))  # fmt: skip
    DOC.write_text(text)
    try:
        chart(result)
    except ImportError:  # pragma: no cover - matplotlib is a dev dependency
        say("matplotlib not installed: no chart")


def chart(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["latency"]
    rates = [r["achieved_rps"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
        ax.plot(rates, [r[key] for r in rows], marker="o", label=f"tracker {label}")
    floor = result["ceiling"]["latency"]
    ax.plot([r["achieved_rps"] for r in floor], [r["p99_ms"] for r in floor], marker="x",
            linestyle="--", color="grey", label="bare ASGI p99 (same load)")  # fmt: skip
    ax.axhline(10, color="grey", linestyle=":", linewidth=1, label="p99 target (10 ms)")
    ax.set_xlabel("load (req/s achieved, every request published and acknowledged)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(
        f"tracker, {result['workers']} workers, {result['machine']['cores']} cores ({result['date']})"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(CHART)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--duration",
    default=10.0,
    show_default=True,
    type=click.FloatRange(2, 120),
    help="Seconds per phase.",
)
@click.option("--connections", default=64, show_default=True, type=click.IntRange(1, 1024))
@click.option(
    "--soak",
    default=0,
    show_default=True,
    type=click.IntRange(0, 3600),
    help="Also soak SECONDS at half the peak rate.",
)
@click.option(
    "--archive/--no-archive",
    default=True,
    show_default=True,
    help="The event archive inside the tracker (TRACKER_ARCHIVE), as `make run` has it; "
    "--no-archive for the cost of archiving (implies --no-docs).",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="Also the 3-node RabbitMQ cluster: peak, zero-loss check, one node kill.",
)
@click.option(
    "--backlog",
    default=500_000,
    show_default=True,
    type=click.IntRange(1_000, 5_000_000),
    help="Events acknowledged while the archive is stopped, for its catch-up rate.",
)
@click.option("--no-docs", is_flag=True, help="Do not update docs/benchmarks.md and the chart.")
@click.option(
    "--broker-setting",
    multiple=True,
    help="Extra mosquitto.conf line for an experiment, e.g. 'autosave_interval 30' (implies --no-docs).",
)
def main(
    workers: int,
    duration: float,
    connections: int,
    soak: int,
    archive: bool,
    cluster: bool,
    backlog: int,
    no_docs: bool,
    broker_setting: tuple[str, ...],
) -> None:
    """Benchmark the whole system on 127.0.0.1; exit 1 when an acknowledged event was lost."""
    for tool in ("wrk",):
        if not shutil.which(tool):
            raise click.ClickException(f"{tool} not found: apt-get install {tool}")
    result = run(
        {
            "workers": workers,
            "duration": duration,
            "connections": connections,
            "soak": soak,
            "archive": archive,
            "cluster": cluster,
            "backlog": backlog,
            "broker_extra": "".join(f"{line}\n" for line in broker_setting),
        }
    )
    result["broker_settings"] = list(broker_setting)
    result["archive"] = archive
    no_docs = no_docs or bool(broker_setting) or not archive
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    say(f"results: {path.relative_to(REPO)} (logs in {result['logs']})")
    if not no_docs:
        write_docs(result)
        say(f"updated {DOC.relative_to(REPO)} and {CHART.relative_to(REPO)}")
    archives = [
        figures
        for figures in (
            result["peak"].get("archive"),
            result.get("archive_run"),
            result.get("postgres", {}).get("archive"),
            result.get("cluster", {}).get("archive"),
        )
        if figures
    ]
    cluster_run = result.get("cluster", {})
    lost = (
        result["peak"]["lost"]
        + result["batch"]["lost"]
        + sum(t["lost"] for t in result["tail"].values())
        + sum(figures["lost"] for figures in archives)
        + sum(c.get("lost", 0) for k, c in result.get("catch_up", {}).items() if k != "replay")
        + result.get("postgres", {}).get("lost", 0)
        + cluster_run.get("lost", 0)
        + cluster_run.get("node_kill", {}).get("lost", 0)
    )
    p99_half = next(r["p99_ms"] for r in result["latency"] if r["fraction"] == 0.5)
    checks = {
        "zero loss (acknowledged == delivered)": lost == 0,
        "≥ 20,000 req/s end to end": result["peak"]["rps"] >= 20_000,
        "≥ 40 % of the bare-ASGI ceiling": result["peak"]["ratio_to_ceiling"] >= 0.40,
        "p99 ≤ 10 ms at half the peak": p99_half <= 10,
        "batches of 100 ≥ 3x the events/s of single GETs": (
            result["batch"]["events_per_s"] >= 3 * result["peak"]["rps"]
        ),
        "every request with a login answered 200": result["auth"]["non_2xx"] == 0,
        "mqtt-tail kept up (drained ≤ 2 s, nothing lost)": all(
            t["lost"] == 0 and t["drain_s"] <= 2 for t in result["tail"].values()
        ),
    }
    if archives:
        checks["every acknowledged event archived once"] = all(
            f["lost"] == 0 and f["duplicates"] == 0 for f in archives
        )
        checks["archive lag p99 ≤ 2 s during the peak"] = all(
            f.get("lag_p99_s", 0) <= 2 for f in archives
        )
    if "archive_cost" in result:
        checks["archive on ≥ 0.90 × archive off (best of 2 alternating rounds)"] = (
            result["archive_cost"]["ratio"] >= 0.90
        )
        checks["archive on ≥ 0.45 × the bare-ASGI ceiling"] = (
            result["archive_cost"]["on_rps"] >= 0.45 * result["ceiling"]["rps"]
        )
    catch_up = result.get("catch_up", {})
    for name, floor in (("sqlite", 50_000), ("postgres", 30_000)):
        if name in catch_up:
            checks[f"archive catch-up on {name} ≥ {floor:,} events/s, none lost or doubled"] = (
                catch_up[name]["events_per_s"] >= floor
                and catch_up[name]["lost"] == 0
                and catch_up[name]["duplicates"] == 0
            )
    if "replay" in catch_up:
        checks["replay: mqtt-tail --since ≥ 80,000 events/s"] = (
            catch_up["replay"]["tail_events_per_s"] >= 80_000
        )
        checks["replay: GET /events NDJSON ≥ 100,000 events/s"] = (
            catch_up["replay"]["ndjson_events_per_s"] >= 100_000
        )
    if "node_kill" in cluster_run:
        checks["a node kill on the cluster loses no acknowledged event"] = (
            cluster_run["node_kill"]["lost"] == 0
        )
    if soak:
        checks["worker and archive RSS flat over the soak (< 10 % growth)"] = result["soak"]["flat"]
    for name, ok in checks.items():
        say(f"{'PASS' if ok else 'MISS'}  {name}")
    # Archived twice is wrong too, though nothing was lost: it fails the run as a loss does.
    if lost or any(figures["duplicates"] for figures in archives):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
