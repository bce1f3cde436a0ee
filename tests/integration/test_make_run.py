"""`make run` (scripts/devstack.py): credentials, seeded database, broker and API, Ctrl-C."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.mqtt_peer import Peer
from tests.helpers.net import free_port, port_open
from tests.helpers.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


class DevStack:
    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.broker_port, self.api_port = free_port(), free_port()
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "MQTT_TAIL_"))
        }
        self.env.update(
            VAR_DIR=str(var_dir), MQTT_PORT=str(self.broker_port), TRACKER_PORT=str(self.api_port)
        )
        self.output = var_dir.parent / f"devstack-{self.api_port}.log"

    def start(self) -> subprocess.Popen[bytes]:
        offset = self.output.stat().st_size if self.output.exists() else 0
        with open(self.output, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, str(REPO / "scripts" / "devstack.py")],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: (
                "Ctrl-C stops everything" in self.output.read_text()[offset:]
                or process.poll() is not None
            ),
            timeout=40,
        )
        assert process.poll() is None, self.output.read_text()
        return process

    def credentials(self) -> dict[str, str]:
        text = (self.var_dir / "credentials.env").read_text()
        return dict(line.split("=", 1) for line in text.splitlines())


def anonymous_connect_result(port: int) -> str:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    codes: list[str] = []
    client.on_connect = lambda c, u, f, rc, p: codes.append(str(rc))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(lambda: codes, timeout=5)
    finally:
        client.loop_stop()
        client.disconnect()
    return codes[0]


@pytest.mark.slow
def test_make_run_brings_the_system_up_secured_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "var")
    process = stack.start()
    try:
        credentials = stack.credentials()
        mode = stat.S_IMODE((stack.var_dir / "credentials.env").stat().st_mode)
        assert mode == 0o600
        assert anonymous_connect_result(stack.broker_port) == "Not authorized"

        with Peer(
            stack.broker_port,
            "track/#",
            username="reader",
            password=credentials["MQTT_TAIL_PASSWORD"],
        ) as reader:
            response = httpx.get(f"http://127.0.0.1:{stack.api_port}/1", params={"data": "hi"})
            assert response.status_code == 200
            (message,) = reader.wait_for(1)
        assert message.event == response.json()["event"]
        output = stack.output.read_text()
        assert f"curl 'http://127.0.0.1:{stack.api_port}/1?data=hello'" in output
        assert "mqtt-tail --account +" in output
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
    assert not port_open(stack.broker_port)
    assert not port_open(stack.api_port)

    # A second run reuses credentials and data and is up within seconds.
    started = time.monotonic()
    process = stack.start()
    try:
        assert time.monotonic() - started < 15
        assert stack.credentials() == credentials
        assert stack.output.read_text().count("created local MQTT credentials") == 1
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
