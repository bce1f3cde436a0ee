"""Background tasks of the long-lived parts (the broker link's supervisor, a lease, the
archive's writer)."""

from __future__ import annotations

import asyncio
from contextlib import suppress

# How long a cancelled task may take to unwind before it is cancelled again.
RECANCEL_AFTER = 1.0


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has unwound.

    The cancellation is repeated until the task is done: on Python 3.11 an
    ``asyncio.wait_for`` whose timeout falls together with the cancellation can swallow
    it (CPython gh-86296), and the task would run on while this waited for it forever.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_AFTER)
    with suppress(asyncio.CancelledError):
        await task  # done: raises what it raised, if anything but the cancellation
