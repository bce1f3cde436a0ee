"""Giving back a big request's memory (``tracker_api/http/trim.py``): when, how often, and
that a failure only costs a warning. What it gives back, on a real worker, is measured in
tests/security/test_memory_bounds.py."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest

from tracker_api.http import trim
from tracker_api.http.trim import BIG_BODY, Trimmer


def run_after(trimmer: Trimmer, sizes: list[int], done: Callable[[], bool]) -> None:
    """``after`` for each size on a running loop, then until ``done()`` (5 s at most)."""

    async def scenario() -> None:
        for size in sizes:
            trimmer.after(size)
        deadline = time.monotonic() + 5
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())  # which also waits for the executor's threads


def test_only_a_big_body_gives_memory_back_and_at_most_once_a_second() -> None:
    calls: list[str] = []

    def fake_trim() -> int:
        calls.append(threading.current_thread().name)
        return 1

    now = [100.0]
    trimmer = Trimmer(trim=fake_trim, clock=lambda: now[0])
    run_after(trimmer, [BIG_BODY, 10], done=lambda: True)  # not over the threshold
    assert (trimmer.trims, calls) == (0, [])

    # The second within the same second: one trim for both.
    run_after(trimmer, [BIG_BODY + 1, BIG_BODY * 20], done=lambda: len(calls) >= 1)
    assert trimmer.trims == 1 and len(calls) == 1
    assert calls[0] != threading.main_thread().name  # off the event loop's thread

    now[0] += trim.EVERY
    run_after(trimmer, [BIG_BODY * 2], done=lambda: len(calls) >= 2)
    assert trimmer.trims == 2 and len(calls) == 2


def test_a_failed_trim_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> int:
        raise OSError("no heap to walk")

    with caplog.at_level(logging.WARNING, logger="tracker_api.http.trim"):
        run_after(Trimmer(trim=broken), [BIG_BODY * 2], done=lambda: "failed" in caplog.text)
    assert "giving memory back failed: no heap to walk" in caplog.text


def test_without_glibc_nothing_is_attempted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trim.ctypes.util, "find_library", lambda name: "no-such-libc.so")
    trimmer = Trimmer()
    run_after(trimmer, [BIG_BODY * 2], done=lambda: True)
    assert trimmer.trims == 0


def test_on_glibc_the_real_malloc_trim_is_found() -> None:
    real = trim._malloc_trim()
    assert real is not None
    assert real() in (0, 1)  # 1: memory was given back, 0: there was none to give
