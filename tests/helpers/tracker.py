"""The tracker API as a real process (uvicorn, optionally several workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx

from devkit import metrics
from devkit.net import free_port
from devkit.waiting import wait_until


class TrackerProcess:
    def __init__(
        self,
        workdir: Path,
        mqtt_url: str,
        database_url: str,
        *,
        wait_for: str = "/readyz",
        **env: str,
    ) -> None:
        self.wait_for = wait_for
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"tracker-{self.port}.log"
        self.env = {
            **os.environ,
            "TRACKER_PORT": str(self.port),
            "TRACKER_MQTT_URL": mqtt_url,
            "TRACKER_DATABASE_URL": database_url,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TrackerProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tracker_api"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            lambda: self.get_ok(self.wait_for), timeout=20, message=f"tracker not up:\n{self.log()}"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get_ok(self, path: str) -> bool:
        try:
            return httpx.get(self.base_url + path, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str, **labels: str) -> float:
        """The matching samples from /metrics, summed (0 when absent)."""
        return metrics.value(httpx.get(self.base_url + "/metrics", timeout=2).text, name, **labels)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL the server and its workers: no clean shutdown at all."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
