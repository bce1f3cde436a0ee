"""TLS listener: the API (mqtts://) and mqtt-tail (--tls --cafile) through a throwaway CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.broker import Mosquitto
from devkit.net import free_port
from devkit.tail import Tail
from tests.helpers.api import api_client
from tests.helpers.history_stub import HistoryStub
from tests.helpers.tls import Certificates, make_certificates


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    try:
        return make_certificates(tmp_path / "tls")
    except FileNotFoundError:
        pytest.skip("openssl is not installed")


@pytest.fixture
def tls_broker(tmp_path: Path, certificates: Certificates) -> Iterator[Mosquitto]:
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "broker",
        extra=(
            f"listener {tls_port} 127.0.0.1\n"
            f"cafile {certificates.ca}\ncertfile {certificates.cert}\nkeyfile {certificates.key}\n"
        ),
    )
    broker.tls_port = tls_port  # type: ignore[attr-defined]
    broker.start()
    yield broker
    broker.kill()


def test_api_and_tail_connect_through_the_tls_listener(
    tls_broker: Mosquitto, certificates: Certificates, tmp_path: Path
) -> None:
    port = tls_broker.tls_port  # type: ignore[attr-defined]
    tail = Tail(tmp_path / "tail", "--json", "--tls", "--cafile", str(certificates.ca), port=port)
    mqtt_url = f"mqtts://127.0.0.1:{port}"
    with tail, api_client(tmp_path, mqtt_url, mqtt_cafile=certificates.ca) as api:
        tail.wait_subscribed()
        sent = api.get("/1", params={"data": "over TLS"}).json()["event"]["eventId"]

        assert tail.wait_for_events(1) == [sent]


def test_an_untrusted_certificate_is_refused(tls_broker: Mosquitto, tmp_path: Path) -> None:
    port = tls_broker.tls_port  # type: ignore[attr-defined]
    with api_client(tmp_path, f"mqtts://127.0.0.1:{port}", wait_ready=False) as api:
        assert api.get("/readyz").json()["broker"] is False
        assert api.get("/1", params={"data": "x"}).status_code == 503


LOGIN = {"MQTT_TAIL_USERNAME": "reader", "MQTT_TAIL_PASSWORD": "r-secret"}


def test_the_login_never_goes_to_a_plain_http_api_beside_a_tls_broker_unless_asked(
    tls_broker: Mosquitto, certificates: Certificates, tmp_path: Path
) -> None:
    port = tls_broker.tls_port  # type: ignore[attr-defined]
    tls = ("--tls", "--cafile", str(certificates.ca), "--since", "1m")
    with HistoryStub() as api:
        with Tail(tmp_path / "refused", *tls, "--api", api.url, port=port, env=LOGIN) as refused:
            assert refused.process.wait(15) == 2
        assert api.requests == []  # refused before anything was sent

        with Tail(tmp_path / "asked", *tls, "--api", api.url, "--insecure-api", port=port,
                  env=LOGIN) as asked:  # fmt: skip
            asked.wait_for_stderr("replayed 0 events")
            assert asked.terminate() == 0
    errors = [line for line in refused.stderr().splitlines() if line.startswith("Error")]
    assert errors == [
        f"Error: --api {api.url} is plain HTTP while the broker link is TLS: the login would "
        "cross the network in clear; use an https:// URL, or --insecure-api to accept that"
    ]
    assert api.requests and api.requests[0].headers["Authorization"].startswith("Basic ")
