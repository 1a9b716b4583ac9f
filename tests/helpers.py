"""Shared test helpers: polling with a deadline instead of bare sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
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


async def run_command(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run a command with no terminal (stdin from /dev/null) and return its exit code and its
    stdout and stderr together; killed if it outlives ``timeout``."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        await reap(proc)
    return proc.returncode or 0, out.decode()


def spy(instance: Any, method: str) -> list[Any]:
    """Record the result of each finished call of ``instance._engine.<method>`` (the real call
    still runs): ``calls = spy(oban, "stage_jobs")``."""
    engine = instance._engine
    original = getattr(engine, method)
    calls: list[Any] = []

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        calls.append(result)
        return result

    setattr(engine, method, wrapper)
    return calls


async def more_calls(calls: list[Any], extra: int, timeout: float = 5.0) -> None:
    """Wait until ``extra`` more calls were recorded by :func:`spy`."""
    target = len(calls) + extra
    await eventually(lambda: len(calls) >= target, timeout=timeout, message=f"{extra} more calls")


@contextlib.asynccontextmanager
async def oban_factory(**defaults: Any) -> AsyncIterator[Callable[..., Any]]:
    """``make(**options)`` builds ``Oban`` instances with ``defaults`` (and a 5 s shutdown
    grace period); on exit every one is stopped and the instance registry emptied."""
    from oban import Oban
    from oban.oban import _instances

    made: list[Oban] = []

    def make(**options: Any) -> Oban:
        for key, value in {"shutdown_grace_period": 5.0, **defaults}.items():
            options.setdefault(key, value)
        instance = Oban(**options)
        made.append(instance)
        return instance

    try:
        yield make
    finally:
        try:
            await stop_all(made)
        finally:
            _instances.clear()


async def drop_schema(pool: Any, prefix: str) -> None:
    """Drop a test's PostgreSQL schema. A server that cannot be reached here already failed the
    test; its error, not this one (a PoolTimeout that hides its cause), is the one to report."""
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        async with pool.connection(timeout=5) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')
    except (PoolTimeout, psycopg.OperationalError) as error:
        warnings.warn(f"test schema {prefix!r} not dropped: {error}", stacklevel=1)
