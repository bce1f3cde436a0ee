"""Accounts on a real PostgreSQL: same models, same answers as SQLite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from devkit.postgres import PostgresCluster
from devkit.waiting import wait_until
from tests.helpers.fakes import FakePublisher
from tests.helpers.postgres import throwaway_postgres
from tracker_api.app import create_app
from tracker_api.config import load_settings

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


def seed(url: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "data" / "seed.py"), "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_seed_creates_schema_and_is_idempotent_on_postgres(postgres: PostgresCluster) -> None:
    first = seed(postgres.url, "--count", "30")
    second = seed(postgres.url, "--count", "30")

    assert "30 accounts (3 inactive): 30 created, 0 updated, 0 unchanged" in first
    assert "0 created, 0 updated, 30 unchanged" in second
    assert "postgres@127.0.0.1" in first  # the URL is shown without a password


def test_api_answers_from_postgres_and_503_when_it_goes_away(postgres: PostgresCluster) -> None:
    seed(postgres.url, "--count", "30")
    settings = load_settings(database_url=postgres.url, account_cache_ttl=0)
    publisher = FakePublisher()

    with TestClient(create_app(settings, publisher=publisher)) as client:
        assert client.get("/7", params={"data": "pg"}).status_code == 200
        assert client.get("/10", params={"data": "pg"}).status_code == 403
        assert client.get("/31", params={"data": "pg"}).status_code == 404
        assert client.get("/readyz").json()["database"] is True

        postgres.stop()
        try:
            down = client.get("/7", params={"data": "pg down"})
            ready = client.get("/readyz")
        finally:
            postgres.start()

        assert down.status_code == 503
        assert down.json() == {"detail": "Account database unavailable; retry later"}
        assert ready.status_code == 503
        # The pool reconnects by itself once the server is back.
        wait_until(lambda: client.get("/7", params={"data": "back"}).status_code == 200, timeout=10)

    assert [topic for topic, _ in publisher.published] == ["track/7", "track/7"]
