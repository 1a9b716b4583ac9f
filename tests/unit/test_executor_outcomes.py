"""Unit tests for how the executor turns a worker's result into an Ack (no database)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from oban import Cancel, Job, JobState, Record, Snooze, current_job, telemetry, worker
from oban._executor import Executor
from oban._recorded import decode_recorded

MODULE = __name__

#: What workers observed while running, keyed by job id (``Job.id`` is typed ``int | None``).
SEEN: dict[int | None, dict[str, Any]] = {}


@worker()
class ExecOutcomeReturns:
    async def process(self, job: Job) -> Any:
        return {"echo": job.args}


@worker()
class ExecOutcomeReturnsNone:
    async def process(self, job: Job) -> Any:
        return None


@worker()
class ExecOutcomeRaises:
    async def process(self, job: Job) -> Any:
        raise ValueError(f"boom {job.args.get('n')}")


@worker()
class ExecOutcomeSyncRaises:
    def process(self, job: Job) -> Any:
        raise KeyError("missing-key")


@worker()
class ExecOutcomeCustomBackoff:
    async def process(self, job: Job) -> Any:
        raise RuntimeError("needs custom backoff")

    def backoff(self, job: Job) -> int:
        return job.attempt * 100


@worker()
class ExecOutcomeSnoozes:
    async def process(self, job: Job) -> Any:
        return Snooze(30, meta={"k": 1})


@worker()
class ExecOutcomeCancels:
    async def process(self, job: Job) -> Any:
        return Cancel("why")


@worker()
class ExecOutcomeRecords:
    async def process(self, job: Job) -> Any:
        return Record({"total": job.args["total"], "items": [1, "two", None]})


@worker()
class ExecOutcomeSlow:
    async def process(self, job: Job) -> Any:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            SEEN[job.id] = {"cancelled": True}
            raise
        return "finished"

    def timeout(self, job: Job) -> float:
        return 0.05


@worker()
class ExecOutcomeFastWithTimeout:
    async def process(self, job: Job) -> Any:
        return "in time"

    def timeout(self, job: Job) -> float:
        return 5.0


@worker()
class ExecOutcomeSyncObserver:
    def process(self, job: Job) -> Any:
        SEEN[job.id] = {
            "thread": threading.current_thread(),
            "current_job": current_job(),
        }
        return "sync done"


@worker()
class ExecOutcomeAsyncObserver:
    async def process(self, job: Job) -> Any:
        await asyncio.sleep(0)
        SEEN[job.id] = {
            "thread": threading.current_thread(),
            "current_job": current_job(),
        }
        return "async done"


# --- helpers ----------------------------------------------------------------------------------

_ids = iter(range(1_000_000, 2_000_000))


def make_job(cls_or_name: type[Any] | str, **fields: Any) -> Job:
    name = cls_or_name if isinstance(cls_or_name, str) else cls_or_name._worker_name
    now = datetime.now(UTC)
    fields.setdefault("id", next(_ids))
    fields.setdefault("attempt", 1)
    fields.setdefault("attempted_at", now)
    fields.setdefault("scheduled_at", now - timedelta(seconds=1))
    fields.setdefault("inserted_at", now - timedelta(seconds=1))
    fields.setdefault("state", JobState.EXECUTING)
    return Job(name, **fields)


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="exec-outcomes")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)


@pytest.fixture
def executor(threads: ThreadPoolExecutor) -> Executor:
    return Executor(threads=threads)


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    received: list[tuple[str, dict[str, Any]]] = []
    handler_id = f"exec-outcomes-{uuid.uuid4().hex}"

    def handler(name: str, meta: dict[str, Any]) -> None:
        received.append((name, {**meta, "_current_job": current_job()}))

    telemetry.attach(handler_id, ["oban.job.start", "oban.job.stop", "oban.job.exception"], handler)
    try:
        yield received
    finally:
        telemetry.detach(handler_id)


# --- outcomes ---------------------------------------------------------------------------------


async def test_return_value_completes_the_job(executor: Executor) -> None:
    job = make_job(ExecOutcomeReturns, args={"a": 1})

    ack, result = await executor.run(job)

    assert result == {"echo": {"a": 1}}
    assert ack.id == job.id
    assert ack.attempted_at == job.attempted_at
    assert ack.state == JobState.COMPLETED
    assert ack.error is None
    assert ack.schedule_in is None
    assert ack.attempt_change == 0
    assert ack.meta is None
    assert ack.snooze is False


async def test_returning_none_completes_the_job(executor: Executor) -> None:
    ack, result = await executor.run(make_job(ExecOutcomeReturnsNone))

    assert result is None
    assert ack.state == JobState.COMPLETED


async def test_exception_makes_the_job_retryable_with_error_and_default_backoff(
    executor: Executor,
) -> None:
    job = make_job(ExecOutcomeRaises, args={"n": 7}, attempt=3, max_attempts=20)

    ack, result = await executor.run(job)

    assert result is None
    assert ack.id == job.id
    assert ack.state == JobState.RETRYABLE
    assert ack.error is not None
    assert "ValueError: boom 7" in ack.error
    assert "Traceback (most recent call last)" in ack.error
    assert "in process" in ack.error
    assert 'raise ValueError(f"boom' in ack.error
    # Default backoff for attempt 3 of 20: 15 + 2**3 = 23 seconds plus up to 10%.
    assert ack.schedule_in is not None
    assert 23 <= ack.schedule_in <= int(23 * 1.1)
    assert ack.attempt_change == 0
    assert ack.snooze is False


async def test_exception_from_a_sync_worker_is_retryable(executor: Executor) -> None:
    ack, _ = await executor.run(make_job(ExecOutcomeSyncRaises, attempt=1))

    assert ack.state == JobState.RETRYABLE
    assert ack.error is not None
    assert "KeyError: 'missing-key'" in ack.error
    assert "Traceback (most recent call last)" in ack.error
    assert ack.schedule_in is not None
    assert 17 <= ack.schedule_in <= 18


async def test_default_backoff_is_clamped_for_many_max_attempts(executor: Executor) -> None:
    ack, _ = await executor.run(make_job(ExecOutcomeRaises, attempt=50, max_attempts=100))

    # Attempt 50 of 100 backs off like attempt 10 of 20.
    assert ack.schedule_in is not None
    assert 15 + 2**10 <= ack.schedule_in <= int((15 + 2**10) * 1.1)


async def test_exception_uses_the_workers_custom_backoff(executor: Executor) -> None:
    ack, _ = await executor.run(make_job(ExecOutcomeCustomBackoff, attempt=3, max_attempts=5))

    assert ack.state == JobState.RETRYABLE
    assert ack.schedule_in == 300
    assert ack.error is not None
    assert "RuntimeError: needs custom backoff" in ack.error


async def test_exception_on_the_last_attempt_discards_the_job(executor: Executor) -> None:
    job = make_job(ExecOutcomeRaises, args={"n": 1}, attempt=3, max_attempts=3)

    ack, _ = await executor.run(job)

    assert ack.state == JobState.DISCARDED
    assert ack.error is not None
    assert "ValueError: boom 1" in ack.error
    assert "Traceback (most recent call last)" in ack.error
    assert ack.schedule_in is None


async def test_snooze_schedules_the_job_without_counting_the_attempt(executor: Executor) -> None:
    job = make_job(ExecOutcomeSnoozes, attempt=2)

    ack, result = await executor.run(job)

    assert result == Snooze(30, meta={"k": 1})
    assert ack.id == job.id
    assert ack.state == JobState.SCHEDULED
    assert ack.attempt_change == -1
    assert ack.snooze is True
    assert ack.schedule_in == 30
    assert ack.meta == {"k": 1}
    assert ack.error is None


async def test_cancel_cancels_the_job_with_the_reason(executor: Executor) -> None:
    ack, result = await executor.run(make_job(ExecOutcomeCancels))

    assert result == Cancel("why")
    assert ack.state == JobState.CANCELLED
    assert ack.error == "why"
    assert ack.schedule_in is None
    assert ack.attempt_change == 0


async def test_record_completes_the_job_with_the_recorded_value(executor: Executor) -> None:
    ack, result = await executor.run(make_job(ExecOutcomeRecords, args={"total": 3}))

    assert isinstance(result, Record)
    assert ack.state == JobState.COMPLETED
    assert ack.meta is not None
    assert set(ack.meta) == {"recorded", "return"}
    assert ack.meta["recorded"] is True
    assert ack.meta["return"] == result.encoded
    assert decode_recorded(ack.meta["return"]) == {"total": 3, "items": [1, "two", None]}


async def test_timeout_fails_the_attempt_with_job_timeout_error(executor: Executor) -> None:
    job = make_job(ExecOutcomeSlow, attempt=1)
    started = time.monotonic()

    ack, result = await executor.run(job)

    assert time.monotonic() - started < 2
    assert result is None
    assert ack.state == JobState.RETRYABLE
    assert ack.error is not None
    assert "JobTimeoutError" in ack.error
    assert "timed out after 0.05s" in ack.error
    assert ack.schedule_in is not None
    assert 17 <= ack.schedule_in <= 18
    # The worker's coroutine was cancelled, not left running.
    assert SEEN.pop(job.id) == {"cancelled": True}


async def test_timeout_on_the_last_attempt_discards(executor: Executor) -> None:
    ack, _ = await executor.run(make_job(ExecOutcomeSlow, attempt=2, max_attempts=2))

    assert ack.state == JobState.DISCARDED
    assert ack.error is not None
    assert "JobTimeoutError" in ack.error


async def test_a_job_finishing_within_its_timeout_completes(executor: Executor) -> None:
    ack, result = await executor.run(make_job(ExecOutcomeFastWithTimeout))

    assert result == "in time"
    assert ack.state == JobState.COMPLETED


async def test_unknown_worker_is_retryable_with_worker_resolution_error(
    executor: Executor,
) -> None:
    name = f"{MODULE}.ExecOutcomeDoesNotExist"

    ack, result = await executor.run(make_job(name, attempt=1))

    assert result is None
    assert ack.state == JobState.RETRYABLE
    assert ack.error is not None
    assert "WorkerResolutionError" in ack.error
    assert "ExecOutcomeDoesNotExist" in ack.error
    assert ack.schedule_in is not None
    assert 17 <= ack.schedule_in <= 18


async def test_unknown_module_on_the_last_attempt_is_discarded(executor: Executor) -> None:
    name = f"exec_outcome_missing_{uuid.uuid4().hex}.Worker"

    ack, _ = await executor.run(make_job(name, attempt=20, max_attempts=20))

    assert ack.state == JobState.DISCARDED
    assert ack.error is not None
    assert "WorkerResolutionError" in ack.error


async def test_unknown_worker_is_logged_at_error_naming_the_worker(
    executor: Executor, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"{MODULE}.ExecOutcomeAlsoMissing"
    caplog.set_level(logging.DEBUG, logger="oban.executor")

    ack, _ = await executor.run(make_job(name, attempt=1))

    assert ack.state == JobState.RETRYABLE
    records = [r for r in caplog.records if r.name == "oban.executor"]
    assert [r.levelno for r in records] == [logging.ERROR]
    assert name in records[0].getMessage()


async def test_unsafe_executor_reraises_the_workers_exception(
    threads: ThreadPoolExecutor,
) -> None:
    unsafe = Executor(threads=threads, safe=False)

    with pytest.raises(ValueError, match="boom 2"):
        await unsafe.run(make_job(ExecOutcomeRaises, args={"n": 2}))


# --- context ----------------------------------------------------------------------------------


async def test_sync_worker_runs_in_a_worker_thread_and_sees_its_job(
    executor: Executor,
) -> None:
    job = make_job(ExecOutcomeSyncObserver)

    ack, result = await executor.run(job)

    assert result == "sync done"
    assert ack.state == JobState.COMPLETED
    seen = SEEN.pop(job.id)
    assert seen["thread"] is not threading.main_thread()
    assert seen["thread"] is not threading.current_thread()
    assert seen["thread"].name.startswith("exec-outcomes")
    assert seen["current_job"] is job
    assert current_job() is None


async def test_async_worker_sees_its_job(executor: Executor) -> None:
    job = make_job(ExecOutcomeAsyncObserver)

    ack, result = await executor.run(job)

    assert result == "async done"
    assert ack.state == JobState.COMPLETED
    seen = SEEN.pop(job.id)
    assert seen["current_job"] is job
    assert seen["thread"] is threading.current_thread()
    assert current_job() is None


async def test_concurrent_jobs_each_see_their_own_job(executor: Executor) -> None:
    jobs = [make_job(ExecOutcomeAsyncObserver) for _ in range(3)]
    jobs += [make_job(ExecOutcomeSyncObserver) for _ in range(3)]

    outcomes = await asyncio.gather(*(executor.run(job) for job in jobs))

    assert all(ack.state == JobState.COMPLETED for ack, _ in outcomes)
    for job in jobs:
        assert SEEN.pop(job.id)["current_job"] is job


# --- telemetry --------------------------------------------------------------------------------


def _for_job(
    events: list[tuple[str, dict[str, Any]]], job: Job
) -> list[tuple[str, dict[str, Any]]]:
    return [(name, meta) for name, meta in events if meta.get("job") is job]


async def test_telemetry_start_and_stop_for_a_completed_job(
    executor: Executor, events: list[tuple[str, dict[str, Any]]]
) -> None:
    attempted_at = datetime.now(UTC)
    job = make_job(
        ExecOutcomeReturns,
        attempted_at=attempted_at,
        scheduled_at=attempted_at - timedelta(seconds=2),
    )
    before = time.monotonic_ns()

    await executor.run(job)

    after = time.monotonic_ns()
    received = _for_job(events, job)
    assert [name for name, _ in received] == ["oban.job.start", "oban.job.stop"]

    _, start = received[0]
    assert start["job"] is job
    assert before <= start["monotonic_time"] <= after
    assert start["_current_job"] is job

    _, stop = received[1]
    assert stop["job"] is job
    assert stop["state"] == JobState.COMPLETED
    assert isinstance(stop["duration"], int)
    assert 0 <= stop["duration"] <= after - before
    assert start["monotonic_time"] <= stop["monotonic_time"] <= after
    assert stop["duration"] == stop["monotonic_time"] - start["monotonic_time"]
    assert stop["queue_time"] == 2_000_000_000
    assert "error_message" not in stop
    assert "error_type" not in stop


async def test_telemetry_exception_event_for_a_retryable_job(
    executor: Executor, events: list[tuple[str, dict[str, Any]]]
) -> None:
    job = make_job(ExecOutcomeRaises, args={"n": 9})

    ack, _ = await executor.run(job)

    received = _for_job(events, job)
    assert [name for name, _ in received] == ["oban.job.start", "oban.job.exception"]
    _, meta = received[1]
    assert meta["job"] is job
    assert meta["state"] == JobState.RETRYABLE
    assert meta["error_message"] == "boom 9"
    assert meta["error_type"] == "ValueError"
    assert "Traceback (most recent call last)" in meta["traceback"]
    assert isinstance(meta["duration"], int)
    assert meta["duration"] >= 0
    assert isinstance(meta["queue_time"], int)
    assert meta["traceback"] == ack.error


async def test_telemetry_exception_event_for_a_discarded_job(
    executor: Executor, events: list[tuple[str, dict[str, Any]]]
) -> None:
    job = make_job(ExecOutcomeRaises, args={"n": 4}, attempt=1, max_attempts=1)

    await executor.run(job)

    received = _for_job(events, job)
    assert [name for name, _ in received] == ["oban.job.start", "oban.job.exception"]
    assert received[1][1]["state"] == JobState.DISCARDED
    assert received[1][1]["error_type"] == "ValueError"


async def test_telemetry_exception_event_for_a_timeout(
    executor: Executor, events: list[tuple[str, dict[str, Any]]]
) -> None:
    job = make_job(ExecOutcomeSlow)

    await executor.run(job)
    SEEN.pop(job.id, None)

    received = _for_job(events, job)
    assert [name for name, _ in received] == ["oban.job.start", "oban.job.exception"]
    assert received[1][1]["error_type"] == "JobTimeoutError"
    assert "timed out" in received[1][1]["error_message"]


@pytest.mark.parametrize(
    ("cls", "state"),
    [
        (ExecOutcomeSnoozes, JobState.SCHEDULED),
        (ExecOutcomeCancels, JobState.CANCELLED),
        (ExecOutcomeRecords, JobState.COMPLETED),
    ],
)
async def test_telemetry_stop_event_carries_the_special_result_state(
    executor: Executor,
    events: list[tuple[str, dict[str, Any]]],
    cls: type[Any],
    state: JobState,
) -> None:
    job = make_job(cls, args={"total": 1})

    await executor.run(job)

    received = _for_job(events, job)
    assert [name for name, _ in received] == ["oban.job.start", "oban.job.stop"]
    assert received[1][1]["state"] == state


async def test_telemetry_queue_time_is_zero_without_timestamps(
    executor: Executor, events: list[tuple[str, dict[str, Any]]]
) -> None:
    job = make_job(ExecOutcomeReturns, scheduled_at=None)
    assert job.scheduled_at is None

    await executor.run(job)

    (_, stop) = _for_job(events, job)[1]
    assert stop["queue_time"] == 0


async def test_telemetry_queue_time_is_never_negative(
    executor: Executor, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """The database's wall clock can step back between the insert and the claim (seen once in
    CI: -0.44 ms): the job still waited no time, not a negative one."""
    now = datetime.now(UTC)
    job = make_job(ExecOutcomeReturns, attempted_at=now, scheduled_at=now + timedelta(seconds=1))

    await executor.run(job)

    (_, stop) = _for_job(events, job)[1]
    assert stop["queue_time"] == 0


async def test_a_raising_telemetry_handler_does_not_break_the_job(
    executor: Executor,
    events: list[tuple[str, dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler_id = f"exec-outcomes-raising-{uuid.uuid4().hex}"

    def broken(name: str, meta: dict[str, Any]) -> None:
        raise RuntimeError(f"handler broke on {name}")

    telemetry.attach(handler_id, ["oban.job.start", "oban.job.stop", "oban.job.exception"], broken)
    try:
        job = make_job(ExecOutcomeReturns, args={"ok": True})
        ack, result = await executor.run(job)

        failing = make_job(ExecOutcomeRaises, args={"n": 3})
        failing_ack, _ = await executor.run(failing)
    finally:
        telemetry.detach(handler_id)

    assert result == {"echo": {"ok": True}}
    assert ack.state == JobState.COMPLETED
    assert failing_ack.state == JobState.RETRYABLE
    assert failing_ack.error is not None
    assert "boom 3" in failing_ack.error
    assert "handler broke" not in failing_ack.error
    # Other handlers still receive every event.
    assert [name for name, _ in _for_job(events, job)] == ["oban.job.start", "oban.job.stop"]
    assert [name for name, _ in _for_job(events, failing)] == [
        "oban.job.start",
        "oban.job.exception",
    ]
    assert "handler broke on oban.job.start" in caplog.text


async def test_detached_handlers_receive_nothing(executor: Executor) -> None:
    received: list[str] = []
    handler_id = f"exec-outcomes-detached-{uuid.uuid4().hex}"
    telemetry.attach(
        handler_id, ["oban.job.start", "oban.job.stop"], lambda n, m: received.append(n)
    )
    telemetry.detach(handler_id)

    await executor.run(make_job(ExecOutcomeReturns))

    assert received == []
