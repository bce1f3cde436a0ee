"""Stopping a background task ends it, even when it swallows a cancellation.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that falls together with
its timeout (CPython gh-86296): the task runs on as if never cancelled. A tracker stopping
then waited forever for its broker link's supervisor; ``tasks.cancel`` repeats the
cancellation until the task is done.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tracker_api import tasks


async def swallows_one_cancellation(unwound: list[str]) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        unwound.append("first cancellation swallowed")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        unwound.append("second cancellation taken")
        raise


def test_a_task_that_swallows_its_cancellation_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "RECANCEL_AFTER", 0.05)
    unwound: list[str] = []

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(swallows_one_cancellation(unwound))
        await asyncio.sleep(0)
        await asyncio.wait_for(tasks.cancel(task), 5)
        return task

    task = asyncio.run(scenario())
    assert task.cancelled()
    assert unwound == ["first cancellation swallowed", "second cancellation taken"]


def test_an_error_the_task_ended_with_is_raised_and_none_is_nothing() -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(fails())
        await asyncio.wait({task})
        with pytest.raises(RuntimeError, match="broken"):
            await tasks.cancel(task)
        await tasks.cancel(None)

    asyncio.run(scenario())


def test_a_cancellation_of_the_caller_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever waits in cancel() can itself be cancelled, however stubborn the task."""
    monkeypatch.setattr(tasks, "RECANCEL_AFTER", 0.01)
    give_up = asyncio.Event()

    async def stubborn() -> None:
        while not give_up.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await give_up.wait()

    async def scenario() -> int:
        task = asyncio.get_running_loop().create_task(stubborn())
        await asyncio.sleep(0)
        stopper = asyncio.get_running_loop().create_task(tasks.cancel(task))
        deadline = asyncio.get_running_loop().time() + 5
        while task.cancelling() < 2:  # cancel() has come back to it at least once
            assert asyncio.get_running_loop().time() < deadline, "cancel() gave up on it"
            await asyncio.sleep(0.001)
        stopper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopper
        rounds = task.cancelling()
        give_up.set()
        await task
        return rounds

    assert asyncio.run(scenario()) >= 2
