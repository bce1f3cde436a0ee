"""Backlog drain rate of mqtt-tail: events/s of `--json > /dev/null` and `--aggregate`
emptying a queued backlog from a real Mosquitto (project settings).

    python -m bench.tail_drain [EVENTS] [ROUNDS] [OLD_SOURCE_TREE]

Each variant subscribes once under its own client id and disconnects; the backlog is
then published once and queued for every session, so all variants drain the same
messages from the same broker in the same run. A variant's time runs from the start of
the process to its exit (``--count EVENTS``), connection and shutdown included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devkit.broker import Mosquitto
from devkit.tail import Publisher, Tail, event

MODES = {"json": ["--json"], "aggregate": ["--aggregate", "--every", "5000"]}


def command(source: str | None) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTT_TAIL_")}
    if source is None:
        return [str(Path(sys.executable).with_name("mqtt-tail"))], env
    env["PYTHONPATH"] = source
    return [sys.executable, "-c", "from subscriber.cli import main; main()"], env


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    old = sys.argv[3] if len(sys.argv) > 3 else None
    versions = {"new": None, **({"old": old} if old else {})}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        broker.start()
        try:
            results: dict[str, list[float]] = {}
            for r in range(rounds):
                ids = [f"drain-{v}-{m}-{r}" for v in versions for m in MODES]
                for client_id in ids:
                    with Tail(Path(tmp), "--client-id", client_id, port=broker.port) as tail:
                        tail.wait_subscribed()
                        tail.terminate()
                with Publisher(broker.port) as publisher:
                    publisher.publish([event(str(i % 10), i, f"r{r}") for i in range(n)], 120)
                for version, source in versions.items():
                    for mode, extra in MODES.items():
                        argv, env = command(source)
                        argv += [
                            "--port",
                            str(broker.port),
                            "-q",
                            "--client-id",
                            f"drain-{version}-{mode}-{r}",
                            "--count",
                            str(n),
                            *extra,
                        ]
                        started = time.monotonic()
                        subprocess.run(
                            argv, env=env, stdout=subprocess.DEVNULL, check=True, timeout=300
                        )
                        rate = n / (time.monotonic() - started)
                        results.setdefault(f"{version} {mode}", []).append(rate)
                        print(
                            f"round {r + 1}: {version:3} {mode:9} {rate:8,.0f} events/s", flush=True
                        )
            for name, rates in results.items():
                print(f"{name:14} best {max(rates):8,.0f}  mean {sum(rates) / len(rates):8,.0f}")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
