"""Background tasks of the long-lived parts (the broker link's supervisor, a lease, the
archive's writer)."""

from __future__ import annotations

import asyncio
from contextlib import suppress


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has unwound."""
    if task is None:
        return
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
