"""``isolation="process"`` (issue 13 item 6): each job of a sync worker runs in a child
process, so its timeout and ``cancel_job`` stop it for real, and a crash costs one attempt.

Real child processes on a real SQLite file; the workers (tests/integration/isolation_workers.py)
log ``start``/``done`` lines with their pid, so what ran where, and what never finished, is
visible after the fact.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from oban import Job, Oban, worker
from oban._isolation import _children
from tests.helpers import eventually, oban_factory
from tests.integration.isolation_workers import IsolatedWorker, isolated_add


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Oban]]:
    async with oban_factory(dsn=f"sqlite:///{tmp_path / 'jobs.db'}") as make:
        yield make


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "runs.log"


async def _node(make: Callable[..., Oban], limit: int = 2, **options: Any) -> Oban:
    return await make(queues={"isolated": limit}, **options).start()


def _lines(log: Path, event: str, job: Job) -> list[str]:
    """The pids of ``event`` lines for ``job``."""
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [row[2] for row in rows if row[0] == event and row[1] == str(job.id)]


async def _finished(oban: Oban, job: Job, *states: str) -> Job:
    async def check() -> Job | None:
        found = await oban.get_job(job)
        return found if found is not None and found.state in states else None

    found: Job = await eventually(check, timeout=15.0, message=f"job {job.id} in {states}")
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_job_runs_in_a_reused_child_process_and_records_its_result(
    make: Callable[..., Oban], log: Path
) -> None:
    oban = await _node(make, limit=1)
    first = await IsolatedWorker.enqueue({"log": str(log)})
    done = await _finished(oban, first, "completed")
    second = await IsolatedWorker.enqueue({"log": str(log)})
    again = await _finished(oban, second, "completed")

    child = done.recorded["pid"]
    assert child != os.getpid()
    assert _lines(log, "done", first) == [str(child)]
    assert done.recorded == {"pid": child, "current": first.id}  # current_job() in the child
    assert again.recorded["pid"] == child, "the idle child was not reused"

    func = await isolated_add.enqueue(2, 3)
    added = await _finished(oban, func, "completed")
    assert added.recorded["sum"] == 5 and added.recorded["pid"] != os.getpid()


async def test_an_exception_in_the_child_is_recorded_with_its_own_traceback(
    make: Callable[..., Oban], log: Path
) -> None:
    oban = await _node(make)
    job = await IsolatedWorker.enqueue({"log": str(log), "raise": True})
    failed = await _finished(oban, job, "retryable")

    error = failed.errors[-1]["error"]
    pid = _lines(log, "start", job)[0]
    assert f"LookupError: failed in {pid}" in error
    assert "isolation_workers.py" in error and "raise LookupError" in error


async def test_a_timeout_kills_the_child(make: Callable[..., Oban], log: Path) -> None:
    oban = await _node(make, limit=1)
    # A warm child first: the timeout also counts a child's start, which a loaded machine
    # can make longer than the 0.5 s below.
    await _finished(oban, await IsolatedWorker.enqueue({"log": str(log)}), "completed")
    job = await IsolatedWorker.enqueue({"log": str(log), "sleep": 3, "timeout": 0.5})
    failed = await _finished(oban, job, "retryable")

    assert "JobTimeoutError" in failed.errors[-1]["error"]
    pid = int(_lines(log, "start", job)[0])
    await eventually(lambda: not _alive(pid), message="the timed-out child is gone")
    await asyncio.sleep(3)  # past the end of the sleep: a thread would have logged "done"
    assert _lines(log, "done", job) == []


async def test_cancel_job_kills_the_child_and_the_job_ends_cancelled(
    make: Callable[..., Oban], log: Path
) -> None:
    oban = await _node(make)
    job = await IsolatedWorker.enqueue({"log": str(log), "sleep": 3})
    await eventually(lambda: _lines(log, "start", job), message="the job started")
    pid = int(_lines(log, "start", job)[0])

    assert await oban.cancel_job(job) == 1

    await eventually(lambda: not _alive(pid), message="the cancelled job's child is gone")
    cancelled = await _finished(oban, job, "cancelled")
    assert cancelled.errors[-1]["error"] == "cancelled while executing"
    await asyncio.sleep(3)
    assert _lines(log, "done", job) == []
    assert (await oban.get_job(job)).state == "cancelled"  # type: ignore[union-attr]


async def test_a_crashed_child_fails_the_attempt_and_the_next_job_gets_a_fresh_one(
    make: Callable[..., Oban], log: Path
) -> None:
    oban = await _node(make, limit=1)
    crash = await IsolatedWorker.enqueue({"log": str(log), "crash": True})
    failed = await _finished(oban, crash, "retryable")
    assert "WorkerCrashedError" in failed.errors[-1]["error"]
    assert "status 7" in failed.errors[-1]["error"]

    job = await IsolatedWorker.enqueue({"log": str(log)})
    done = await _finished(oban, job, "completed")
    assert str(done.recorded["pid"]) != _lines(log, "start", crash)[0]


async def test_a_result_that_cannot_be_sent_back_is_an_error(
    make: Callable[..., Oban], log: Path
) -> None:
    oban = await _node(make)
    job = await IsolatedWorker.enqueue({"log": str(log), "unpicklable": True})
    failed = await _finished(oban, job, "retryable")
    assert "cannot be sent back" in failed.errors[-1]["error"]


async def test_shutdown_kills_running_children_and_hands_their_jobs_back(
    make: Callable[..., Oban], log: Path
) -> None:
    oban = await _node(make, shutdown_grace_period=0.3)
    job = await IsolatedWorker.enqueue({"log": str(log), "sleep": 5})
    await eventually(lambda: _lines(log, "start", job), message="the job started")
    pid = int(_lines(log, "start", job)[0])

    await oban.stop()

    assert not _alive(pid)
    assert not [child for child in _children if child.alive], "children left after stop()"
    client = make()
    left = await client.get_job(job)
    assert left is not None and left.state == "executing"  # for the lifeline to rescue


def test_isolation_is_checked_when_the_worker_is_declared() -> None:
    with pytest.raises(ValueError, match="isolation must be 'thread' or 'process'"):

        @worker(queue="isolated", isolation="fork")  # type: ignore[arg-type]
        class Forked:
            def process(self, job: Job) -> None:
                return None

    with pytest.raises(ValueError, match="for sync workers"):

        @worker(queue="isolated", isolation="process")
        class Async:
            async def process(self, job: Job) -> None:
                return None

    class Script:
        def process(self, job: Job) -> None:
            return None

    Script.__module__ = "__main__"
    with pytest.raises(ValueError, match="importable module"):
        worker(queue="isolated", isolation="process")(Script)

    assert inspect.signature(worker).parameters["isolation"].default == "thread"
