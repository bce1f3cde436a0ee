"""The ingest lease: one holder at a time, on a real PostgreSQL and on real lock files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.postgres import PostgresCluster
from tests.helpers.postgres import throwaway_postgres
from tracker_api.consumers.lease import FileLease, PostgresLease, lease_for, lock_key


def test_a_file_lease_has_one_holder_until_it_is_released(tmp_path: Path) -> None:
    first, second = FileLease(tmp_path, "tracker-ingest"), FileLease(tmp_path, "tracker-ingest")
    other = FileLease(tmp_path, "another-ingest")

    assert first.try_acquire() and first.try_acquire()  # asking again keeps it
    assert not second.try_acquire() and not second.held()
    assert other.try_acquire()  # another name, another lease
    first.release()
    first.release()  # a second release is harmless
    assert not first.held()
    assert second.try_acquire() and second.held()


def test_the_lease_follows_the_database(tmp_path: Path) -> None:
    assert isinstance(lease_for(f"sqlite:///{tmp_path}/t.db", tmp_path, "x"), FileLease)
    lease = lease_for("postgresql+psycopg://u@127.0.0.1:1/db", tmp_path, "x")
    assert isinstance(lease, PostgresLease)
    assert lease.key == lock_key("x") != lock_key("y")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


@pytest.mark.postgres
def test_a_postgres_lease_has_one_holder_and_is_lost_with_the_database(
    postgres: PostgresCluster,
) -> None:
    first = PostgresLease(postgres.url, "tracker-ingest")
    second = PostgresLease(postgres.url, "tracker-ingest")

    assert first.try_acquire() and first.held()
    assert not second.try_acquire() and not second.held()
    first.release()
    assert not first.held()
    assert second.try_acquire() and second.held()

    postgres.stop()
    try:
        assert not second.held()  # the session, and the lock with it, are gone
        assert not first.try_acquire()  # no database: nobody gets the lease
    finally:
        postgres.start()
    assert first.try_acquire()  # a holder that died released it
    first.release()
