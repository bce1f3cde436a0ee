from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers.accounts import seeded_sqlite
from tests.helpers.fakes import FakePublisher
from tracker_api.app import create_app
from tracker_api.config import Settings, load_settings


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    url, engine = seeded_sqlite(tmp_path / "tracker.db")
    yield url, engine
    engine.dispose()


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
def settings(request: pytest.FixtureRequest, database: tuple[str, Engine]) -> Settings:
    """Every API test runs against both ways of serving the event routes."""
    return load_settings(database_url=database[0], fast_path=request.param, account_cache_ttl=60.0)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(
    settings: Settings, publisher: FakePublisher, database: tuple[str, Engine]
) -> Iterator[TestClient]:
    with TestClient(create_app(settings, publisher=publisher, engine=database[1])) as client:
        yield client
