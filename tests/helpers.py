"""Shared test helpers: polling with a deadline instead of bare sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)


async def stop_all(instances: Iterable[Any], *, timeout: float = 30.0) -> None:
    """Stop (and close the engine of) every instance, newest first, each within ``timeout``.

    Every instance gets its turn even when an earlier one fails; the first error is raised
    afterwards, so a fixture's teardown reports it instead of leaking the rest.
    """
    errors: list[BaseException] = []
    for instance in reversed(list(instances)):
        try:
            await asyncio.wait_for(instance.stop(), timeout)
            await asyncio.wait_for(instance._close_engine(), timeout)
        except (Exception, asyncio.CancelledError) as error:
            errors.append(error)
    if errors:
        raise errors[0]


async def reap(proc: asyncio.subprocess.Process, *, timeout: float = 10.0) -> None:
    """Kill ``proc`` if it still runs and wait for it, so no test leaves a process behind."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.wait_for(proc.wait(), timeout)
