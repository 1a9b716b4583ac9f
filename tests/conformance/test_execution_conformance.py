"""Executing jobs end to end on both engines: outcomes, retries, queues, shutdown, acks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from oban import Cancel, Job, Oban, Record, Snooze, current_job, worker
from oban._recorded import decode_recorded
from oban._wire import encode_payload
from oban.oban import QueueInfo
from tests.helpers import eventually

# Shared state the workers write to; reset before every test. Keyed by ``job.id``.

RUNS: Counter[int | None] = Counter()
ATTEMPTS: dict[int | None, list[int]] = {}
NODES: Counter[str] = Counter()
EVENTS: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    RUNS.clear()
    ATTEMPTS.clear()
    NODES.clear()
    EVENTS.clear()


async def _job(oban: Oban, job_id: int | None) -> Job:
    assert job_id is not None, "the job was never inserted"
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing from the database"
    return found


async def _state_is(oban: Oban, job_id: int | None, state: str) -> Job | None:
    assert job_id is not None, "the job was never inserted"
    found = await oban.get_job(job_id)
    return found if found is not None and found.state == state else None


def _id(job: Job) -> int:
    assert job.id is not None, "the job was never inserted"
    return job.id


def _queue(oban: Oban, queue: str) -> QueueInfo:
    info = oban.check_queue(queue)
    assert info is not None, f"queue {queue!r} is not running on this node"
    return info


async def _count(sql: Any, oban: Oban, state: str) -> int:
    rows = await sql(oban, "SELECT count(*) FROM oban_jobs WHERE state = %s", (state,))
    return int(rows[0][0])


# Workers


@worker(queue="default")
class ConfAExecOk:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1
        return {"ignored": True}


@worker(queue="default")
class ConfAExecRaise:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1
        raise ValueError(f"confa-boom-{job.id}")


@worker(queue="default")
class ConfAExecFlaky:
    def backoff(self, job: Job) -> int:
        return 0

    async def process(self, job: Job) -> Any:
        ATTEMPTS.setdefault(job.id, []).append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("confa-flaky-first-attempt")
        return None


@worker(queue="default")
class ConfAExecSnoozeOnce:
    async def process(self, job: Job) -> Any:
        ATTEMPTS.setdefault(job.id, []).append(job.attempt)
        if len(ATTEMPTS[job.id]) == 1:
            return Snooze(1)
        return None


@worker(queue="default")
class ConfAExecSnoozeMeta:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1
        return Snooze(60, meta={"reason": "later"})


@worker(queue="default")
class ConfAExecCancel:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1
        return Cancel("confa-not-wanted")


@worker(queue="default")
class ConfAExecRecord:
    async def process(self, job: Job) -> Any:
        return Record({"a": 1, "list": [1, "two", None], "ok": True})


@worker(queue="default")
class ConfAExecSnoozePrecise:
    async def process(self, job: Job) -> Any:
        return Snooze(60, meta={"score": 0.1 + 0.2, "big": 2**60})


@worker(queue="default")
class ConfAExecTimeout:
    def timeout(self, job: Job) -> float:
        return 0.2

    async def process(self, job: Job) -> Any:
        await asyncio.sleep(10)
        RUNS[job.id] += 1


@worker(queue="slow")
class ConfAExecSyncSleep:
    def process(self, job: Job) -> Any:
        EVENTS["sync_started"].set()
        time.sleep(1.0)
        EVENTS["sync_finished"].set()


@worker(queue="fast")
class ConfAExecFastAsync:
    async def process(self, job: Job) -> Any:
        await asyncio.sleep(0)
        RUNS[job.id] += 1
        EVENTS.setdefault("fast_during_sync", []).append(not EVENTS["sync_finished"].is_set())


@worker(queue="default")
class ConfAExecCooperative:
    """Polls ``job.cancelled()`` (10 s at most) and would return ``Cancel``; notes in EVENTS
    whether it got that far and whether its ``finally`` ran."""

    async def process(self, job: Job) -> Any:
        EVENTS["coop_started"].set()
        try:
            deadline = time.monotonic() + 10
            while not job.cancelled():
                if time.monotonic() > deadline:
                    return None  # would complete the job: the test then fails on the state
                await asyncio.sleep(0.01)
            EVENTS["coop_returned_cancel"] = True
            return Cancel("confa-cancelled-by-signal")
        finally:
            EVENTS["coop_finally"] = job.cancelled()


@worker(queue="default")
class ConfAExecCounting:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1
        NODES[job.attempted_by[0]] += 1


@worker(queue="default")
class ConfAExecOrder:
    async def process(self, job: Job) -> Any:
        EVENTS.setdefault("order", []).append(job.args["n"])


@worker(queue="default")
class ConfAExecScheduled:
    async def process(self, job: Job) -> Any:
        EVENTS["ran_at"] = datetime.now(UTC)


@worker(queue="default")
class ConfAExecCurrentAsync:
    async def process(self, job: Job) -> Any:
        EVENTS["async_current"] = current_job()


@worker(queue="default")
class ConfAExecCurrentSync:
    def process(self, job: Job) -> Any:
        EVENTS["sync_current"] = current_job()


@worker(queue="default")
class ConfAExecSlowFinish:
    async def process(self, job: Job) -> Any:
        EVENTS["slow_started"].set()
        await asyncio.sleep(0.5)
        EVENTS["slow_finished"] = True


@worker(queue="default")
class ConfAExecBlocking:
    async def process(self, job: Job) -> Any:
        EVENTS["blocking_started"].set()
        await EVENTS["blocking_release"].wait()
        RUNS[job.id] += 1


# Outcomes of process()


async def test_returning_completes_the_job_once(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecOk.enqueue({})
        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"), message="job completed"
        )

    assert done.completed_at is not None
    assert done.attempted_at is not None
    assert done.completed_at >= done.attempted_at
    assert done.attempt == 1
    assert done.errors == []
    assert done.attempted_by[0] == oban.node
    assert RUNS[job.id] == 1


async def test_raising_makes_the_job_retryable_with_error_and_backoff(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecRaise.enqueue({})
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
    assert f"confa-boom-{job.id}" in entry["error"]

    # Default backoff after attempt 1: 15 + 2**1 seconds plus up to 10% jitter.
    delay = (failed.scheduled_at - failed.attempted_at).total_seconds()
    assert 17 <= delay <= 20, delay


async def test_raising_on_the_last_attempt_discards_the_job(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecRaise.enqueue({}, max_attempts=1)
        discarded = await eventually(
            lambda: _state_is(oban, job.id, "discarded"), message="job discarded"
        )

    assert RUNS[job.id] == 1
    assert discarded.discarded_at is not None
    assert discarded.completed_at is None
    assert len(discarded.errors) == 1
    assert discarded.errors[0]["attempt"] == 1
    assert f"confa-boom-{job.id}" in discarded.errors[0]["error"]


async def test_a_failed_job_is_retried_and_then_completes(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecFlaky.enqueue({})
        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"),
            timeout=8,
            message="retried job completed",
        )

    assert ATTEMPTS[job.id] == [1, 2]
    assert done.attempt == 2
    assert len(done.errors) == 1
    assert done.errors[0]["attempt"] == 1
    assert "confa-flaky-first-attempt" in done.errors[0]["error"]


async def test_snooze_reschedules_without_counting_the_attempt(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecSnoozeOnce.enqueue({})
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
    assert done.errors == []


async def test_snooze_with_meta_merges_it_into_the_job_meta(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecSnoozeMeta.enqueue({}, meta={"origin": "test", "n": 2})
        snoozed = await eventually(
            lambda: _state_is(oban, job.id, "scheduled"), message="job snoozed"
        )

    assert RUNS[job.id] == 1
    assert snoozed.meta == {"origin": "test", "n": 2, "reason": "later", "snoozed": 1}
    assert snoozed.attempt == 0
    wait = (snoozed.scheduled_at - snoozed.attempted_at).total_seconds()
    assert 59 <= wait <= 65, wait


async def test_cancel_result_cancels_the_job_with_the_reason(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecCancel.enqueue({})
        cancelled = await eventually(
            lambda: _state_is(oban, job.id, "cancelled"), message="job cancelled"
        )

    assert RUNS[job.id] == 1
    assert cancelled.cancelled_at is not None
    assert cancelled.completed_at is None
    assert len(cancelled.errors) == 1
    assert "confa-not-wanted" in cancelled.errors[0]["error"]
    assert cancelled.errors[0]["attempt"] == 1


async def test_record_completes_and_stores_the_encoded_value(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecRecord.enqueue({}, meta={"keep": "me"})
        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"), message="job completed"
        )

    assert done.completed_at is not None
    assert done.meta["recorded"] is True
    assert done.meta["keep"] == "me"
    assert decode_recorded(done.meta["return"]) == {"a": 1, "list": [1, "two", None], "ok": True}


# Full-precision floats (what JSON holds and Python round-trips exactly) in a job's meta.
PRECISE_META = {
    "ratio": 0.30000000000000004,
    "total": 123456789.123456789,
    "tiny": 1.2345678901234567e-7,
    "count": 2**60,
    "nested": {"x": 0.7999999999999999},
}


@pytest.mark.parametrize("outcome", ["record", "snooze"])
async def test_meta_survives_acks_that_merge_meta_exactly(
    make_oban: Callable[..., Oban], outcome: str
) -> None:
    # Record and Snooze merge keys into the job's meta; the other keys must stay unchanged.
    oban = make_oban(queues={"default": 5})
    async with oban:
        if outcome == "record":
            job = await ConfAExecRecord.enqueue({}, meta=PRECISE_META)
            after = await eventually(
                lambda: _state_is(oban, job.id, "completed"), message="job completed"
            )
            added = {"recorded": True, "return": after.meta.get("return")}
        else:
            job = await ConfAExecSnoozePrecise.enqueue({}, meta=PRECISE_META)
            after = await eventually(
                lambda: _state_is(oban, job.id, "scheduled"), message="job snoozed"
            )
            added = {"score": 0.1 + 0.2, "big": 2**60, "snoozed": 1}

    assert after.meta == {**PRECISE_META, **added}


async def test_exceeding_the_worker_timeout_makes_the_job_retryable(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(queues={"default": 5})
    started = time.monotonic()
    async with oban:
        job = await ConfAExecTimeout.enqueue({})
        failed = await eventually(
            lambda: _state_is(oban, job.id, "retryable"), message="timed-out job retryable"
        )
    assert time.monotonic() - started < 5
    assert RUNS[job.id] == 0  # the sleep was interrupted
    assert len(failed.errors) == 1
    assert "JobTimeoutError" in failed.errors[0]["error"]
    assert failed.scheduled_at > failed.attempted_at


async def test_unresolvable_worker_is_retryable_and_queue_keeps_running(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        bad = await oban.enqueue(Job("no.such.Worker", max_attempts=2))
        failed = await eventually(
            lambda: _state_is(oban, bad.id, "retryable"), message="unresolvable job retryable"
        )
        assert failed.attempt == 1
        assert len(failed.errors) == 1
        assert "WorkerResolutionError" in failed.errors[0]["error"]
        assert "no.such.Worker" in failed.errors[0]["error"]

        good = await ConfAExecOk.enqueue({})
        await eventually(
            lambda: _state_is(oban, good.id, "completed"),
            message="queue still runs jobs after a resolution failure",
        )
    assert RUNS[good.id] == 1


# Concurrency, cancellation and multiple nodes


async def test_sync_worker_does_not_stall_async_queue(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    EVENTS["sync_started"] = threading.Event()
    EVENTS["sync_finished"] = threading.Event()
    oban = make_oban(queues={"slow": 1, "fast": 10})
    async with oban:
        slow = await ConfAExecSyncSleep.enqueue({})
        await eventually(EVENTS["sync_started"].is_set, message="sync job started")

        fast = await oban.enqueue_many([ConfAExecFastAsync.new({"n": n}) for n in range(20)])
        fast_ids = [j.id for j in fast]

        async def all_fast_completed() -> bool:
            rows = await sql(
                oban,
                "SELECT count(*) FROM oban_jobs WHERE queue = 'fast' AND state = 'completed'",
            )
            return bool(rows[0][0] == 20)

        await eventually(all_fast_completed, timeout=5, message="20 async jobs completed")
        sync_still_running = not EVENTS["sync_finished"].is_set()

        await eventually(
            lambda: _state_is(oban, slow.id, "completed"), message="sync job completed"
        )

    assert all(RUNS[i] == 1 for i in fast_ids)
    assert EVENTS["fast_during_sync"] == [True] * 20
    assert sync_still_running, "async jobs only completed after the sync job finished sleeping"


async def test_pkill_signal_alone_stops_the_job_and_its_ack_records_the_cancel(
    make_oban: Callable[..., Oban],
) -> None:
    # A bare pkill, with no canceller that wrote the row first: the node stops the task at
    # once, and the job's own ack then records it cancelled.
    EVENTS["coop_started"] = asyncio.Event()
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecCooperative.enqueue({})
        await asyncio.wait_for(EVENTS["coop_started"].wait(), timeout=5)
        assert (await _job(oban, job.id)).state == "executing"
        await oban._engine.notify(
            "signal", [encode_payload({"action": "pkill", "job_id": job.id, "ident": "any"})]
        )
        cancelled = await eventually(
            lambda: _state_is(oban, job.id, "cancelled"), message="job cancelled via pkill"
        )
        assert _queue(oban, "default").running == []

    assert EVENTS["coop_finally"] is True  # its task was cancelled with job.cancelled() true
    assert "coop_returned_cancel" not in EVENTS  # stopped before it could return Cancel
    assert cancelled.cancelled_at is not None
    assert cancelled.completed_at is None
    assert [(e["attempt"], e["error"]) for e in cancelled.errors] == [
        (1, "cancelled while executing")
    ]


async def test_two_instances_execute_every_job_exactly_once(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    node_a = make_oban(name="ConfA-A", node="confa-node-a", queues={"default": 10})
    node_b = make_oban(name="ConfA-B", node="confa-node-b", queues={"default": 10})
    await node_a.start()
    await node_b.start()

    jobs = await node_a.enqueue_many([ConfAExecCounting.new({"n": n}) for n in range(2000)])
    ids = {j.id for j in jobs}
    assert len(ids) == 2000

    async def all_completed() -> bool:
        return await _count(sql, node_a, "completed") == 2000

    await eventually(all_completed, timeout=60, message="2000 jobs completed")
    await node_a.stop()
    await node_b.stop()

    assert set(RUNS) == ids
    duplicated = {i: n for i, n in RUNS.items() if n != 1}
    assert duplicated == {}, f"jobs executed more than once: {list(duplicated.items())[:10]}"
    assert set(NODES) <= {"confa-node-a", "confa-node-b"}
    assert sum(NODES.values()) == 2000
    if engine == "postgres":
        # Both nodes hear of the insert (LISTEN/NOTIFY) and take part.
        assert set(NODES) == {"confa-node-a", "confa-node-b"}, NODES
    rows = await sql(node_a, "SELECT state, attempt, count(*) FROM oban_jobs GROUP BY 1, 2")
    assert [tuple(r) for r in rows] == [("completed", 1, 2000)]


# Queues: pausing, scheduling and priority


async def test_paused_queue_runs_nothing_until_resumed(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(queues={"default": {"limit": 5, "paused": True}})
    async with oban:
        job = await ConfAExecOk.enqueue({})
        # Long enough for the insert notification, a poll and a stager tick.
        await asyncio.sleep(1.3)
        still = await _job(oban, job.id)
        assert still.state == "available"
        assert RUNS[job.id] == 0
        assert _queue(oban, "default").paused is True

        await oban.resume_queue("default")
        await eventually(
            lambda: _state_is(oban, job.id, "completed"), message="job ran after resume"
        )
        assert _queue(oban, "default").paused is False
    assert RUNS[job.id] == 1


async def test_scheduled_job_runs_after_its_time(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        job = await ConfAExecScheduled.enqueue({}, scheduled_in=1)
        assert job.state == "scheduled"
        inserted = await _job(oban, job.id)
        assert inserted.state == "scheduled"

        done = await eventually(
            lambda: _state_is(oban, job.id, "completed"),
            timeout=5,
            message="scheduled job completed",
        )

    assert EVENTS["ran_at"] >= job.scheduled_at
    assert done.attempted_at >= job.scheduled_at


async def test_lower_priority_number_runs_first(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(queues={"default": 1})
    low = [ConfAExecOrder.new({"n": f"p9-{n}"}, priority=9) for n in range(3)]
    await oban.enqueue_many(low)
    high = [ConfAExecOrder.new({"n": f"p0-{n}"}, priority=0) for n in range(3)]
    await oban.enqueue_many(high)
    mid = [ConfAExecOrder.new({"n": f"p5-{n}"}, priority=5) for n in range(2)]
    await oban.enqueue_many(mid)

    async with oban:
        await eventually(lambda: len(EVENTS.get("order", [])) == 8, message="all jobs ran")

    assert EVENTS["order"] == ["p0-0", "p0-1", "p0-2", "p5-0", "p5-1", "p9-0", "p9-1", "p9-2"]


async def test_current_job_inside_process(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(queues={"default": 5})
    async with oban:
        async_job = await ConfAExecCurrentAsync.enqueue({"k": "async"})
        sync_job = await ConfAExecCurrentSync.enqueue({"k": "sync"})
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


# Shutdown and acks


async def test_stop_waits_for_running_job_and_flushes_its_ack(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    EVENTS["slow_started"] = asyncio.Event()
    oban = make_oban(queues={"default": 5}, shutdown_grace_period=5.0)
    await oban.start()
    job = await ConfAExecSlowFinish.enqueue({})
    await asyncio.wait_for(EVENTS["slow_started"].wait(), timeout=5)

    started = time.monotonic()
    await oban.stop()
    elapsed = time.monotonic() - started

    assert EVENTS.get("slow_finished") is True
    assert elapsed < 4
    rows = await sql(oban, "SELECT state FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows[0][0] == "completed"
    done = await _job(oban, job.id)
    assert done.completed_at is not None


@pytest.mark.parametrize(
    ("new_state", "expected_state"),
    [
        # Rescued: made available again.
        ("available", "available"),
        # Rescued and fetched again elsewhere: executing, but with another attempted_at.
        ("executing", "executing"),
    ],
)
async def test_stale_ack_is_ignored(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    new_state: str,
    expected_state: str,
) -> None:
    EVENTS["blocking_started"] = asyncio.Event()
    EVENTS["blocking_release"] = asyncio.Event()
    oban = make_oban(queues={"default": 1})
    await oban.start()
    job = await ConfAExecBlocking.enqueue({})
    await asyncio.wait_for(EVENTS["blocking_started"].wait(), timeout=5)

    # Keep this node from fetching the job again once its slot frees up.
    await oban.pause_queue("default")
    await sql(oban, "UPDATE oban_jobs SET state = %s WHERE id = %s", (new_state, job.id))
    await backdate(oban, job.id, "attempted_at", 3600)
    EVENTS["blocking_release"].set()
    await oban.stop()  # waits for the job and flushes its (stale) ack

    assert RUNS[job.id] == 1
    after = await _job(oban, job.id)
    assert after.state == expected_state
    assert after.completed_at is None
    assert after.errors == []


async def test_check_queue_and_check_all_queues(make_oban: Callable[..., Oban]) -> None:
    EVENTS["blocking_started"] = asyncio.Event()
    EVENTS["blocking_release"] = asyncio.Event()
    oban = make_oban(
        node="confa-check-node",
        queues={"default": 2, "other": {"limit": 3, "paused": True}},
    )
    async with oban:
        job = await ConfAExecBlocking.enqueue({})
        await asyncio.wait_for(EVENTS["blocking_started"].wait(), timeout=5)

        info = oban.check_queue("default")
        assert isinstance(info, QueueInfo)
        assert info.queue == "default"
        assert info.limit == 2
        assert info.paused is False
        assert info.node == "confa-check-node"
        assert info.running == [job.id]

        other = oban.check_queue("other")
        assert isinstance(other, QueueInfo)
        assert (other.queue, other.limit, other.paused, other.running) == ("other", 3, True, [])

        assert oban.check_queue("missing") is None

        infos = {i.queue: i for i in oban.check_all_queues()}
        assert set(infos) == {"default", "other"}
        assert infos["default"].running == [job.id]
        assert infos["other"].paused is True
        assert all(i.node == "confa-check-node" for i in infos.values())

        EVENTS["blocking_release"].set()
        await eventually(
            lambda: _state_is(oban, job.id, "completed"), message="blocking job completed"
        )
        await eventually(lambda: _queue(oban, "default").running == [])


# Acks carried by fetches, and acks that survive failed writes


async def _wait_completed(sql: Any, oban: Oban, count: int, timeout: float) -> None:
    async def all_completed() -> bool:
        return await _count(sql, oban, "completed") == count

    await eventually(all_completed, timeout=timeout, message=f"{count} jobs completed")


def _spy_engine(oban: Oban, name: str, calls: list[Any], fail: list[int] | None = None) -> None:
    """Record the acks each call of ``engine.<name>`` carries; raise while ``fail[0] > 0``."""
    engine = oban._engine
    original = getattr(engine, name)

    async def spy(*args: Any, **kwargs: Any) -> Any:
        acks = args[0] if args else []
        if fail is not None and fail[0] > 0 and acks:
            fail[0] -= 1
            raise ConnectionError(f"simulated lost round trip in {name}")
        result = await original(*args, **kwargs)
        calls.append([ack.id for ack in acks])
        return result

    setattr(engine, name, spy)


async def test_fetches_carry_the_acks_of_finished_jobs(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    oban = make_oban(queues={"default": 5})
    await oban._ready()
    carried: list[Any] = []
    written: list[Any] = []
    _spy_engine(oban, "ack_fetch_jobs", carried)
    _spy_engine(oban, "ack_jobs", written)
    jobs = await oban.enqueue_many([ConfAExecOk.new({"n": n}) for n in range(60)])
    await oban.start()

    await _wait_completed(sql, oban, 60, timeout=15)
    await oban.stop()

    ids = sorted(_id(job) for job in jobs)
    acked = [job_id for call in carried + written for job_id in call]
    assert sorted(acked) == ids, "every job acked exactly once"
    assert all(RUNS[job_id] == 1 for job_id in ids)
    # 60 jobs through 5 slots: most acks rode along with the next fetch of the queue.
    assert sum(len(call) for call in carried) >= 30, (carried, written)
    assert max(len(call) for call in carried) > 1


@pytest.mark.parametrize(
    ("methods", "failures"), [(("ack_fetch_jobs",), 1), (("ack_fetch_jobs", "ack_jobs"), 6)]
)
async def test_acks_survive_failed_writes_and_are_written_once(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], methods: tuple[str, ...], failures: int
) -> None:
    oban = make_oban(queues={"default": 3})
    await oban._ready()
    # The first writes that carry acks fail, on whichever of the spied paths they take (a
    # failed fetch hands its acks back to the acker, which writes them on its own).
    fail = [failures]
    calls: list[Any] = []
    for method in methods:
        _spy_engine(oban, method, calls, fail)
    jobs = await oban.enqueue_many([ConfAExecOk.new({"n": n}) for n in range(12)])
    await oban.start()

    await _wait_completed(sql, oban, 12, timeout=20)
    await oban.stop()

    assert fail == [0], "the writes failed as arranged"
    assert all(RUNS[job.id] == 1 for job in jobs), RUNS
    assert await _count(sql, oban, "executing") == 0
    for job in jobs:
        done = await _job(oban, job.id)
        assert (done.state, done.attempt) == ("completed", 1)


async def test_pause_takes_effect_once_a_fetch_in_flight_is_done(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(queues={"default": 2})
    await oban._ready()
    engine = oban._engine
    original = engine.fetch_jobs
    in_flight = asyncio.Event()
    release = asyncio.Event()
    fetches: list[int] = []

    async def slow_fetch(*args: Any, **kwargs: Any) -> Any:
        fetches.append(len(fetches))
        if len(fetches) == 2:  # the fetch that an enqueue triggers: hold it in flight
            in_flight.set()
            await release.wait()
        return await original(*args, **kwargs)

    setattr(engine, "fetch_jobs", slow_fetch)
    await oban.start()
    await eventually(lambda: len(fetches) >= 1, message="the first fetch")
    job = await ConfAExecOk.enqueue({})
    await asyncio.wait_for(in_flight.wait(), timeout=5)

    pausing = asyncio.ensure_future(oban.pause_queue("default"))
    await asyncio.sleep(0.1)
    # The fetch in flight may still claim jobs, so the pause has not taken effect yet.
    assert not pausing.done()
    assert _queue(oban, "default").paused is False

    release.set()
    await asyncio.wait_for(pausing, timeout=5)
    assert _queue(oban, "default").paused is True
    await eventually(lambda: _state_is(oban, job.id, "completed"), message="claimed job ran")

    # From now on nothing is claimed: a job enqueued after the pause stays available.
    seen = len(fetches)
    later = await ConfAExecOk.enqueue({})
    await asyncio.sleep(0.3)
    assert len(fetches) == seen
    assert (await _job(oban, later.id)).state == "available"
    await oban.resume_queue("default")
    await eventually(lambda: _state_is(oban, later.id, "completed"), message="ran after resume")


async def test_a_queue_keeps_fetching_while_carried_acks_keep_failing(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    oban = make_oban(queues={"default": 3})
    await oban._ready()
    fail = [10**6]  # every fetch that carries acks fails; the acker's own writes succeed
    carried: list[Any] = []
    written: list[Any] = []
    _spy_engine(oban, "ack_fetch_jobs", carried, fail)
    _spy_engine(oban, "ack_jobs", written)
    jobs = await oban.enqueue_many([ConfAExecOk.new({"n": n}) for n in range(30)])
    await oban.start()

    # Without falling back to plain fetches, each failure would back the producer off
    # (0.2 s, 0.4 s, ... up to 5 s) and ten batches of three would take far longer.
    await _wait_completed(sql, oban, 30, timeout=6)
    await oban.stop()

    assert fail[0] < 10**6, "fetches tried to carry acks"
    assert all(call == [] for call in carried), "no fetch carrying acks succeeded"
    assert sorted(job_id for call in written for job_id in call) == sorted(_id(j) for j in jobs)
    assert all(RUNS[job.id] == 1 for job in jobs)


@worker(queue="default")
class ConfAExecSnoozeForever:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1
        return Snooze(10**15)


async def test_an_enormous_snooze_is_clamped_and_other_jobs_still_complete(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(queues={"default": 2})
    await oban.start()
    forever = await ConfAExecSnoozeForever.enqueue({})
    ok = await ConfAExecOk.enqueue({})

    await eventually(lambda: _state_is(oban, ok.id, "completed"), message="ok job completed")
    snoozed = await eventually(
        lambda: _state_is(oban, forever.id, "scheduled"), message="snoozed job scheduled"
    )
    # Kept within about 317 years instead of an out-of-range timestamp failing the acks.
    assert snoozed.scheduled_at is not None and 2300 < snoozed.scheduled_at.year < 2400
    assert RUNS[forever.id] == 1
