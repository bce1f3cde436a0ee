"""The tracker's peak at several commits, side by side in one run: the before/after of a
change that should cost nothing (a code move, a refactor).

    python -m bench.compare fb6b44e 31be7d1 HEAD

Each commit is checked out into a temporary worktree and served from it (the checkout's
virtualenv, ``PYTHONPATH`` on the worktree) with 2 workers and no archive, on one
anonymous, in-memory Mosquitto, so only the request path differs; then ``wrk -t2 -c64``
after a warm-up, in rounds whose order alternates. It prints each round and each commit's
best and median; the run's spread is the noise to judge a difference against.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import click
import httpx2 as httpx

from bench.stack import REPO, process, say, wrk
from devkit.broker import mosquitto_binary
from devkit.net import free_port, port_open
from devkit.waiting import wait_until


def worktree(stack: ExitStack, workdir: Path, revision: str) -> Path:
    """``revision`` checked out under ``workdir``, removed when ``stack`` closes."""
    tree = workdir / revision.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision],
        check=True, capture_output=True,
    )  # fmt: skip
    stack.callback(
        subprocess.run,
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
        capture_output=True,
    )
    return tree


def seeded(tree: Path, database: Path) -> str:
    url = f"sqlite:///{database}"
    subprocess.run(
        [sys.executable, "data/seed.py", "--database-url", url],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True, capture_output=True,
    )  # fmt: skip
    return url


def broker(stack: ExitStack, workdir: Path) -> int:
    """An anonymous Mosquitto without persistence: the same broker for every commit."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 0\nmax_queued_messages 0\n"
    )
    stack.enter_context(process([mosquitto_binary(), "-c", str(conf)], workdir / "mosquitto.log"))
    wait_until(lambda: port_open(port), 10, message="mosquitto", error=click.ClickException)
    return port


def peak(tree: Path, database_url: str, mqtt_port: int, log: Path, seconds: float) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env |= {
        "PYTHONPATH": str(tree),
        "TRACKER_PORT": str(port),
        "TRACKER_WORKERS": "2",
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_MQTT_URL": f"mqtt://127.0.0.1:{mqtt_port}",
        "TRACKER_ARCHIVE": "false",
        "TRACKER_LOG_LEVEL": "WARNING",
        "TRACKER_STATE_DIR": str(log.parent / f"state-{log.stem}"),
    }
    url = f"http://127.0.0.1:{port}/1?data=bench"
    with process([sys.executable, "-m", "tracker_api"], log, env=env, cwd=tree):

        def answers() -> bool:
            try:
                return port_open(port) and httpx.get(url, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, 30, 0.2, f"the tracker ({log})", error=click.ClickException)
        wrk(url, 2, 64)  # warm-up
        return float(wrk(url, seconds, 64)["rps"])


@click.command()
@click.argument("revisions", nargs=-1, required=True)
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 10))
@click.option("--duration", default=8.0, show_default=True, type=click.FloatRange(2, 60))
def main(revisions: tuple[str, ...], rounds: int, duration: float) -> None:
    """Peak req/s of the tracker at each of REVISIONS (git commits), alternating."""
    workdir = Path(tempfile.mkdtemp(prefix="tracker-compare-"))
    results: dict[str, list[float]] = {revision: [] for revision in revisions}
    with ExitStack() as stack:
        trees = {revision: worktree(stack, workdir, revision) for revision in revisions}
        databases = {
            revision: seeded(tree, workdir / f"{tree.name}.db") for revision, tree in trees.items()
        }
        mqtt_port = broker(stack, workdir)
        for round_ in range(1, rounds + 1):
            order = revisions if round_ % 2 else tuple(reversed(revisions))
            for revision in order:
                log = workdir / f"{trees[revision].name}-{round_}.log"
                rps = peak(trees[revision], databases[revision], mqtt_port, log, duration)
                results[revision].append(rps)
                say(f"round {round_}, {revision}: {rps:,.0f} req/s")
    for revision, values in results.items():
        median = sorted(values)[len(values) // 2]
        say(
            f"{revision}: best {max(values):,.0f}, median {median:,.0f} req/s ({len(values)} rounds)"
        )


if __name__ == "__main__":
    main()
