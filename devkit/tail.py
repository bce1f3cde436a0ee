"""Run ``mqtt-tail`` as a real process, and publish tracker-shaped events with paho.

Output goes to files (no pipes to drain), which the tests and the benchmark read while
the process runs.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from .mqtt_client import paho_client
from .waiting import wait_until

TAIL = Path(sys.executable).with_name("mqtt-tail")
_ids = itertools.count()


def event(account: str, n: int, prefix: str = "ev", data: str | None = None) -> dict[str, Any]:
    return {
        "eventId": f"{prefix}-{n:08d}",
        "accountId": account,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "data": data if data is not None else f"data {n}",
    }


class Tail:
    """One ``mqtt-tail`` process; ``--json`` output parsed on demand. With ``terminal``,
    its stdout is a pseudo-terminal (as in a person's shell), copied to the output file."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        port: int,
        env: dict[str, str] | None = None,
        terminal: bool = False,
    ):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        n = next(_ids)
        self.out_path = workdir / f"tail-{n}.out"
        self.err_path = workdir / f"tail-{n}.err"
        self.args = ["--port", str(port), "--keepalive", "1", "--reconnect-min", "0.05",
                     "--reconnect-max", "0.5", *args]  # fmt: skip
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MQTT_TAIL_")}
        environment.update(env or {})
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            if not terminal:
                self.process = subprocess.Popen(
                    [str(TAIL), *self.args], stdout=out, stderr=err, env=environment
                )
                return
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            self.process = subprocess.Popen(
                [str(TAIL), *self.args], stdout=slave, stderr=err, env=environment
            )
            os.close(slave)
            threading.Thread(target=self._copy_terminal, args=(master,), daemon=True).start()

    def _copy_terminal(self, master: int) -> None:
        with self.out_path.open("ab") as out:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the process closed its end
                    chunk = b""
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
        os.close(master)

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """Complete JSON lines written so far."""
        data = self.out_path.read_bytes()
        lines = data.split(b"\n")[:-1]  # the last one may be incomplete
        return [orjson.loads(line) for line in lines if line]

    def event_ids(self) -> list[str]:
        return [record["eventId"] for record in self.records() if "eventId" in record]

    def wait_for_stderr(self, text: str, timeout: float = 10) -> None:
        wait_until(
            lambda: text in self.stderr() or not self.alive,
            timeout=timeout,
            message=f"{text!r} not on stderr:\n{self.stderr()}",
        )
        assert text in self.stderr(), f"mqtt-tail exited:\n{self.stderr()}"

    def wait_subscribed(self, timeout: float = 10) -> None:
        self.wait_for_stderr("subscribed to", timeout)

    def wait_for_events(self, n: int, timeout: float = 15) -> list[str]:
        wait_until(
            lambda: len(self.event_ids()) >= n or not self.alive,
            timeout=timeout,
            message=f"fewer than {n} events shown: {len(self.event_ids())}\n{self.stderr()}",
        )
        return self.event_ids()

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM, as Ctrl-C would: clean DISCONNECT, session kept."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


class Publisher:
    """Publishes at QoS 1 like the tracker; ``publish`` returns once the broker acknowledged."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = paho_client(client_id)
        # paho loses messages past 65,535 outstanding ids: keep the window well below.
        self.client.max_inflight_messages_set(1000)
        self._acked = 0
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, *args: Any) -> None:
        with self._lock:
            self._acked += 1

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_raw(self, topic: str, payloads: list[bytes], timeout: float = 30) -> None:
        start = self._acked
        for i, payload in enumerate(payloads):
            while i - (self._acked - start) > 20_000:
                time.sleep(0.001)
            self.client.publish(topic, payload, qos=1)
        wait_until(lambda: self._acked - start >= len(payloads), timeout=timeout)

    def publish(self, events: list[dict[str, Any]], timeout: float = 30) -> set[str]:
        start = self._acked
        for i, item in enumerate(events):
            while i - (self._acked - start) > 20_000:
                time.sleep(0.001)
            self.client.publish(f"track/{item['accountId']}", orjson.dumps(item), qos=1)
        wait_until(
            lambda: self._acked - start >= len(events),
            timeout=timeout,
            message=f"broker acknowledged {self._acked - start} of {len(events)}",
        )
        return {item["eventId"] for item in events}
