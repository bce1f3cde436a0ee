"""Did the archive keep up: its lag from the tracker's histogram, and each acknowledged
event in the ``events`` table exactly once."""

from __future__ import annotations

import math
import time

from sqlalchemy import Engine, create_engine, func, select

from devkit.metrics import samples
from tracker_api.storage.event_store import EVENTS

LAG = "tracker_archive_lag_seconds_bucket"
# After the load: how long the archive may go without writing a row before it counts as
# stuck. Bounded by progress, not by a total, so a long run's backlog may drain.
STALL_S = 10.0

Buckets = dict[float, float]  # upper bound -> cumulative count


def lag_buckets(metrics_text: str) -> Buckets:
    return {float(labels["le"]): count for labels, count in samples(metrics_text, LAG)}


def quantile(before: Buckets, after: Buckets, q: float) -> float:
    """The ``q`` quantile of what was observed between two scrapes, interpolated within
    its bucket as Prometheus' histogram_quantile does; NaN when nothing was observed."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return math.nan
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all we know
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower  # pragma: no cover - the +Inf bucket holds every observation


def archived(database_url: str) -> tuple[int, int]:
    """(rows, distinct eventIds) of the ``events`` table."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows, distinct = connection.execute(
                select(func.count(), func.count(EVENTS.c.event_id.distinct()))
            ).one()
        return int(rows), int(distinct)
    finally:
        engine.dispose()


def duplicates(rows: int, table: tuple[int, int], delivered: int) -> int:
    """Events archived more than once: ``rows`` written of the ``delivered`` unique
    eventIds, ``table`` the whole table's (rows, distinct eventIds)."""
    total, distinct = table
    # The table's key is (account, eventId): a repeat would be a second row under
    # another account, or more rows than distinct events reached the broker.
    return (total - distinct) + max(0, rows - delivered)


def figures(
    rows: int,
    table: tuple[int, int],
    acknowledged: int,
    delivered: int,
    lag: tuple[Buckets, Buckets],
) -> dict[str, float | int]:
    """What the archive did with the ``acknowledged`` events of one run: ``rows`` of them
    written, ``table`` the whole table's (rows, distinct eventIds) after, ``delivered`` the
    unique eventIds the counting subscriber saw (which includes an event whose answer was
    lost but whose publish went through), ``lag`` the histogram before and after."""
    before, after = lag
    return {
        "archived": rows,
        "lost": max(0, acknowledged - rows),
        "duplicates": duplicates(rows, table, delivered),
        "lag_p50_s": round(quantile(before, after, 0.5), 3),
        "lag_p99_s": round(quantile(before, after, 0.99), 3),
    }


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(EVENTS)).scalar_one())


def _top(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.max(EVENTS.c.seq))).scalar() or 0)


def wait_rows(
    database_url: str,
    target: int,
    stall: float = STALL_S,
    poll: float = 0.1,
    started: float | None = None,
) -> tuple[int, float]:
    """Wait until the table holds ``target`` rows or stops growing for ``stall`` seconds;
    (rows, seconds from ``started``, a ``time.monotonic()``, by default the call). Progress
    is watched by the largest ``seq`` (one index lookup), and rows are counted only to
    confirm: a count of 500,000 rows costs SQLite 0.4-0.9 s of CPU, and counting ten times
    a second took a core from the archive measured."""
    started = time.monotonic() if started is None else started
    engine = create_engine(database_url)
    try:
        # The largest seq first: rows committed during the (slow) count then make the goal
        # too low, which the count that confirms it catches, never too high to reach.
        top = _top(engine)
        goal = top + target - _count(engine)  # seq runs ahead of rows only on conflicts
        changed = time.monotonic()
        while True:
            now_top, now = _top(engine), time.monotonic()
            if now_top >= goal:
                rows = _count(engine)
                if rows >= target:
                    return rows, round(now - started, 2)
                goal = now_top + target - rows
            if now_top != top:
                top, changed = now_top, now
            elif now - changed > stall:
                return _count(engine), round(now - started, 2)
            time.sleep(poll)
    finally:
        engine.dispose()
