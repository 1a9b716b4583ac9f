"""Executing jobs end to end: running Oban instances against a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Cancel, Job, Oban, Record, Snooze, current_job, worker
from oban._notifier import encode_payload
from oban._recorded import decode_recorded
from oban.errors import DatabaseUnavailableError, SchemaNotInstalledError
from oban.job import JobState
from tests.helpers import eventually

# ---------------------------------------------------------------------------------------------
# Shared state the workers write to. Every test resets what it uses.
# ---------------------------------------------------------------------------------------------

RUNS: Counter[int] = Counter()
ATTEMPTS: dict[int, list[int]] = {}
EVENTS: dict[str, Any] = {}


def _reset() -> None:
    RUNS.clear()
    ATTEMPTS.clear()
    EVENTS.clear()


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    _reset()


async def _job(oban: Oban, job_id: int) -> Job:
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing from the database"
    return found


async def _state_is(oban: Oban, job_id: int, state: str) -> Job | None:
    found = await oban.get_job(job_id)
    return found if found is not None and found.state == state else None


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


@worker(queue="default")
class ExecOkWorker:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1  # type: ignore[index]
        return {"ignored": True}


@worker(queue="default")
class ExecRaiseWorker:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1  # type: ignore[index]
        raise ValueError(f"exec-boom-{job.id}")


@worker(queue="default")
class ExecFlakyWorker:
    def backoff(self, job: Job) -> int:
        return 0

    async def process(self, job: Job) -> Any:
        ATTEMPTS.setdefault(job.id, []).append(job.attempt)  # type: ignore[arg-type]
        if job.attempt == 1:
            raise RuntimeError("exec-flaky-first-attempt")
        return None


@worker(queue="default")
class ExecSnoozeOnceWorker:
    async def process(self, job: Job) -> Any:
        ATTEMPTS.setdefault(job.id, []).append(job.attempt)  # type: ignore[arg-type]
        if len(ATTEMPTS[job.id]) == 1:  # type: ignore[index]
            return Snooze(1)
        return None


@worker(queue="default")
class ExecSnoozeMetaWorker:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1  # type: ignore[index]
        return Snooze(60, meta={"reason": "later"})


@worker(queue="default")
class ExecCancelWorker:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1  # type: ignore[index]
        return Cancel("exec-not-wanted")


@worker(queue="default")
class ExecRecordWorker:
    async def process(self, job: Job) -> Any:
        return Record({"a": 1})


@worker(queue="default")
class ExecTimeoutWorker:
    def timeout(self, job: Job) -> float:
        return 0.2

    async def process(self, job: Job) -> Any:
        await asyncio.sleep(10)
        RUNS[job.id] += 1  # type: ignore[index]


@worker(queue="slow")
class ExecSyncSleepWorker:
    def process(self, job: Job) -> Any:
        EVENTS["sync_started"].set()
        time.sleep(1.0)
        EVENTS["sync_finished"].set()


@worker(queue="fast")
class ExecFastAsyncWorker:
    async def process(self, job: Job) -> Any:
        await asyncio.sleep(0)
        RUNS[job.id] += 1  # type: ignore[index]
        EVENTS.setdefault("fast_during_sync", []).append(not EVENTS["sync_finished"].is_set())


@worker(queue="default")
class ExecCooperativeWorker:
    async def process(self, job: Job) -> Any:
        EVENTS["coop_started"].set()
        deadline = time.monotonic() + 10
        while not job.cancelled():
            if time.monotonic() > deadline:
                return None  # would complete the job: the test then fails on the state
            await asyncio.sleep(0.01)
        return Cancel("exec-cancelled-by-signal")


@worker(queue="default")
class ExecCountingWorker:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1  # type: ignore[index]


@worker(queue="default")
class ExecOrderWorker:
    async def process(self, job: Job) -> Any:
        EVENTS.setdefault("order", []).append(job.args["n"])


@worker(queue="default")
class ExecScheduledWorker:
    async def process(self, job: Job) -> Any:
        EVENTS["ran_at"] = datetime.now(UTC)


@worker(queue="default")
class ExecCurrentAsyncWorker:
    async def process(self, job: Job) -> Any:
        EVENTS["async_current"] = current_job()


@worker(queue="default")
class ExecCurrentSyncWorker:
    def process(self, job: Job) -> Any:
        EVENTS["sync_current"] = current_job()


@worker(queue="default")
class ExecSlowFinishWorker:
    async def process(self, job: Job) -> Any:
        EVENTS["slow_started"].set()
        await asyncio.sleep(0.5)
        EVENTS["slow_finished"] = True


@worker(queue="default")
class ExecBlockingWorker:
    async def process(self, job: Job) -> Any:
        EVENTS["blocking_started"].set()
        await EVENTS["blocking_release"].wait()
        RUNS[job.id] += 1  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Outcomes of process()
# ---------------------------------------------------------------------------------------------


async def test_returning_completes_the_job_once(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecOkWorker.enqueue({})
        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"), message="job completed"
        )

    assert done.completed_at is not None
    assert done.attempt == 1
    assert done.errors == []
    assert RUNS[job.id] == 1


async def test_raising_makes_the_job_retryable_with_error_and_backoff(make_oban, sql):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecRaiseWorker.enqueue({})
        failed = await eventually(
            lambda: _state_is(oban, job.id, "retryable"), message="job retryable"
        )

    assert RUNS[job.id] == 1
    assert failed.attempt == 1
    assert failed.completed_at is None and failed.discarded_at is None
    assert len(failed.errors) == 1
    entry = failed.errors[0]
    assert entry["attempt"] == 1
    assert isinstance(entry["at"], str) and entry["at"].endswith("Z")
    at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
    assert abs((at - failed.attempted_at).total_seconds()) < 5
    assert "ValueError" in entry["error"]
    assert f"exec-boom-{job.id}" in entry["error"]

    # Default backoff after attempt 1: 15 + 2**1 seconds plus up to 10% jitter.
    ((delay,),) = await sql(
        "SELECT extract(epoch FROM scheduled_at - attempted_at)::float FROM oban_jobs "
        "WHERE id = %s",
        (job.id,),
    )
    assert 17 <= delay <= 20, delay


async def test_raising_on_the_last_attempt_discards_the_job(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecRaiseWorker.enqueue({}, max_attempts=1)
        discarded = await eventually(
            lambda: _state_is(oban, job.id, "discarded"), message="job discarded"
        )

    assert RUNS[job.id] == 1
    assert discarded.discarded_at is not None
    assert discarded.completed_at is None
    assert len(discarded.errors) == 1
    assert discarded.errors[0]["attempt"] == 1
    assert f"exec-boom-{job.id}" in discarded.errors[0]["error"]


async def test_a_failed_job_is_retried_and_then_completes(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecFlakyWorker.enqueue({})
        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"),
            timeout=8,
            message="retried job completed",
        )

    assert ATTEMPTS[job.id] == [1, 2]
    assert done.attempt == 2
    assert len(done.errors) == 1
    assert done.errors[0]["attempt"] == 1
    assert "exec-flaky-first-attempt" in done.errors[0]["error"]


async def test_snooze_reschedules_without_counting_the_attempt(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecSnoozeOnceWorker.enqueue({})
        snoozed = await eventually(
            lambda: _state_is(oban, job.id, "scheduled"), message="job snoozed"
        )
        assert snoozed.meta.get("snoozed") == 1
        assert snoozed.attempt == 0
        assert snoozed.errors == []
        assert snoozed.completed_at is None
        wait = (snoozed.scheduled_at - snoozed.attempted_at).total_seconds()
        assert 0.9 <= wait <= 3, wait

        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"),
            timeout=8,
            message="snoozed job ran again",
        )

    # Both executions saw attempt 1: the snooze did not use up an attempt.
    assert ATTEMPTS[job.id] == [1, 1]
    assert done.attempt == 1
    assert done.meta.get("snoozed") == 1


async def test_snooze_with_meta_merges_it_into_the_job_meta(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecSnoozeMetaWorker.enqueue({}, meta={"origin": "test"})
        snoozed = await eventually(
            lambda: _state_is(oban, job.id, "scheduled"), message="job snoozed"
        )

    assert RUNS[job.id] == 1
    assert snoozed.meta == {"origin": "test", "reason": "later", "snoozed": 1}
    assert snoozed.attempt == 0
    wait = (snoozed.scheduled_at - snoozed.attempted_at).total_seconds()
    assert 59 <= wait <= 65, wait


async def test_cancel_result_cancels_the_job_with_the_reason(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecCancelWorker.enqueue({})
        cancelled = await eventually(
            lambda: _state_is(oban, job.id, "cancelled"), message="job cancelled"
        )

    assert RUNS[job.id] == 1
    assert cancelled.cancelled_at is not None
    assert cancelled.completed_at is None
    assert len(cancelled.errors) == 1
    assert "exec-not-wanted" in cancelled.errors[0]["error"]
    assert cancelled.errors[0]["attempt"] == 1


async def test_record_completes_and_stores_the_encoded_value(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecRecordWorker.enqueue({})
        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"), message="job completed"
        )

    assert done.completed_at is not None
    assert done.meta["recorded"] is True
    assert decode_recorded(done.meta["return"]) == {"a": 1}


async def test_exceeding_the_worker_timeout_makes_the_job_retryable(make_oban):
    oban = make_oban(queues={"default": 5})
    started = time.monotonic()
    async with oban:
        job = await ExecTimeoutWorker.enqueue({})
        failed = await eventually(
            lambda: _state_is(oban, job.id, "retryable"), message="timed-out job retryable"
        )
    assert time.monotonic() - started < 5
    assert RUNS[job.id] == 0  # the sleep was interrupted
    assert len(failed.errors) == 1
    assert "JobTimeoutError" in failed.errors[0]["error"]
    assert failed.scheduled_at > failed.attempted_at


async def test_unresolvable_worker_is_retryable_and_queue_keeps_running(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        bad = await oban.enqueue(Job("no.such.Worker", max_attempts=2))
        failed = await eventually(
            lambda: _state_is(oban, bad.id, "retryable"), message="unresolvable job retryable"
        )
        assert len(failed.errors) == 1
        assert "WorkerResolutionError" in failed.errors[0]["error"]
        assert "no.such.Worker" in failed.errors[0]["error"]

        good = await ExecOkWorker.enqueue({})
        await eventually(
            lambda: _state_is(oban, good.id, "completed"),
            message="queue still runs jobs after a resolution failure",
        )
    assert RUNS[good.id] == 1


# ---------------------------------------------------------------------------------------------
# Concurrency, cancellation and multiple nodes
# ---------------------------------------------------------------------------------------------


async def test_sync_worker_does_not_stall_async_queue(make_oban, sql):
    EVENTS["sync_started"] = threading.Event()
    EVENTS["sync_finished"] = threading.Event()
    oban = make_oban(queues={"slow": 1, "fast": 10})
    async with oban:
        slow = await ExecSyncSleepWorker.enqueue({})
        await eventually(EVENTS["sync_started"].is_set, message="sync job started")

        fast = await oban.enqueue_many([ExecFastAsyncWorker.new({"n": n}) for n in range(20)])
        fast_ids = [j.id for j in fast]

        async def all_fast_completed() -> bool:
            rows = await sql(
                "SELECT count(*) FROM oban_jobs WHERE id = ANY(%s) AND state = 'completed'",
                (fast_ids,),
            )
            return rows[0][0] == 20

        await eventually(all_fast_completed, timeout=5, message="20 async jobs completed")
        sync_still_running = not EVENTS["sync_finished"].is_set()

        await eventually(
            lambda: _state_is(oban, slow.id, "completed"), message="sync job completed"
        )

    assert all(RUNS[i] == 1 for i in fast_ids)
    assert EVENTS["fast_during_sync"] == [True] * 20
    assert sync_still_running, "async jobs only completed after the sync job finished sleeping"


async def test_pkill_signal_sets_job_cancelled(make_oban):
    EVENTS["coop_started"] = asyncio.Event()
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecCooperativeWorker.enqueue({})
        await asyncio.wait_for(EVENTS["coop_started"].wait(), timeout=5)
        await oban._engine.notify(
            "signal", [encode_payload({"action": "pkill", "job_id": job.id, "ident": "any"})]
        )
        cancelled = await eventually(
            lambda: _state_is(oban, job.id, "cancelled"), message="job cancelled via pkill"
        )

    assert cancelled.cancelled_at is not None
    assert "exec-cancelled-by-signal" in cancelled.errors[0]["error"]


async def test_two_nodes_execute_every_job_exactly_once(make_oban, sql):
    node_a = make_oban(name="A", node="exec-node-a", queues={"default": 10})
    node_b = make_oban(name="B", node="exec-node-b", queues={"default": 10})
    await node_a.start()
    await node_b.start()

    jobs = await node_a.enqueue_many([ExecCountingWorker.new({"n": n}) for n in range(2000)])
    ids = {j.id for j in jobs}
    assert len(ids) == 2000

    async def all_completed() -> bool:
        rows = await sql("SELECT count(*) FROM oban_jobs WHERE state = 'completed'")
        return rows[0][0] == 2000

    await eventually(all_completed, timeout=60, message="2000 jobs completed")
    await node_a.stop()
    await node_b.stop()

    assert set(RUNS) == ids
    duplicated = {i: n for i, n in RUNS.items() if n != 1}
    assert duplicated == {}, f"jobs executed more than once: {list(duplicated.items())[:10]}"
    rows = await sql("SELECT attempted_by[1], count(*) FROM oban_jobs GROUP BY 1")
    per_node = dict(rows)
    assert set(per_node) == {"exec-node-a", "exec-node-b"}, per_node
    assert sum(per_node.values()) == 2000
    states = await sql("SELECT state::text, attempt, count(*) FROM oban_jobs GROUP BY 1, 2")
    assert states == [("completed", 1, 2000)]


# ---------------------------------------------------------------------------------------------
# Queues: pausing, scheduling, priority
# ---------------------------------------------------------------------------------------------


async def test_paused_queue_runs_nothing_until_resumed(make_oban):
    oban = make_oban(queues={"default": {"limit": 5, "paused": True}})
    async with oban:
        job = await ExecOkWorker.enqueue({})
        # Long enough for the insert notification, a poll and a stager tick.
        await asyncio.sleep(1.3)
        still = await _job(oban, job.id)
        assert still.state == JobState.AVAILABLE
        assert RUNS[job.id] == 0
        assert oban.check_queue("default").paused is True

        await oban.resume_queue("default")
        await eventually(
            lambda: _state_is(oban, job.id, "completed"), message="job ran after resume"
        )
        assert oban.check_queue("default").paused is False
    assert RUNS[job.id] == 1


async def test_scheduled_job_runs_after_its_time(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ExecScheduledWorker.enqueue({}, scheduled_in=1)
        assert job.state == JobState.SCHEDULED
        inserted = await _job(oban, job.id)
        assert inserted.state == JobState.SCHEDULED

        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"),
            timeout=5,
            message="scheduled job completed",
        )

    assert EVENTS["ran_at"] >= job.scheduled_at
    assert done.attempted_at >= job.scheduled_at


async def test_lower_priority_number_runs_first(make_oban):
    oban = make_oban(queues={"default": 1})
    low = [ExecOrderWorker.new({"n": f"p9-{n}"}, priority=9) for n in range(3)]
    await oban.enqueue_many(low)
    high = [ExecOrderWorker.new({"n": f"p0-{n}"}, priority=0) for n in range(3)]
    await oban.enqueue_many(high)

    async with oban:
        await eventually(lambda: len(EVENTS.get("order", [])) == 6, message="all jobs ran")

    assert EVENTS["order"] == ["p0-0", "p0-1", "p0-2", "p9-0", "p9-1", "p9-2"]


async def test_current_job_inside_process(make_oban):
    oban = make_oban(queues={"default": 5})
    async with oban:
        async_job = await ExecCurrentAsyncWorker.enqueue({"k": "async"})
        sync_job = await ExecCurrentSyncWorker.enqueue({"k": "sync"})
        await eventually(
            lambda: "async_current" in EVENTS and "sync_current" in EVENTS,
            message="both jobs ran",
        )

    assert isinstance(EVENTS["async_current"], Job)
    assert EVENTS["async_current"].id == async_job.id
    assert EVENTS["async_current"].args == {"k": "async"}
    assert isinstance(EVENTS["sync_current"], Job)
    assert EVENTS["sync_current"].id == sync_job.id
    assert EVENTS["sync_current"].args == {"k": "sync"}
    assert current_job() is None


# ---------------------------------------------------------------------------------------------
# Shutdown and acks
# ---------------------------------------------------------------------------------------------


async def test_stop_waits_for_running_job_and_flushes_its_ack(make_oban, sql):
    EVENTS["slow_started"] = asyncio.Event()
    oban = make_oban(queues={"default": 5}, shutdown_grace_period=5.0)
    await oban.start()
    job = await ExecSlowFinishWorker.enqueue({})
    await asyncio.wait_for(EVENTS["slow_started"].wait(), timeout=5)

    started = time.monotonic()
    await oban.stop()
    elapsed = time.monotonic() - started

    assert EVENTS.get("slow_finished") is True
    assert elapsed < 4
    rows = await sql("SELECT state::text, completed_at FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows[0][0] == "completed"
    assert rows[0][1] is not None


@pytest.mark.parametrize(
    ("new_state", "expected_state"),
    [
        # Rescued: made available again.
        ("available", "available"),
        # Rescued and fetched again elsewhere: executing, but with another attempted_at.
        ("executing", "executing"),
    ],
)
async def test_stale_ack_is_ignored(make_oban, sql, new_state, expected_state):
    EVENTS["blocking_started"] = asyncio.Event()
    EVENTS["blocking_release"] = asyncio.Event()
    oban = make_oban(queues={"default": 1})
    await oban.start()
    job = await ExecBlockingWorker.enqueue({})
    await asyncio.wait_for(EVENTS["blocking_started"].wait(), timeout=5)

    # Keep this node from fetching the job again once its slot frees up.
    await oban.pause_queue("default")
    await sql(
        "UPDATE oban_jobs SET state = %s::oban_job_state, "
        "attempted_at = attempted_at - interval '1 hour' WHERE id = %s",
        (new_state, job.id),
    )
    EVENTS["blocking_release"].set()
    await oban.stop()  # waits for the job and flushes its (stale) ack

    assert RUNS[job.id] == 1
    rows = await sql(
        "SELECT state::text, completed_at, errors FROM oban_jobs WHERE id = %s", (job.id,)
    )
    state, completed_at, errors = rows[0]
    assert state == expected_state
    assert completed_at is None
    assert errors == []


async def test_check_queue_and_check_all_queues(make_oban):
    EVENTS["blocking_started"] = asyncio.Event()
    EVENTS["blocking_release"] = asyncio.Event()
    oban = make_oban(
        node="exec-check-node",
        queues={"default": 2, "other": {"limit": 3, "paused": True}},
    )
    async with oban:
        job = await ExecBlockingWorker.enqueue({})
        await asyncio.wait_for(EVENTS["blocking_started"].wait(), timeout=5)

        info = oban.check_queue("default")
        assert info is not None
        assert info.queue == "default"
        assert info.limit == 2
        assert info.paused is False
        assert info.node == "exec-check-node"
        assert info.running == [job.id]

        other = oban.check_queue("other")
        assert other is not None
        assert (other.queue, other.limit, other.paused, other.running) == ("other", 3, True, [])

        assert oban.check_queue("missing") is None

        infos = {i.queue: i for i in oban.check_all_queues()}
        assert set(infos) == {"default", "other"}
        assert infos["default"].running == [job.id]
        assert infos["other"].paused is True
        assert all(i.node == "exec-check-node" for i in infos.values())

        EVENTS["blocking_release"].set()
        await eventually(
            lambda: _state_is(oban, job.id, "completed"), message="blocking job completed"
        )
        await eventually(lambda: oban.check_queue("default").running == [])


# ---------------------------------------------------------------------------------------------
# Start-up failures
# ---------------------------------------------------------------------------------------------


async def test_start_without_installed_schema_raises(make_oban, sql):
    empty = f"exec_empty_{uuid.uuid4().hex[:12]}"
    await sql(f'CREATE SCHEMA "{empty}"')
    try:
        oban = make_oban(prefix=empty, queues={"default": 1})
        with pytest.raises(SchemaNotInstalledError) as info:
            await oban.start()
        assert "oban install" in str(info.value)
        assert oban.check_all_queues() == []
    finally:
        await sql(f'DROP SCHEMA "{empty}" CASCADE')


async def test_start_with_unreachable_database_raises_quickly(make_oban):
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        "postgresql://postgres@127.0.0.1:1/test", open=False
    )
    await pool.open(wait=False)
    try:
        oban = make_oban(pool=pool, queues={"default": 1})
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError):
            await asyncio.wait_for(oban.start(), timeout=30)
        assert time.monotonic() - started < 15
    finally:
        await pool.close()
