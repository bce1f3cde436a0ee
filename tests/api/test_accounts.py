"""The account cache: hits, TTL expiry, negative entries, bound, single flight, errors."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from tests.helpers.accounts import seeded_sqlite, set_active
from tracker_api.errors import AccountInactive, AccountNotFound, DatabaseUnavailable
from tracker_api.service.accounts import AccountCache, AccountState, state_from_database


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    def __init__(self, states: dict[str, AccountState]) -> None:
        self.states = states
        self.calls: list[str] = []

    def __call__(self, account_id: str) -> AccountState:
        self.calls.append(account_id)
        return self.states.get(account_id, AccountState.UNKNOWN)


class HeldLoader:
    """A loader held until ``release()``, so that callers pile up on one query; it answers
    what ``answer`` was when it was called."""

    def __init__(self, answer: AccountState | Exception = AccountState.ACTIVE) -> None:
        self.answer = answer
        self.calls: list[str] = []
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def __call__(self, account_id: str) -> AccountState:
        self.calls.append(account_id)
        answer = self.answer  # what the database said when asked
        self._released.wait(5)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_hit_within_ttl_does_not_query_again() -> None:
    loader = CountingLoader({"1": AccountState.ACTIVE})
    cache = AccountCache(loader, ttl=5, clock=FakeClock())

    async def scenario() -> list[AccountState]:
        return [await cache.state("1") for _ in range(3)]

    assert asyncio.run(scenario()) == [AccountState.ACTIVE] * 3
    assert loader.calls == ["1"]
    assert (cache.hits, cache.misses) == (2, 1)


def test_entries_expire_after_ttl_so_changes_take_effect() -> None:
    loader = CountingLoader({"1": AccountState.ACTIVE})
    clock = FakeClock()
    cache = AccountCache(loader, ttl=5, clock=clock)

    async def scenario() -> list[AccountState]:
        first = await cache.state("1")
        loader.states["1"] = AccountState.INACTIVE
        clock.now += 4.9
        cached = await cache.state("1")
        clock.now += 0.2
        return [first, cached, await cache.state("1")]

    assert asyncio.run(scenario()) == [
        AccountState.ACTIVE,
        AccountState.ACTIVE,
        AccountState.INACTIVE,
    ]
    assert loader.calls == ["1", "1"]


class SlowLoader(CountingLoader):
    """A query that takes ``seconds`` of the fake clock (waiting for a thread or a lock)."""

    def __init__(self, states: dict[str, AccountState], clock: FakeClock, seconds: float) -> None:
        super().__init__(states)
        self.clock = clock
        self.seconds = seconds

    def __call__(self, account_id: str) -> AccountState:
        state = super().__call__(account_id)  # what the database said when asked
        self.clock.now += self.seconds
        return state


def test_an_answer_expires_a_ttl_after_its_query_started_however_long_the_query_took() -> None:
    clock = FakeClock()
    loader = SlowLoader({"1": AccountState.ACTIVE}, clock, seconds=3)
    cache = AccountCache(loader, ttl=5, clock=clock)
    asked_at = clock.now

    async def scenario() -> list[AccountState]:
        first = await cache.state("1")
        loader.states["1"] = AccountState.INACTIVE  # committed right after it was read
        clock.now = asked_at + 4.9
        cached = await cache.state("1")
        clock.now = asked_at + 5.1  # a TTL after the change at the latest
        return [first, cached, await cache.state("1")]

    assert asyncio.run(scenario()) == [
        AccountState.ACTIVE,
        AccountState.ACTIVE,
        AccountState.INACTIVE,
    ]
    assert loader.calls == ["1", "1"]


def test_an_answer_older_than_the_ttl_reaches_its_waiters_but_is_not_kept() -> None:
    clock = FakeClock()
    loader = SlowLoader({"1": AccountState.ACTIVE}, clock, seconds=6)
    cache = AccountCache(loader, ttl=5, clock=clock)

    assert asyncio.run(cache.state("1")) is AccountState.ACTIVE
    assert len(cache) == 0


def test_forget_makes_the_next_lookup_read_the_database() -> None:
    loader = CountingLoader({"1": AccountState.ACTIVE})
    cache = AccountCache(loader, ttl=60, clock=FakeClock())

    async def scenario() -> list[AccountState]:
        first = await cache.state("1")
        loader.states["1"] = AccountState.INACTIVE
        cache.forget("1")
        cache.forget("never-seen")  # nothing to drop: no error
        return [first, await cache.state("1"), await cache.state("1")]

    assert asyncio.run(scenario()) == [
        AccountState.ACTIVE,
        AccountState.INACTIVE,
        AccountState.INACTIVE,
    ]
    assert loader.calls == ["1", "1"]


async def calls_reach(loader: HeldLoader, count: int, timeout: float = 5.0) -> None:
    """Poll, with a deadline, until ``loader`` has been asked ``count`` times."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(loader.calls) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{loader.calls} after {timeout} s"
        await asyncio.sleep(0.001)


def test_a_query_under_way_when_forgotten_answers_its_waiters_but_is_not_kept() -> None:
    loader = HeldLoader(AccountState.ACTIVE)
    cache = AccountCache(loader, ttl=60)

    async def scenario() -> list[AccountState]:
        before = asyncio.create_task(cache.state("1"))
        await calls_reach(loader, 1)  # until its query has read the old state
        cache.forget("1")  # then the change was committed, by this very worker
        loader.answer = AccountState.INACTIVE
        after = asyncio.create_task(cache.state("1"))  # a query of its own
        await calls_reach(loader, 2)
        loader.release()  # both finish, in whichever order
        answers = [await asyncio.wait_for(before, 5), await asyncio.wait_for(after, 5)]
        return [*answers, await cache.state("1")]

    assert asyncio.run(scenario()) == [
        AccountState.ACTIVE,
        AccountState.INACTIVE,
        AccountState.INACTIVE,  # kept: the later answer, never the forgotten one
    ]
    assert loader.calls == ["1", "1"]


def test_unknown_accounts_are_cached_too() -> None:
    loader = CountingLoader({})
    cache = AccountCache(loader, ttl=5, clock=FakeClock())

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(AccountNotFound):
                await cache.require_active("nobody")

    asyncio.run(scenario())
    assert loader.calls == ["nobody"]


def test_cache_holds_at_most_max_entries_evicting_the_oldest() -> None:
    loader = CountingLoader({})
    cache = AccountCache(loader, ttl=60, max_entries=3, clock=FakeClock())

    async def scenario() -> None:
        for account_id in "abcde":
            await cache.state(account_id)
        await cache.state("e")  # still cached
        await cache.state("a")  # evicted: queried again

    asyncio.run(scenario())
    assert len(cache) == 3
    assert loader.calls == ["a", "b", "c", "d", "e", "a"]


def test_concurrent_misses_for_one_id_share_a_single_query() -> None:
    loader = HeldLoader()
    cache = AccountCache(loader, ttl=5)

    async def scenario() -> list[AccountState]:
        tasks = [asyncio.create_task(cache.state("1")) for _ in range(20)]
        await asyncio.sleep(0)  # let them all miss before the query returns
        loader.release()
        return await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == [AccountState.ACTIVE] * 20
    assert loader.calls == ["1"]


def test_database_error_becomes_database_unavailable_for_every_waiter() -> None:
    loader = HeldLoader(OperationalError("SELECT", {}, Exception("connection refused")))
    cache = AccountCache(loader, ttl=5)

    async def scenario() -> list[object]:
        tasks = [asyncio.create_task(cache.state("1")) for _ in range(3)]
        await asyncio.sleep(0)
        loader.release()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    assert len(cache) == 0  # errors are not cached


def test_an_unexpected_loader_error_reaches_every_waiter_instead_of_hanging() -> None:
    loader = HeldLoader(RuntimeError("driver bug"))
    cache = AccountCache(loader, ttl=5)

    async def scenario() -> list[object]:
        tasks = [asyncio.create_task(cache.state("1")) for _ in range(3)]
        await asyncio.sleep(0)
        loader.release()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    results = asyncio.run(scenario())
    assert [type(r) for r in results] == [RuntimeError] * 3
    assert len(cache) == 0


def test_cancelling_the_first_caller_does_not_strand_the_others() -> None:
    loader = HeldLoader()
    cache = AccountCache(loader, ttl=5)

    async def scenario() -> list[AccountState]:
        first = asyncio.create_task(cache.state("1"))
        await asyncio.sleep(0)  # the first caller starts the query
        others = [asyncio.create_task(cache.state("1")) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        loader.release()
        states = await asyncio.wait_for(asyncio.gather(*others), 5)
        assert first.cancelled()
        return states

    assert asyncio.run(scenario()) == [AccountState.ACTIVE] * 3
    assert loader.calls == ["1"]
    assert len(cache) == 1  # the answer was cached although its first caller left


def test_deactivation_in_the_real_database_takes_effect_after_the_ttl(tmp_path: Path) -> None:
    _, engine = seeded_sqlite(tmp_path / "accounts.db")
    clock = FakeClock()
    cache = AccountCache(lambda a: state_from_database(engine, a), ttl=5, clock=clock)

    async def scenario() -> None:
        await cache.require_active("1")
        set_active(engine, "1", False)
        await cache.require_active("1")  # still cached as active
        clock.now += 5.1
        with pytest.raises(AccountInactive):
            await cache.require_active("1")

    asyncio.run(scenario())
    engine.dispose()
