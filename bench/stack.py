"""The pieces every benchmark phase shares: the stack (a secured Mosquitto, the tracker's
settings and logins), processes with logs, wrk runs, CPU and memory readings, and the
zero-loss bookkeeping. ``bench/__main__.py`` runs the phases; ``bench/cluster.py`` adds
the RabbitMQ cluster's."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx2 as httpx

from bench import archive
from devkit.broker import Mosquitto
from devkit.net import port_open
from devkit.waiting import wait_until
from tracker_api.passwords import PasswordFile

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EVENT_PATH = "/1?data=benchmark-event-payload"


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# -- processes ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def children_running(pid: int, marker: bytes) -> list[int]:
    """The children of ``pid`` whose command line (NUL-separated) contains ``marker``."""
    found = []
    for child in children(pid):
        try:
            if marker in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue  # gone meanwhile
    return found


@contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@dataclass
class CpuMeter:
    """CPU seconds used by named processes between start() and stop()."""

    pids: dict[str, int]
    before: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self, seconds: float) -> dict[str, float]:
        """Percent of one core per process."""
        return {
            name: round(100 * (cpu_seconds(pid) - self.before[name]) / seconds, 1)
            for name, pid in self.pids.items()
        }


# -- load generators ----------------------------------------------------------------------


def wrk(url: str, seconds: float, connections: int, *options: str) -> dict[str, Any]:
    """A closed-loop run at full speed; ``options`` go to wrk (a script, headers)."""
    started = time.monotonic()
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", *options, url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    elapsed = time.monotonic() - started
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        return round(float(match.group(1)) * units[match.group(2)], 3) if match else float("nan")

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": total,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "seconds": round(elapsed, 2),
    }


def wrk_at_rate(url: str, rate: float, seconds: float, connections: int = 64) -> dict[str, Any]:
    """A fixed offered load: each connection pauses between requests (bench/paced.lua),
    so the latency of each request is measured without the queueing a saturated
    closed-loop run adds. wrk's own histogram gives p50 / p99 / p99.9."""
    pause_ms = max(1, round(connections / rate * 1000))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "-s", str(REPO / "bench" / "paced.lua"), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
        env={**os.environ, "WRK_DELAY_MS": str(pause_ms)},
    ).stdout  # fmt: skip
    match = re.search(r"^PACED (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if match is None:
        raise click.ClickException(f"unexpected wrk output:\n{out}")
    requests, micros, bad, p50, p99, p999, worst = (int(g) for g in match.groups())
    return {
        "offered_rps": round(connections * 1000 / pause_ms),
        "achieved_rps": round(requests / (micros / 1e6)),
        "requests": requests,
        "non_2xx": bad,
        "p50_ms": round(p50 / 1000, 3),
        "p99_ms": round(p99 / 1000, 3),
        "p999_ms": round(p999 / 1000, 3),
        "max_ms": round(worst / 1000, 3),
    }


# -- the system under test ----------------------------------------------------------------


class Stack:
    def __init__(
        self, workdir: Path, workers: int, broker_extra: str = "", archive: bool = True
    ) -> None:
        self.workdir = workdir
        self.workers = workers
        self.archive = archive
        self.broker_extra = broker_extra
        # "1": the account whose login the logins-on phase sends with.
        self.passwords = {user: secrets.token_urlsafe(12) for user in ("tracker", "reader", "1")}
        passwd = PasswordFile(workdir / "passwd")
        for user, password in self.passwords.items():
            passwd.set(user, password)
        passwd.save()
        self.broker = self.new_broker("broker")
        self.database_url = f"sqlite:///{workdir / 'tracker.db'}"
        seed(self.database_url)

    def new_broker(self, name: str) -> Mosquitto:
        return Mosquitto(
            self.workdir / name,
            password_file=self.workdir / "passwd",
            acl_file=REPO / "mqtt" / "acl",
            extra=self.broker_extra,
        )

    def serve_env(
        self, port: int, ports: list[int] | None = None, database_url: str | None = None
    ) -> dict[str, str]:
        """A tracker on ``ports`` (the nodes of one broker; default: the Mosquitto)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in ports or [self.broker.port])
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")},
            "TRACKER_PORT": str(port),
            "TRACKER_WORKERS": str(self.workers),
            "TRACKER_DATABASE_URL": database_url or self.database_url,
            "TRACKER_MQTT_URL": f"mqtt://tracker:{self.passwords['tracker']}@{hosts}",
            "TRACKER_LOG_LEVEL": "WARNING",
            # As `make run` has it: the archive in a process of its own (tracker_process).
            "TRACKER_ARCHIVE": "false",
            ARCHIVE_PROCESS: str(self.archive).lower(),
            # Ours alone: the archive's lease and the client id slots of `make run` stay apart.
            "TRACKER_STATE_DIR": str(self.workdir / "state"),
        }

    def auth_env(self, port: int) -> dict[str, str]:
        return {
            **self.serve_env(port),
            "TRACKER_HTTP_AUTH": "true",
            "TRACKER_PASSWORD_FILE": str(self.workdir / "passwd"),
        }

    def basic_auth(self) -> str:
        token = base64.b64encode(f"1:{self.passwords['1']}".encode()).decode()
        return f"Authorization: Basic {token}"

    def reader_env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("MQTT_TAIL_")},
            "MQTT_TAIL_USERNAME": "reader",
            "MQTT_TAIL_PASSWORD": self.passwords["reader"],
            "BENCH_COUNTER_PASSWORD": self.passwords["reader"],
        }


def seed(database_url: str) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "data" / "seed.py"), "--database-url", database_url],
        check=True, capture_output=True,
    )  # fmt: skip


def metrics_text(base_url: str) -> str:
    return httpx.get(base_url + "/metrics", timeout=5).text


def accepted(base_url: str) -> int:
    text = metrics_text(base_url)
    match = re.search(
        r'^tracker_requests_total\{outcome="accepted",source="http"\} ([\d.e+]+)', text, re.M
    )
    return int(float(match.group(1))) if match else 0


def read_status(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {"unique": 0, "messages": 0, "connected": False}


def drain(count: Callable[[], int], target: int, timeout: float) -> tuple[int, float]:
    """Wait until count() reaches target (or stops moving); (final count, seconds)."""
    started = time.monotonic()
    last, last_change = count(), started
    while True:
        value = count()
        now = time.monotonic()
        if value >= target or now - last_change > timeout:
            return value, round(now - started, 2)
        if value != last:
            last, last_change = value, now
        time.sleep(0.05)


def tail_json_count(path: Path) -> tuple[int, int]:
    ids = set()
    lines = 0
    with open(path, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                lines += 1
                start = line.find(b'"eventId":"') + 11
                ids.add(line[start : line.find(b'"', start)])
    return len(ids), lines


@contextmanager
def counter_process(
    stack: Stack, ports: list[int], status: Path, log: Path, ids: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """The counting subscriber on ``ports`` (one broker's nodes), connected."""
    args = [sys.executable, "-m", "bench.counter", "--username", "reader", "--status", str(status)]
    args += [arg for port in ports for arg in ("--port", str(port))]
    args += ["--ids", str(ids)] if ids else []
    with process(args, log, env={**stack.reader_env(), "PYTHONPATH": str(REPO)}) as counter:
        wait_until(
            lambda: read_status(status)["connected"],
            30,
            message="timed out waiting for the counter",
            error=click.ClickException,
        )
        yield counter


ARCHIVE_PROCESS = "BENCH_ARCHIVE_PROCESS"  # "true": tracker_process runs `tracker-api archive`


@contextmanager
def tracker_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A tracker, ready (``/readyz`` 200); first its archive, consuming, when
    ``env[ARCHIVE_PROCESS]`` says so."""
    port = int(env["TRACKER_PORT"])
    base = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        if env.get(ARCHIVE_PROCESS) == "true":
            # One metrics directory for both: the tracker's /metrics shows the archive's.
            metrics_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="metrics-"))
            env = {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
            archive_log = log.with_name(log.stem + "-archive.log")
            archive_env = {**env, "TRACKER_LOG_LEVEL": "INFO"}
            command = [sys.executable, "-m", "tracker_api", "archive"]
            stack.enter_context(process(command, archive_log, env=archive_env))
            # Consuming, or waiting for the lease another run's archive holds.
            wait_until(
                lambda: any(
                    said in archive_log.read_text(errors="replace")
                    for said in ("subscribed to ", "as a follower")
                ),
                30,
                message=f"timed out waiting for the archive ({archive_log})",
                error=click.ClickException,
            )
        tracker = stack.enter_context(process([sys.executable, "-m", "tracker_api"], log, env=env))
        wait_until(
            lambda: port_open(port) and httpx.get(base + "/readyz").status_code == 200,
            30,
            message=f"timed out waiting for the tracker ({log})",
            error=click.ClickException,
        )
        yield tracker


def settle(
    base: str,
    load: dict[str, Any],
    status: Path,
    database_url: str | None,
    lag_before: archive.Buckets,
) -> dict[str, Any]:
    """After a full-speed run on a fresh tracker, counter and database: the zero-loss
    check (every event the tracker acknowledged delivered to the counter), and with the
    archive on (``database_url``), that it caught up, each event once, and its lag during
    the run (``lag_before``: the histogram when the run started)."""
    acknowledged = accepted(base)
    delivered, drain_s = drain(lambda: int(read_status(status)["unique"]), acknowledged, 10)
    load |= {
        "acknowledged": acknowledged,
        "delivered": delivered,
        "lost": max(0, acknowledged - delivered),
        "drain_s": drain_s,
    }
    say(f"  {load['rps']:,.0f} req/s, "
        f"p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms; "
        f"acknowledged {acknowledged:,}, delivered {delivered:,}, lost {load['lost']}")  # fmt: skip
    if database_url is not None:
        rows, catch_up_s = archive.wait_rows(database_url, delivered)
        load["archive"] = archive.figures(
            rows,
            archive.archived(database_url),
            acknowledged,
            delivered,
            (lag_before, archive.lag_buckets(metrics_text(base))),
        ) | {"catch_up_s": catch_up_s}
        figures = load["archive"]
        say(f"  archive: {figures['archived']:,} archived, lost {figures['lost']}, "
            f"duplicates {figures['duplicates']}; lag p50 {figures['lag_p50_s']} s, "
            f"p99 {figures['lag_p99_s']} s; caught up {catch_up_s} s after the load")  # fmt: skip
    return load


# -- the run ------------------------------------------------------------------------------
