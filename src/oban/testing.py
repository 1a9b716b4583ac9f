"""Helpers for testing code that uses oban.

>>> from oban.testing import mode, process_job
>>> with mode("inline"):          # enqueue runs jobs at once, without the database
...     pass

In pytest, add ``pytest_plugins = ["oban.pytest_plugin"]`` to ``conftest.py`` for the
``oban_inline`` and ``oban_manual`` fixtures.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from ._executor import Executor
from ._modes import set_inline_runner, testing_mode
from .job import Job
from .oban import Oban
from .worker import worker_name

__all__ = [
    "all_enqueued",
    "assert_enqueued",
    "drain_queue",
    "mode",
    "process_job",
    "refute_enqueued",
    "reset_oban",
]

_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="oban-testing")


@contextmanager
def mode(name: Literal["inline", "manual"]) -> Iterator[None]:
    """Within the block, ``inline`` runs enqueued jobs at once (no database) and ``manual``
    inserts them as usual.

    >>> with mode("manual"):
    ...     pass
    """
    if name not in ("inline", "manual"):
        raise ValueError(f"mode must be 'inline' or 'manual', got {name!r}")
    token = testing_mode.set(name)
    try:
        yield
    finally:
        testing_mode.reset(token)


def _prepare(job: Job) -> Job:
    # What a real round trip through the database would do to the job.
    job.args = orjson.loads(orjson.dumps(job.args))
    job.meta = orjson.loads(orjson.dumps(job.meta))
    now = datetime.now(UTC)
    if job.id is None:
        job.id = id(job)
    job.attempt = max(job.attempt, 1)
    job.attempted_at = now
    job.scheduled_at = job.scheduled_at or now
    job.inserted_at = job.inserted_at or now
    job._cancellation = asyncio.Event()
    return job


async def _process(job: Job) -> Any:
    _ack, result = await Executor(threads=_threads, safe=False).run(_prepare(job))
    return result


# Inline mode (``Worker.enqueue``, ``Oban.enqueue_many``) runs jobs through this.
set_inline_runner(_process)


def process_job(job: Job) -> Any:
    """Run ``job``'s worker directly, as a queue would, and return what ``process`` returned.

    Args and meta go through JSON as they would through the database; exceptions propagate.
    Inside a running event loop this returns a coroutine to await.

    >>> from oban import job
    >>> @job()
    ... def double(n):
    ...     return n * 2
    >>> process_job(double.new(21))
    42
    """
    coroutine = _process(job)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    return coroutine


async def reset_oban(oban: str | Oban = "Oban") -> None:
    """Delete every job, leader and producer row of the instance's database schema."""
    await (await _instance(oban)._ready()).reset()


def _instance(oban: str | Oban) -> Oban:
    return oban if isinstance(oban, Oban) else Oban.get_instance(oban)


def _matches(job: Job, filters: dict[str, Any]) -> bool:
    for key, expected in filters.items():
        if key == "worker":
            name = (
                expected
                if isinstance(expected, str)
                else worker_name(getattr(expected, "__oban_worker__", expected))
            )
            if job.worker != name:
                return False
        elif key == "args":
            if any(job.args.get(k, _MISSING) != v for k, v in expected.items()):
                return False
        elif key == "meta":
            if any(job.meta.get(k, _MISSING) != v for k, v in expected.items()):
                return False
        elif key == "tags":
            if sorted({str(t).strip().lower() for t in expected}) != job.tags:
                return False
        elif key in ("scheduled_in", "schedule_in"):
            delay = expected if isinstance(expected, timedelta) else timedelta(seconds=expected)
            target = datetime.now(UTC) + delay
            if job.scheduled_at is None or abs(job.scheduled_at - target) > timedelta(seconds=1):
                return False
        elif getattr(job, key) != expected:
            return False
    return True


_MISSING = object()
_FILTERS = frozenset(
    {
        "args",
        "max_attempts",
        "meta",
        "priority",
        "queue",
        "scheduled_at",
        "scheduled_in",
        "schedule_in",
        "state",
        "tags",
        "worker",
    }
)


def _check_filters(filters: dict[str, Any]) -> None:
    unknown = set(filters) - _FILTERS
    if unknown:
        raise ValueError(f"unknown filters {sorted(unknown)}; use any of {sorted(_FILTERS)}")


async def all_enqueued(*, oban: str | Oban = "Oban", **filters: Any) -> list[Job]:
    """Jobs waiting to run (available, scheduled, suspended) that match every filter,
    newest first.

    Filters: ``worker`` (class or name), ``args``/``meta`` (subset match), ``queue``,
    ``priority``, ``tags``, ``max_attempts``, ``state``, ``scheduled_at``, and
    ``scheduled_in`` (within a second).
    """
    _check_filters(filters)
    jobs = await (await _instance(oban)._ready()).all_enqueued()
    return [job for job in jobs if _matches(job, filters)]


def _listing(jobs: list[Job]) -> str:
    if not jobs:
        return "no jobs are enqueued"
    lines = [
        f"  {job.worker} queue={job.queue} state={job.state} args={job.args} "
        f"meta={job.meta} tags={job.tags} priority={job.priority}"
        for job in jobs[:20]
    ]
    more = f"\n  ... and {len(jobs) - 20} more" if len(jobs) > 20 else ""
    return "enqueued jobs:\n" + "\n".join(lines) + more


async def assert_enqueued(*, oban: str | Oban = "Oban", timeout: float = 0, **filters: Any) -> Job:
    """Assert a waiting job matches ``filters`` (polling up to ``timeout`` seconds); return it.

    Raises:
        AssertionError: none matched; the message lists the jobs that were there.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = await all_enqueued(oban=oban, **filters)
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            everything = await all_enqueued(oban=oban)
            raise AssertionError(
                f"expected a job matching {filters} to be enqueued; {_listing(everything)}"
            )
        await asyncio.sleep(0.01)


async def refute_enqueued(*, oban: str | Oban = "Oban", timeout: float = 0, **filters: Any) -> None:
    """Assert no waiting job matches ``filters`` (for ``timeout`` seconds).

    Raises:
        AssertionError: one matched; the message lists the matches.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = await all_enqueued(oban=oban, **filters)
        if found:
            raise AssertionError(
                f"expected no job matching {filters} to be enqueued; {_listing(found)}"
            )
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.01)


async def drain_queue(
    queue: str = "default",
    oban: str | Oban = "Oban",
    *,
    with_recursion: bool = True,
    with_safety: bool = False,
    with_scheduled: bool = True,
) -> dict[str, int]:
    """Run the jobs of ``queue`` one at a time, here, until none is left.

    Args:
        with_scheduled: also run scheduled and retryable jobs, however far ahead.
        with_recursion: also run jobs enqueued by the jobs being drained.
        with_safety: record errors as a queue would (retry/discard) instead of raising.

    Returns:
        How many executions ended in each state: ``cancelled``, ``completed``,
        ``discarded``, ``retryable``, ``scheduled``.
    """
    instance = _instance(oban)
    engine = await instance._ready()
    executor = Executor(threads=_threads, safe=with_safety)
    counts = {"cancelled": 0, "completed": 0, "discarded": 0, "retryable": 0, "scheduled": 0}
    node, producer = f"{instance.node}.drain", str(uuid.uuid4())
    budget: int | None = None
    while budget is None or budget > 0:
        if with_scheduled:
            await engine.stage_all_jobs(queue)
        if budget is None and not with_recursion:
            budget = len([j for j in await engine.all_enqueued() if j.queue == queue])
            if budget == 0:
                break
        jobs = await engine.fetch_jobs(queue, 1, node, producer)
        if not jobs:
            break
        job = jobs[0]
        job._cancellation = asyncio.Event()
        ack, _result = await executor.run(job)
        await engine.ack_jobs([ack])
        counts[ack.state] = counts.get(ack.state, 0) + 1
        if budget is not None:
            budget -= 1
    return counts
