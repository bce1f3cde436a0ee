"""TLS listener: the API (mqtts://) and mqtt-tail (--tls --cafile) through a throwaway CA."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.api import api_client
from tests.helpers.broker import Mosquitto
from tests.helpers.net import free_port
from tests.helpers.tail import Tail
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
