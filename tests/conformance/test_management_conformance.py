"""Managing jobs (get, cancel, retry, delete, update) on both engines.

Rows are put into a state with one plain UPDATE both engines accept: timestamps are passed as
UTC text ``YYYY-MM-DD HH:MM:SS.SSS`` (PostgreSQL casts it, SQLite stores it), and everything
is read back through ``oban.get_job``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from oban import Cancel, Job, Oban, worker
from tests.helpers import eventually

RUNS: dict[str, int] = {}
GATES: dict[str, asyncio.Event] = {}
STEPS: dict[str, dict[str, threading.Event]] = {}


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    RUNS.clear()
    GATES.clear()
    STEPS.clear()
    yield
    for steps in STEPS.values():
        steps["release"].set()  # a failed test must not leave a worker thread waiting


def _steps(key: str) -> dict[str, threading.Event]:
    """Events a cancellable (sync) worker uses: ``started``, ``noticed`` (cancellation),
    ``release`` (set by the test) and ``returned``."""
    STEPS[key] = {name: threading.Event() for name in ("started", "noticed", "release", "returned")}
    return STEPS[key]


async def _wait_for(event: threading.Event, what: str) -> None:
    await eventually(event.is_set, message=what)


@worker(queue="confb_mgmt")
class ConfBMgmtCountingWorker:
    async def process(self, job: Job) -> Any:
        key = job.args.get("key", "-")
        RUNS[key] = RUNS.get(key, 0) + 1


@worker(queue="confb_mgmt")
class ConfBMgmtBlockingWorker:
    """Waits for ``GATES[key]`` (10 s at most), then counts a run; notes its ``finally``."""

    async def process(self, job: Job) -> Any:
        key = job.args["key"]
        RUNS[f"{key}-started"] = 1
        try:
            await asyncio.wait_for(GATES[key].wait(), 10)
            RUNS[key] = RUNS.get(key, 0) + 1
        finally:
            RUNS[f"{key}-finally"] = 1


@worker(queue="confb_mgmt")
class ConfBMgmtCancellableWorker:
    """A sync worker: waits for ``job.cancelled()``, then (once released) returns ``Cancel``.

    Its thread cannot be interrupted, so it runs on after the cancel until released."""

    def process(self, job: Job) -> Any:
        steps = STEPS[job.args["key"]]
        steps["started"].set()
        deadline = time.monotonic() + 10
        while not job.cancelled():
            if time.monotonic() > deadline:
                return None  # completing would make the test fail on the final state
            time.sleep(0.005)
        steps["noticed"].set()
        steps["release"].wait(10)
        steps["returned"].set()
        return Cancel("confb-mgmt-stopped-on-request")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

NOW_TOLERANCE = timedelta(seconds=5)


def _ts(offset: float = 0.0) -> str:
    """A UTC timestamp as SQLite stores it; PostgreSQL casts the same text."""
    value = datetime.now(UTC) + timedelta(seconds=offset)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def _state_update(state: str) -> tuple[str, tuple[Any, ...]]:
    now = _ts()
    return {
        "available": ("state = 'available'", ()),
        "scheduled": ("state = 'scheduled', scheduled_at = %s", (_ts(3600),)),
        "retryable": (
            "state = 'retryable', attempt = 1, attempted_at = %s, scheduled_at = %s",
            (now, _ts(60)),
        ),
        "suspended": ("state = 'suspended'", ()),
        "executing": ("state = 'executing', attempt = 1, attempted_at = %s", (now,)),
        "completed": (
            "state = 'completed', attempt = 1, attempted_at = %s, completed_at = %s",
            (now, now),
        ),
        "discarded": (
            "state = 'discarded', attempt = max_attempts, attempted_at = %s, discarded_at = %s",
            (now, now),
        ),
        "cancelled": ("state = 'cancelled', cancelled_at = %s", (now,)),
    }[state]


async def _make(oban: Oban, sql: Callable[..., Any], state: str, **params: Any) -> Job:
    """Insert a job (nobody runs it) and force it into ``state`` with fitting timestamps."""
    args = params.pop("args", {"key": state})
    job = await oban.enqueue(ConfBMgmtCountingWorker.new(args, **params))
    assignments, values = _state_update(state)
    await sql(oban, f"UPDATE oban_jobs SET {assignments} WHERE id = %s", (*values, job.id))
    found = await _get(oban, job.id)
    assert found.state == state
    return found


def _id(job: Job) -> int:
    assert job.id is not None, "the job was never inserted"
    return job.id


async def _get(oban: Oban, job_id: int | None) -> Job:
    assert job_id is not None
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing from the database"
    return found


async def _state_is(oban: Oban, job_id: int | None, state: str) -> Job | None:
    assert job_id is not None
    found = await oban.get_job(job_id)
    return found if found is not None and found.state == state else None


async def _count(oban: Oban, sql: Callable[..., Any]) -> int:
    rows = await sql(oban, "SELECT count(*) FROM oban_jobs")
    return int(rows[0][0])


def _near_now(value: datetime | None, offset: timedelta = timedelta(0)) -> bool:
    return value is not None and abs(value - (datetime.now(UTC) + offset)) < NOW_TOLERANCE


def _running(server: Oban) -> list[int]:
    info = server.check_queue("confb_mgmt")
    assert info is not None, "confb_mgmt does not run on the server"
    return info.running


async def _flushed(server: Oban) -> None:
    """Wait until every ack of ``server`` was written (or found to change nothing)."""
    acker = server._acker
    assert acker is not None
    await eventually(lambda: acker.pending == 0, message="acks written")


async def _running_server(make_oban: Callable[..., Oban]) -> Oban:
    server = make_oban(queues={"confb_mgmt": 2}, notifier={"poll_interval": 0.1})
    await server.start()
    return server


def _write_meanwhile(oban: Oban, engine: str, assignments: str, job_id: int) -> None:
    """Change a job row on a separate synchronous connection, as another process would."""
    if engine == "postgres":
        assert oban.pool is not None
        conninfo = oban.pool.conninfo
        assert isinstance(conninfo, str)  # the tests build their pools from a DSN string
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                f'UPDATE "{oban.prefix}".oban_jobs SET {assignments} WHERE id = %s', (job_id,)
            )
    else:
        assert oban.sqlite_path is not None
        with contextlib.closing(sqlite3.connect(oban.sqlite_path, timeout=5)) as conn:
            conn.execute(f"UPDATE oban_jobs SET {assignments} WHERE id = ?", (job_id,))
            conn.commit()


# ---------------------------------------------------------------------------------------------
# get_job
# ---------------------------------------------------------------------------------------------


async def test_get_job_returns_the_current_row_with_parsed_fields(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    job = await ConfBMgmtCountingWorker.enqueue(
        {"key": "get", "n": [1, 2], "nested": {"x": None}}, priority=2, tags=["X", "y"]
    )
    await sql(oban, "UPDATE oban_jobs SET priority = 5 WHERE id = %s", (job.id,))

    for found in (await oban.get_job(_id(job)), await oban.get_job(job)):
        assert found is not None
        assert found.id == job.id
        assert found.worker == ConfBMgmtCountingWorker._worker_name
        assert found.args == {"key": "get", "n": [1, 2], "nested": {"x": None}}
        assert found.priority == 5  # read from the database, not the caller's object
        assert found.tags == ["x", "y"]
        assert found.state == "available"
        assert found.queue == "confb_mgmt"
        assert found.errors == []
        assert _near_now(found.inserted_at)
        assert _near_now(found.scheduled_at)

    assert await oban.get_job(987654321) is None
    assert await oban.get_job(ConfBMgmtCountingWorker.new({"key": "unsaved"})) is None


# ---------------------------------------------------------------------------------------------
# cancel
# ---------------------------------------------------------------------------------------------


async def test_cancel_makes_waiting_jobs_cancelled_and_stamps_cancel_attempted_at(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    waiting = [
        await _make(oban, sql, state, meta={"keep": state})
        for state in ("available", "scheduled", "retryable", "suspended")
    ]

    assert await oban.cancel_many_jobs(waiting) == 4

    for before in waiting:
        after = await _get(oban, before.id)
        assert after.state == "cancelled", before.state
        assert _near_now(after.cancelled_at), before.state
        assert after.meta["keep"] == before.state
        stamp = datetime.fromisoformat(after.meta["cancel_attempted_at"])
        assert stamp.tzinfo is not None
        assert after.cancelled_at is not None
        assert abs(stamp - after.cancelled_at) < timedelta(seconds=1)


async def test_cancel_job_accepts_a_job_or_an_id_and_skips_finished_or_missing_jobs(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await _make(oban, sql, "available", args={"key": "a"})
    second = await _make(oban, sql, "scheduled", args={"key": "b"})
    finished = [
        await _make(oban, sql, s, meta={"keep": 1}) for s in ("completed", "discarded", "cancelled")
    ]

    assert await oban.cancel_job(first) == 1
    assert await oban.cancel_job(_id(second)) == 1
    assert await oban.cancel_many_jobs([*finished, 987654321]) == 0
    assert await oban.cancel_many_jobs([]) == 0

    assert (await _get(oban, first.id)).state == "cancelled"
    assert (await _get(oban, second.id)).state == "cancelled"
    for before in finished:
        after = await _get(oban, before.id)
        assert after.state == before.state
        assert after.cancelled_at == before.cancelled_at
        assert after.completed_at == before.completed_at
        assert after.discarded_at == before.discarded_at
        assert "cancel_attempted_at" not in after.meta
        assert after.meta == {"keep": 1}


REASON = "cancelled while executing"


def _assert_cancelled_while_executing(job: Job, attempt: int = 1) -> None:
    """The row was cancelled while executing: state, timestamps, stamp and error."""
    assert job.state == "cancelled"
    assert _near_now(job.cancelled_at)
    assert job.completed_at is None
    assert "cancel_attempted_at" in job.meta
    assert job.attempt == attempt
    assert [(e["attempt"], e["error"]) for e in job.errors] == [(attempt, REASON)]
    assert _near_now(datetime.fromisoformat(job.errors[0]["at"]))


async def test_cancel_of_an_executing_row_counts_it_and_cancels_it_with_an_error(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    # No node runs it (the row was just put in executing): the database write alone counts.
    executing = await _make(oban, sql, "executing", meta={"keep": 1})

    assert await oban.cancel_job(executing) == 1

    after = await _get(oban, executing.id)
    _assert_cancelled_while_executing(after)
    assert after.meta["keep"] == 1
    stamp = datetime.fromisoformat(after.meta["cancel_attempted_at"])
    assert after.cancelled_at is not None
    assert abs(stamp - after.cancelled_at) < timedelta(seconds=1)
    assert await oban.cancel_job(executing) == 0  # now finished: not cancelled twice
    assert (await _get(oban, executing.id)).errors == after.errors


async def test_cancel_of_a_running_async_job_stops_it_before_it_can_complete(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    GATES["stopped"] = asyncio.Event()
    job = await ConfBMgmtBlockingWorker.enqueue({"key": "stopped"})
    await eventually(lambda: _state_is(server, job.id, "executing"), message="job running")
    await eventually(lambda: RUNS.get("stopped-started"), message="worker started")

    assert await server.cancel_job(job) == 1

    _assert_cancelled_while_executing(await _get(server, job.id))  # written at once
    await eventually(lambda: RUNS.get("stopped-finally"), timeout=2, message="task cancelled")
    await eventually(lambda: _running(server) == [], timeout=2, message="slot freed")
    GATES["stopped"].set()  # too late: the task is gone
    assert "stopped" not in RUNS
    _assert_cancelled_while_executing(await _get(server, job.id))


async def test_cancel_of_a_running_sync_job_writes_the_row_at_once_and_its_cancel_adds_nothing(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    steps = _steps("cancel-exec")
    job = await ConfBMgmtCancellableWorker.enqueue({"key": "cancel-exec"})
    await _wait_for(steps["started"], "worker started")

    assert await server.cancel_job(job) == 1

    await _wait_for(steps["noticed"], "worker saw job.cancelled()")
    # The worker's thread still runs, and the row already says cancelled.
    during = await _get(server, job.id)
    _assert_cancelled_while_executing(during)
    assert _running(server) == [job.id]

    steps["release"].set()
    await _wait_for(steps["returned"], "worker returned Cancel")
    await eventually(lambda: _running(server) == [], message="slot freed")
    await _flushed(server)
    after = await _get(server, job.id)
    # Its Cancel("confb-mgmt-stopped-on-request") changes nothing: the canceller's row stands.
    _assert_cancelled_while_executing(after)
    assert after.cancelled_at == during.cancelled_at


async def test_cancel_from_a_client_instance_stops_the_job_on_the_instance_running_it(
    make_oban: Callable[..., Oban],
) -> None:
    # Two instances of one process: docs/engines.md promises this on both engines.
    server = await _running_server(make_oban)
    client = make_oban(name="ConfBMgmtClient")
    GATES["remote"] = asyncio.Event()
    job = await ConfBMgmtBlockingWorker.enqueue({"key": "remote"})
    await eventually(lambda: RUNS.get("remote-started"), message="worker started")

    assert await client.cancel_job(_id(job)) == 1

    _assert_cancelled_while_executing(await _get(client, job.id))  # written at once
    await eventually(lambda: RUNS.get("remote-finally"), timeout=2, message="server stopped it")
    await eventually(lambda: _running(server) == [], timeout=2, message="slot freed")
    await _flushed(server)
    assert "remote" not in RUNS
    _assert_cancelled_while_executing(await _get(client, job.id))


async def test_cancel_of_a_job_that_already_completed_leaves_it_completed(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    job = await ConfBMgmtCountingWorker.enqueue({"key": "done"})
    done = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")

    assert await server.cancel_job(job) == 0

    after = await _get(server, job.id)
    assert after.state == "completed"
    assert after.completed_at == done.completed_at
    assert after.cancelled_at is None


# ---------------------------------------------------------------------------------------------
# retry
# ---------------------------------------------------------------------------------------------


async def test_retry_makes_finished_and_waiting_jobs_available_now_with_cleared_timestamps(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    states = ("completed", "discarded", "cancelled", "retryable", "scheduled")
    jobs = [await _make(oban, sql, state, meta={"keep": state}) for state in states]

    assert await oban.retry_many_jobs(jobs) == len(states)

    for before in jobs:
        after = await _get(oban, before.id)
        assert after.state == "available", before.state
        assert _near_now(after.scheduled_at), before.state
        assert after.completed_at is None
        assert after.cancelled_at is None
        assert after.discarded_at is None
        assert after.meta["uniq_bmp"] == []
        assert after.meta["keep"] == before.state


async def test_retry_job_accepts_a_job_or_an_id(oban: Oban, sql: Callable[..., Any]) -> None:
    first = await _make(oban, sql, "completed", args={"key": "a"})
    second = await _make(oban, sql, "cancelled", args={"key": "b"})

    assert await oban.retry_job(first) == 1
    assert await oban.retry_job(_id(second)) == 1

    assert (await _get(oban, first.id)).state == "available"
    assert (await _get(oban, second.id)).state == "available"


async def test_retry_of_an_exhausted_job_grants_one_more_attempt(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    exhausted = await _make(oban, sql, "discarded", max_attempts=3)
    assert exhausted.attempt == exhausted.max_attempts == 3
    roomy = await _make(oban, sql, "cancelled", max_attempts=5)

    assert await oban.retry_job(exhausted) == 1
    assert await oban.retry_job(_id(roomy)) == 1

    after = await _get(oban, exhausted.id)
    assert after.max_attempts == 4
    assert after.attempt == 3
    assert (await _get(oban, roomy.id)).max_attempts == 5


async def test_retry_leaves_available_and_executing_jobs_alone(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    available = await _make(oban, sql, "available")
    await sql(
        oban, "UPDATE oban_jobs SET scheduled_at = %s WHERE id = %s", (_ts(-3600), available.id)
    )
    available = await _get(oban, available.id)
    executing = await _make(oban, sql, "executing")

    assert await oban.retry_many_jobs([available, executing]) == 0

    after_available = await _get(oban, available.id)
    assert after_available.state == "available"
    assert after_available.scheduled_at == available.scheduled_at
    after_executing = await _get(oban, executing.id)
    assert after_executing.state == "executing"
    assert after_executing.attempted_at == executing.attempted_at


async def test_a_retried_job_runs_again_on_a_running_queue(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    job = await ConfBMgmtCountingWorker.enqueue({"key": "again"})
    await eventually(lambda: _state_is(server, job.id, "completed"), message="first run")
    assert RUNS["again"] == 1

    assert await server.retry_job(job) == 1

    await eventually(lambda: RUNS["again"] == 2, message="second run after retry")
    after = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")
    assert after.attempt == 2


async def test_retry_of_an_executing_job_that_then_completes_leaves_it_completed(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    GATES["retry-exec"] = asyncio.Event()
    job = await ConfBMgmtBlockingWorker.enqueue({"key": "retry-exec"})
    await eventually(lambda: RUNS.get("retry-exec-started"), message="job running")

    assert await server.retry_job(job) == 0
    GATES["retry-exec"].set()

    after = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")
    assert after.attempt == 1
    assert RUNS["retry-exec"] == 1


# ---------------------------------------------------------------------------------------------
# delete
# ---------------------------------------------------------------------------------------------


async def test_delete_removes_every_job_that_is_not_executing(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    states = (
        "available",
        "scheduled",
        "retryable",
        "suspended",
        "completed",
        "discarded",
        "cancelled",
    )
    gone = [await _make(oban, sql, state) for state in states]
    executing = await _make(oban, sql, "executing")

    assert await oban.delete_many_jobs([*gone, executing]) == len(states)

    for job in gone:
        assert await oban.get_job(job) is None, job.state
    assert (await _get(oban, executing.id)).state == "executing"
    assert await _count(oban, sql) == 1
    assert await oban.delete_job(executing) == 0


async def test_delete_job_accepts_a_job_or_an_id_and_counts_only_real_deletions(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await _make(oban, sql, "available", args={"key": "a"})
    second = await _make(oban, sql, "completed", args={"key": "b"})

    assert await oban.delete_job(first) == 1
    assert await oban.delete_job(_id(second)) == 1
    assert await oban.delete_job(_id(second)) == 0

    assert await _count(oban, sql) == 0


async def test_delete_of_a_running_job_is_refused_and_the_job_completes(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    GATES["delete"] = asyncio.Event()
    job = await ConfBMgmtBlockingWorker.enqueue({"key": "delete"})
    await eventually(lambda: _state_is(server, job.id, "executing"), message="job running")

    assert await server.delete_job(job) == 0
    GATES["delete"].set()

    after = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")
    assert after.completed_at is not None
    assert RUNS["delete"] == 1


# ---------------------------------------------------------------------------------------------
# update
# ---------------------------------------------------------------------------------------------


async def test_update_job_stores_every_updatable_field(oban: Oban, sql: Callable[..., Any]) -> None:
    job = await _make(oban, sql, "available", args={"key": "old"}, meta={"m": 0}, tags=["old"])

    returned = await oban.update_job(
        job,
        {
            "args": {"key": "new", "n": 2},
            "max_attempts": 7,
            "meta": {"m": 1, "extra": "yes"},
            "priority": 3,
            "queue": "elsewhere",
            "scheduled_in": 3600,
            "tags": ["Beta", "alpha", "beta"],
            "worker": "tests.somewhere.OtherWorker",
        },
    )

    stored = await _get(oban, job.id)
    for found in (returned, stored):
        assert found.id == job.id
        assert found.args == {"key": "new", "n": 2}
        assert found.max_attempts == 7
        assert found.meta == {"m": 1, "extra": "yes"}
        assert found.priority == 3
        assert found.queue == "elsewhere"
        assert _near_now(found.scheduled_at, timedelta(hours=1))
        assert found.tags == ["alpha", "beta"]
        assert found.worker == "tests.somewhere.OtherWorker"
        assert found.state == "scheduled"


async def test_update_with_scheduled_at_stores_that_time(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    job = await _make(oban, sql, "available")
    # The precision each engine stores: microseconds on PostgreSQL, milliseconds on SQLite.
    micro = 123456 if engine == "postgres" else 123000
    when = datetime(2999, 1, 2, 3, 4, 5, micro, tzinfo=UTC)

    await oban.update_job(_id(job), {"scheduled_at": when})

    stored = await _get(oban, job.id)
    assert stored.scheduled_at == when
    assert stored.state == "scheduled"


async def test_update_flips_available_and_scheduled_by_the_new_scheduled_at(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    available = await _make(oban, sql, "available", args={"key": "a"})
    aliased = await _make(oban, sql, "available", args={"key": "alias"})
    scheduled = await _make(oban, sql, "scheduled", args={"key": "s"})
    past = datetime.now(UTC) - timedelta(minutes=5)

    later = await oban.update_job(available, {"scheduled_in": 3600})
    later_alias = await oban.update_job(aliased, {"schedule_in": timedelta(minutes=30)})
    due = await oban.update_job(scheduled, {"scheduled_at": past})

    assert later.state == "scheduled"
    assert (await _get(oban, available.id)).state == "scheduled"
    assert later_alias.state == "scheduled"
    assert _near_now((await _get(oban, aliased.id)).scheduled_at, timedelta(minutes=30))
    assert due.state == "available"
    stored = await _get(oban, scheduled.id)
    assert stored.state == "available"
    assert stored.scheduled_at is not None
    assert abs(stored.scheduled_at - past) < timedelta(milliseconds=1)


async def test_update_many_with_a_callable_computes_changes_per_job(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    jobs = [await _make(oban, sql, "available", args={"key": f"k{n}", "n": n}) for n in (1, 2, 3)]
    seen: list[int] = []

    def changes(job: Job) -> dict[str, Any]:
        seen.append(job.args["n"])  # the callable gets each job as stored
        return {"args": {**job.args, "n": job.args["n"] * 10}, "priority": job.args["n"]}

    updated = await oban.update_many_jobs([jobs[0], _id(jobs[1]), jobs[2]], changes)

    assert sorted(seen) == [1, 2, 3]
    assert sorted(j.args["n"] for j in updated) == [10, 20, 30]
    for n, job in zip((1, 2, 3), jobs, strict=True):
        stored = await _get(oban, job.id)
        assert stored.args == {"key": f"k{n}", "n": n * 10}
        assert stored.priority == n


async def test_update_revalidates_and_changes_nothing_when_invalid(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await _make(oban, sql, "available", args={"key": "a"}, priority=1)
    second = await _make(oban, sql, "available", args={"key": "b"}, priority=1)

    with pytest.raises(ValueError, match="priority"):
        await oban.update_job(first, {"priority": 10})

    def changes(job: Job) -> dict[str, Any]:
        return {"priority": 10 if job.id == second.id else 5, "args": {"key": "changed"}}

    with pytest.raises(ValueError, match="priority"):
        await oban.update_many_jobs([first, second], changes)
    with pytest.raises(ValueError):
        await oban.update_job(first, {"max_attempts": 0})
    with pytest.raises(ValueError):
        await oban.update_job(first, {"state": "completed"})

    for job in (first, second):
        stored = await _get(oban, job.id)
        assert stored.priority == 1
        assert stored.args == job.args
        assert stored.state == "available"
        assert stored.max_attempts == job.max_attempts


async def test_update_of_a_missing_id_raises_naming_it_and_changes_nothing(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    present = await _make(oban, sql, "available", priority=1)

    with pytest.raises(ValueError, match="987654321"):
        await oban.update_job(987654321, {"priority": 2})
    with pytest.raises(ValueError, match="987654322"):
        await oban.update_many_jobs([present, 987654322], {"priority": 2})

    assert (await _get(oban, present.id)).priority == 1


async def test_update_leaves_executing_jobs_unchanged(oban: Oban, sql: Callable[..., Any]) -> None:
    executing = await _make(oban, sql, "executing", priority=1)
    waiting = await _make(oban, sql, "available", priority=1)

    with pytest.raises(ValueError, match=str(executing.id)):
        await oban.update_job(executing, {"priority": 4})

    updated = await oban.update_many_jobs([executing, waiting], {"priority": 4})

    assert [job.id for job in updated] == [waiting.id]
    stored_executing = await _get(oban, executing.id)
    assert stored_executing.priority == 1
    assert stored_executing.state == "executing"
    assert (await _get(oban, waiting.id)).priority == 4


async def test_update_of_a_completed_job_does_not_resurrect_it(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    job = await _make(oban, sql, "completed")

    past = await oban.update_job(job, {"scheduled_at": datetime.now(UTC) - timedelta(hours=1)})
    future = await oban.update_job(job, {"scheduled_in": 3600, "priority": 2})

    assert past.state == "completed"
    assert future.state == "completed"
    stored = await _get(oban, job.id)
    assert stored.state == "completed"
    assert stored.completed_at == job.completed_at
    assert stored.priority == 2


async def test_update_of_a_job_that_completes_while_being_updated_stays_completed(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    job = await _make(oban, sql, "available", args={"key": "race"})

    def complete_meanwhile(current: Job) -> dict[str, Any]:
        # Runs between the read and the write of update_job: the job finishes meanwhile.
        _write_meanwhile(
            oban,
            engine,
            f"state = 'completed', attempt = 1, completed_at = '{_ts()}', "
            'meta = \'{"recorded": true, "return": "g2EB"}\'',
            _id(current),
        )
        return {"scheduled_at": datetime.now(UTC) - timedelta(minutes=1), "meta": {"v": 2}}

    # The job changed state between the read and the write: the update is refused rather
    # than overwriting what the finished job recorded.
    with pytest.raises(ValueError, match="changed state"):
        await oban.update_job(job, complete_meanwhile)

    stored = await _get(oban, job.id)
    assert stored.state == "completed"
    assert stored.completed_at is not None
    assert stored.meta == {"recorded": True, "return": "g2EB"}


async def test_update_of_a_job_that_starts_executing_while_being_updated_leaves_it_alone(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    job = await _make(oban, sql, "available", args={"key": "race"}, priority=1)

    def fetched_meanwhile(current: Job) -> dict[str, Any]:
        # Runs between the read and the write of update_job: a queue claims the job meanwhile.
        _write_meanwhile(
            oban,
            engine,
            f"state = 'executing', attempt = 1, attempted_at = '{_ts()}'",
            _id(current),
        )
        return {"priority": 7, "args": {"key": "changed"}}

    with pytest.raises(ValueError):
        await oban.update_job(job, fetched_meanwhile)

    stored = await _get(oban, job.id)
    assert stored.state == "executing"
    assert stored.priority == 1
    assert stored.args == {"key": "race"}


async def test_update_of_a_running_job_is_refused_and_it_completes_with_its_args(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    GATES["update"] = asyncio.Event()
    job = await ConfBMgmtBlockingWorker.enqueue({"key": "update"})
    await eventually(lambda: _state_is(server, job.id, "executing"), message="job running")

    with pytest.raises(ValueError):
        await server.update_job(job, {"args": {"key": "other"}})
    GATES["update"].set()

    after = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")
    assert after.args == {"key": "update"}


async def test_management_methods_reject_jobs_without_an_id(oban: Oban) -> None:
    unsaved = ConfBMgmtCountingWorker.new({"key": "unsaved"})
    with pytest.raises(TypeError):
        await oban.cancel_job(unsaved)
    with pytest.raises(TypeError):
        await oban.retry_job(unsaved)
    with pytest.raises(TypeError):
        await oban.delete_job(unsaved)
    with pytest.raises(TypeError):
        await oban.update_job(unsaved, {"priority": 1})
