"""The tracker app in-process (TestClient, so its lifespan runs) on a seeded SQLite file."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from devkit.waiting import wait_until
from tracker_api.app import create_app
from tracker_api.config import load_settings

from .accounts import seeded_sqlite


def seeded_database(directory: Path) -> str:
    url, engine = seeded_sqlite(directory / "tracker.db")
    engine.dispose()
    return url


def database_to_repair(directory: Path) -> tuple[str, Callable[[], None]]:
    """A database URL whose lookups fail until ``repair()`` puts seeded accounts there."""
    good = Path(seeded_database(directory).removeprefix("sqlite:///"))
    live = directory / "live.db"
    live.write_bytes(b"not a database" * 100)
    return f"sqlite:///{live}", lambda: shutil.copy(good, live)


@contextmanager
def api_client(
    directory: Path, mqtt_url: str, *, wait_ready: bool = True, **settings: Any
) -> Iterator[TestClient]:
    """``settings`` override the defaults, ``database_url`` included."""
    if "database_url" not in settings:
        settings["database_url"] = seeded_database(directory)
    with TestClient(create_app(load_settings(mqtt_url=mqtt_url, **settings))) as client:
        if wait_ready:
            wait_until(lambda: client.get("/readyz").status_code == 200, timeout=5)
        yield client
