from subscriber.aggregate import Aggregator


def test_every_n_events_reports_the_interval_and_keeps_totals() -> None:
    agg = Aggregator(every=3, now=100.0)
    agg.add("1", 0.5)
    agg.add("2", None)
    assert not agg.due(101.0)
    agg.add("1", 1.5)
    assert agg.due(101.0)
    snap = agg.snapshot(102.0)
    assert (snap.kind, snap.count, snap.total, snap.period) == ("aggregate", 3, 3, 2.0)
    one, two = snap.rows
    assert (one.account, one.count, one.rate, one.lag_avg, one.lag_max) == ("1", 2, 1.0, 1.0, 1.5)
    assert (two.lag_avg, two.lag_max) == (None, None)
    agg.add("1", 0.1)
    snap = agg.snapshot(104.0)
    # A quiet account stays in the table with 0 for the period.
    assert [(r.account, r.count, r.total) for r in snap.rows] == [("1", 1, 3), ("2", 0, 1)]
    assert not agg.due(104.0)


def test_numeric_accounts_are_listed_in_numeric_order() -> None:
    agg = Aggregator(every=10, now=0.0)
    for account in ("10", "b", "2", "a", "1"):
        agg.add(account, None)

    assert [r.account for r in agg.snapshot(1.0).rows] == ["1", "2", "10", "a", "b"]


def test_window_wins_over_every_and_summary_covers_the_whole_run() -> None:
    agg = Aggregator(every=1, window=5.0, now=0.0)
    agg.add("a", 2.0)
    assert not agg.due(4.9)
    assert agg.due(5.0)
    agg.snapshot(5.0)
    agg.add("a", 4.0)
    summary = agg.summary(10.0)
    assert summary.kind == "summary"
    assert summary.total == 2
    (row,) = summary.rows
    assert (row.count, row.rate, row.lag_avg, row.lag_max) == (2, 0.2, 3.0, 4.0)
