"""Per-account counts, rates and lags, summarised every N events or every time window."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Stats:
    count: int = 0
    lag_sum: float = 0.0
    lag_n: int = 0
    lag_max: float = 0.0

    def add(self, lag: float | None) -> None:
        self.count += 1
        if lag is not None:
            self.lag_sum += lag
            self.lag_n += 1
            if lag > self.lag_max:
                self.lag_max = lag


@dataclass(frozen=True)
class AccountRow:
    account: str
    count: int
    """Events in the period (the interval, or the whole run for a summary)."""
    total: int
    """Events since the start."""
    rate: float
    """Events per second over the period."""
    lag_avg: float | None
    lag_max: float | None


@dataclass(frozen=True)
class Snapshot:
    kind: str
    """``"aggregate"`` for a periodic report, ``"summary"`` for the final one."""
    at: float
    period: float
    """Seconds the report covers."""
    total: int
    count: int
    rows: list[AccountRow] = field(default_factory=list)


class Aggregator:
    """Collects events; ``due()`` says when a periodic report should be emitted.

    ``every`` emits after that many events, ``window`` after that many seconds (it wins
    when both are given). Time is passed in, so the logic is tested without a clock.
    """

    def __init__(self, *, every: int | None = 500, window: float | None = None, now: float):
        self.every = None if window else every
        self.window = window
        self.started = now
        self._since = now
        self._interval: dict[str, _Stats] = {}
        self._totals: dict[str, _Stats] = {}
        self._pending = 0

    def add(self, account: str, lag: float | None) -> None:
        stats = self._interval.get(account)
        if stats is None:
            stats = self._interval[account] = _Stats()
        stats.add(lag)
        total = self._totals.get(account)
        if total is None:
            total = self._totals[account] = _Stats()
        total.add(lag)
        self._pending += 1

    @property
    def total(self) -> int:
        return sum(stats.count for stats in self._totals.values())

    def due(self, now: float) -> bool:
        if self.window is not None:
            return now - self._since >= self.window
        return self.every is not None and self._pending >= self.every

    def snapshot(self, now: float) -> Snapshot:
        """The report for the interval since the previous one; starts a new interval."""
        period = max(now - self._since, 1e-9)
        # Every account seen so far: a quiet one shows 0 in this period, not nothing.
        rows = [
            _row(account, self._interval.get(account, _IDLE), total.count, period)
            for account, total in sorted(self._totals.items(), key=_account_order)
        ]
        snap = Snapshot("aggregate", now, period, self.total, self._pending, rows)
        self._interval = {}
        self._pending = 0
        self._since = now
        return snap

    def summary(self, now: float) -> Snapshot:
        """The whole run, per account."""
        period = max(now - self.started, 1e-9)
        rows = [
            _row(account, stats, stats.count, period)
            for account, stats in sorted(self._totals.items(), key=_account_order)
        ]
        return Snapshot("summary", now, period, self.total, self.total, rows)


_IDLE = _Stats()


def _account_order(item: tuple[str, _Stats]) -> tuple[int, int, str]:
    """Numeric ids in numeric order (2 before 10), then the others alphabetically."""
    account = item[0]
    return (0, int(account), "") if account.isdigit() else (1, 0, account)


def _row(account: str, stats: _Stats, total: int, period: float) -> AccountRow:
    lag_avg = stats.lag_sum / stats.lag_n if stats.lag_n else None
    lag_max = stats.lag_max if stats.lag_n else None
    return AccountRow(account, stats.count, total, stats.count / period, lag_avg, lag_max)
