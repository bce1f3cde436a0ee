"""Giving back the memory of a big request.

The largest legal batch (1,000 events, 23 MB of JSON) costs a worker about 120 MiB at its
peak. Once it is answered the objects are freed, but glibc keeps most of the freed heap
for later: the worker stayed +49 MiB resident afterwards
(``tests/security/test_memory_bounds.py``), and a fleet of workers that each once served a
big batch stays that big. ``malloc_trim(0)`` hands the free pages back to the system
(+5 MiB). It walks the heap, so it runs on a thread, shortly after a request whose body
was over ``BIG_BODY`` (when that request's objects are gone), and at most once per
``EVERY`` seconds however many big requests come. Without glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

BIG_BODY = 1024 * 1024  # bytes of a request body after which memory is given back
DELAY = 0.05  # seconds after the answer: the request's objects are freed by then
EVERY = 1.0  # seconds, at least, between two trims


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class Trimmer:
    """``after(body_bytes)`` once a request was answered."""

    def __init__(
        self,
        trim: Callable[[], object] | None = None,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trim = trim if trim is not None else _malloc_trim()
        self.every = every
        self._clock = clock
        self._last = -every
        self.trims = 0  # how many were started

    def after(self, body_bytes: int) -> None:
        if self._trim is None or body_bytes <= BIG_BODY:
            return
        now = self._clock()
        if now - self._last < self.every:
            return
        self._last = now
        self.trims += 1
        loop = asyncio.get_running_loop()
        loop.call_later(DELAY, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._trim is not None
        future = loop.run_in_executor(None, self._trim)
        future.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("giving memory back failed: %s", future.exception())
