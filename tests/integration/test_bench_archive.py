"""The bench's archive check: lag quantiles from the tracker's histogram, and the table's
rows against the acknowledged events, on a real SQLite file."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bench import archive
from tests.helpers.accounts import seeded_sqlite
from tracker_api.storage.db import make_engine
from tracker_api.storage.event_store import Row, insert

SCRAPE = """\
tracker_archive_lag_seconds_bucket{{le="0.1"}} {a}
tracker_archive_lag_seconds_bucket{{le="1.0"}} {b}
tracker_archive_lag_seconds_bucket{{le="+Inf"}} {c}
"""


def test_lag_quantiles_count_only_what_was_observed_between_two_scrapes() -> None:
    before = archive.lag_buckets(SCRAPE.format(a=50, b=50, c=50))
    after = archive.lag_buckets(SCRAPE.format(a=100, b=150, c=150))

    # 50 new observations up to 0.1 s, 50 between 0.1 and 1 s.
    assert math.isclose(archive.quantile(before, after, 0.25), 0.05)
    assert math.isclose(archive.quantile(before, after, 0.99), 0.1 + 0.9 * 49 / 50)
    assert math.isnan(archive.quantile(after, after, 0.5))
    beyond = archive.lag_buckets(SCRAPE.format(a=0, b=0, c=10))
    assert archive.quantile({}, beyond, 0.5) == 1.0


def test_a_missing_row_is_lost_and_rows_beyond_the_delivered_are_duplicates(
    tmp_path: Path,
) -> None:
    url, _ = seeded_sqlite(tmp_path / "t.db")
    rows = [Row("1", f"e{n}", 0, "{}") for n in range(3)]
    insert(make_engine(url), rows + [Row("2", "e0", 0, "{}")])

    table = archive.archived(url)
    figures = archive.figures(table[0], table, acknowledged=5, delivered=3, lag=({}, {}))

    assert table == (4, 3)
    assert figures["lost"] == 1
    assert figures["duplicates"] == 1 + 1
    assert math.isnan(figures["lag_p50_s"])


def test_waiting_for_rows_ends_at_the_target_or_when_they_stop_coming(tmp_path: Path) -> None:
    url, _ = seeded_sqlite(tmp_path / "t.db")
    engine = make_engine(url)
    insert(engine, [Row("1", f"old{n}", 0, "{}") for n in range(5)])
    waited: list[tuple[int, float]] = []
    waiter = threading.Thread(target=lambda: waited.append(archive.wait_rows(url, 35, poll=0.01)))
    waiter.start()
    for batch in range(3):  # while it waits: 30 more rows, 10 a commit
        assert waited == []
        insert(engine, [Row("1", f"new{batch}-{n}", 0, "{}") for n in range(10)])
    waiter.join(10)
    assert waited and waited[0][0] == 35
    assert waited[0][1] < archive.STALL_S  # ended by the target, not by the stall

    # Nothing more comes: the stall ends the wait with what is there.
    rows, seconds = archive.wait_rows(url, 36, stall=0.2, poll=0.01)
    assert rows == 35
    assert seconds >= 0.2


def test_rows_committed_while_they_are_counted_do_not_make_the_wait_overshoot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count of a big table is slow and the archive commits meanwhile: the goal in seq
    terms must never end up beyond what the target's rows reach."""
    url, _ = seeded_sqlite(tmp_path / "t.db")
    engine = make_engine(url)
    count = archive._count
    calls = [0]

    def count_while_committing(counted: Engine) -> int:
        calls[0] += 1
        rows = count(counted)
        if calls[0] == 1:  # 10 rows land after the first count's snapshot, before it returns
            insert(engine, [Row("1", f"during{n}", 0, "{}") for n in range(10)])
        return rows

    monkeypatch.setattr(archive, "_count", count_while_committing)
    rows, seconds = archive.wait_rows(url, 10, stall=2, poll=0.01)
    assert rows == 10
    assert seconds < 2  # reached, not given up on after the stall
