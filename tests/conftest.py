from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.broker import Mosquitto

COMPOSE_TESTS = Path(__file__).parent / "compose"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--compose",
        action="store_true",
        help="also run tests/compose: both compose stacks under podman (make test-compose)",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/compose builds images and starts a dozen containers (minutes): `make test`
    never collects it; `make test-compose` asks for it (--compose), as does naming it."""
    if collection_path == COMPOSE_TESTS and not config.getoption("--compose"):
        return True
    return None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto for one test, anonymous access, project durability settings."""
    mosquitto = Mosquitto(tmp_path / "broker")
    mosquitto.start()
    yield mosquitto
    mosquitto.kill()
