"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], timeout: float | None = None) -> bool:
    """Cancel ``task`` and wait until it has really finished.

    On Python 3.11, ``asyncio.wait_for`` can swallow a cancellation that arrives in the same
    loop step as its result (CPython gh-86296), e.g. while psycopg_pool hands over a
    connection; a single ``cancel()`` then never ends the task. Cancel again until it does,
    or until ``timeout`` seconds passed (for user code that ignores cancellation). Returns
    whether the task finished.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while not task.done():
        if deadline is not None and loop.time() >= deadline:
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled():
        task.exception()  # mark any error as retrieved: the task logged its own failures
    return True
