"""Wait for a condition with a deadline instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str = "",
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    After ``timeout`` seconds raise ``error(message)``: an AssertionError by default, so a
    test fails as on an assert; a tool passes the error its command line reports.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(message or f"condition not met within {timeout} s")
        time.sleep(interval)
