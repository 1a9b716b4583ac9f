"""process_job and mode() outside an event loop: no database, no Oban instance."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from oban import Job, JobState, Record, Snooze, current_job, job, telemetry, worker
from oban._executor import Executor
from oban.testing import mode, process_job

SEEN: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    SEEN.clear()


class ProcessUnitBoom(Exception):
    """Raised by the failing worker of this module."""


@worker()
class ProcessUnitAsyncWorker:
    async def process(self, job: Job) -> Any:
        SEEN["job"] = job
        SEEN["current"] = current_job()
        return {"sum": sum(job.args["values"])}


@worker()
class ProcessUnitSyncWorker:
    def process(self, job: Job) -> Any:
        SEEN["job"] = job
        SEEN["current"] = current_job()
        return job.args["n"] * 2


@worker()
class ProcessUnitRaiseWorker:
    def process(self, job: Job) -> Any:
        raise ProcessUnitBoom(f"process-unit-boom-{job.args['n']}")


@worker()
class ProcessUnitSnoozeWorker:
    async def process(self, job: Job) -> Any:
        return Snooze(30)


@worker()
class ProcessUnitRecordWorker:
    async def process(self, job: Job) -> Any:
        return Record({"ok": True})


@job()
def process_unit_add(a: int, b: int = 10) -> int:
    SEEN["current"] = current_job()
    return a + b


@job()
async def process_unit_async_add(a: int, b: int) -> int:
    return a * b


def test_process_job_outside_a_loop_returns_the_result_of_an_async_worker() -> None:
    result = process_job(ProcessUnitAsyncWorker.new({"values": [1, 2, 3]}))

    assert not inspect.isawaitable(result)
    assert result == {"sum": 6}


def test_process_job_outside_a_loop_returns_the_result_of_a_sync_worker() -> None:
    assert process_job(ProcessUnitSyncWorker.new({"n": 21})) == 42


def test_process_job_runs_job_functions_with_their_arguments() -> None:
    assert process_job(process_unit_add.new(1)) == 11
    assert process_job(process_unit_add.new(1, b=2)) == 3
    assert process_job(process_unit_async_add.new(3, b=4)) == 12
    assert isinstance(SEEN["current"], Job)


def test_process_job_round_trips_args_through_json() -> None:
    process_job(ProcessUnitAsyncWorker.new({"values": (4, 5), "deep": {"t": (1,)}}))

    assert SEEN["job"].args == {"values": [4, 5], "deep": {"t": [1]}}


def test_process_job_fills_what_the_database_would() -> None:
    built = ProcessUnitSyncWorker.new({"n": 1})
    assert built.id is None and built.attempt == 0

    process_job(built)

    seen: Job = SEEN["job"]
    assert seen.id is not None
    assert seen.attempt == 1
    assert seen.attempted_at is not None
    assert abs(seen.attempted_at - datetime.now(UTC)) < timedelta(seconds=5)
    assert seen.scheduled_at is not None
    assert seen.inserted_at is not None


def test_process_job_sets_current_job_for_sync_and_async_workers() -> None:
    process_job(ProcessUnitAsyncWorker.new({"values": []}))
    assert SEEN["current"] is SEEN["job"]

    process_job(ProcessUnitSyncWorker.new({"n": 0}))
    assert SEEN["current"] is SEEN["job"]

    assert current_job() is None


def test_process_job_propagates_exceptions() -> None:
    with pytest.raises(ProcessUnitBoom, match="process-unit-boom-7"):
        process_job(ProcessUnitRaiseWorker.new({"n": 7}))


def _job_events() -> tuple[list[tuple[str, dict[str, Any]]], str]:
    received: list[tuple[str, dict[str, Any]]] = []
    handler_id = f"process-unit-{uuid.uuid4().hex}"
    telemetry.attach(
        handler_id,
        ["oban.job.start", "oban.job.stop", "oban.job.exception"],
        lambda name, meta: received.append((name, {**meta, "current": current_job()})),
    )
    return received, handler_id


def test_process_job_emits_the_exception_event_of_a_failing_worker_before_raising() -> None:
    received, handler_id = _job_events()
    try:
        with pytest.raises(ProcessUnitBoom, match="process-unit-boom-3"):
            process_job(ProcessUnitRaiseWorker.new({"n": 3}))
        through_a_queue = ProcessUnitRaiseWorker.new({"n": 3})
        with ThreadPoolExecutor(max_workers=1) as threads:
            ack, _ = asyncio.run(Executor(threads=threads).run(_as_fetched(through_a_queue)))
    finally:
        telemetry.detach(handler_id)

    names = [name for name, _ in received]
    assert names == ["oban.job.start", "oban.job.exception"] * 2
    tested, real = received[1][1], received[3][1]
    assert tested.keys() == real.keys()
    assert tested["job"] is tested["current"], "handlers see current_job() as in a queue"
    assert tested["state"] == real["state"] == ack.state == JobState.RETRYABLE
    assert tested["error_type"] == real["error_type"] == "ProcessUnitBoom"
    assert tested["error_message"] == real["error_message"] == "process-unit-boom-3"
    assert "ProcessUnitBoom: process-unit-boom-3" in tested["traceback"]
    assert isinstance(tested["duration"], int) and tested["duration"] >= 0
    assert isinstance(tested["queue_time"], int)


def _as_fetched(built: Job) -> Job:
    now = datetime.now(UTC)
    built.id, built.attempt, built.attempted_at, built.scheduled_at = 1, 1, now, now
    return built


def test_process_job_returns_special_results_as_they_are() -> None:
    assert process_job(ProcessUnitSnoozeWorker.new({})) == Snooze(30)
    recorded = process_job(ProcessUnitRecordWorker.new({}))
    assert isinstance(recorded, Record)
    assert recorded.value == {"ok": True}


def test_mode_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="sometimes"), mode(cast(Any, "sometimes")):
        pass


INLINE_RAN: list[int] = []


@worker(queue="inline-no-instance", oban="NoSuchInstanceForInline")
class InlineWithoutInstance:
    async def process(self, job: Job) -> None:
        INLINE_RAN.append(job.args["n"])


def test_inline_enqueue_needs_no_oban_instance_or_database() -> None:
    async def go() -> Job:
        with mode("inline"):
            return await InlineWithoutInstance.enqueue({"n": 7})

    job = asyncio.run(go())
    assert INLINE_RAN == [7]
    assert job.args == {"n": 7}
