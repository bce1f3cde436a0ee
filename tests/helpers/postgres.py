"""A started throwaway PostgreSQL for a fixture, or a skip where there is none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.postgres import PostgresCluster


def throwaway_postgres() -> Iterator[PostgresCluster]:
    """A started cluster for a fixture to yield from; skips without the server binaries."""
    try:
        cluster = PostgresCluster()
    except FileNotFoundError:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    cluster.start()
    yield cluster
    cluster.destroy()
