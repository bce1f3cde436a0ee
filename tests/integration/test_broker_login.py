"""A login the broker refuses reads as such in /readyz and the log, not as an outage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from devkit.broker import Mosquitto
from devkit.net import free_port
from devkit.waiting import wait_until
from tests.helpers.api import api_client
from tracker_api.passwords import PasswordFile


@pytest.mark.parametrize("login", ["", "tracker:wrong@"], ids=["no-credentials", "wrong-password"])
def test_a_refused_login_says_not_authorised_in_readyz_and_the_log(
    tmp_path: Path, login: str, caplog: pytest.LogCaptureFixture
) -> None:
    passwords = PasswordFile(tmp_path / "passwd")
    passwords.set("tracker", "right")
    passwords.save()
    broker = Mosquitto(tmp_path / "broker", password_file=passwords.path)
    broker.start()
    try:
        url = f"mqtt://{login}127.0.0.1:{broker.port}"
        with caplog.at_level(logging.WARNING), api_client(tmp_path, url, wait_ready=False) as api:
            ready = wait_until(
                lambda: (r := api.get("/readyz")).json()["broker_status"] != "connecting" and r,
                timeout=5,
            )
    finally:
        broker.kill()

    assert ready.status_code == 503
    assert ready.json()["broker_status"] == "refused: not authorised"
    assert "refused: not authorised" in caplog.text
    assert "unreachable" not in caplog.text


def test_an_unreachable_broker_says_unreachable(tmp_path: Path) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    with api_client(tmp_path, url, wait_ready=False) as api:
        ready = api.get("/readyz")

    assert ready.status_code == 503
    assert ready.json()["broker_status"].startswith("unreachable: ")
