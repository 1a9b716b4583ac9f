"""Managing jobs: get, cancel, retry, delete and update, against a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from oban import Cancel, Job, Oban, worker
from tests.helpers import eventually

# ---------------------------------------------------------------------------------------------
# Shared state the workers use. Every test starts from empty state.
# ---------------------------------------------------------------------------------------------

RUNS: Counter[str] = Counter()
GATES: dict[str, dict[str, asyncio.Event]] = {}


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    RUNS.clear()
    GATES.clear()


def _gate(key: str) -> dict[str, asyncio.Event]:
    """Events a blocking worker uses: ``started``, ``noticed`` (cancellation) and ``release``."""
    GATES[key] = {
        "started": asyncio.Event(),
        "noticed": asyncio.Event(),
        "release": asyncio.Event(),
    }
    return GATES[key]


@worker(queue="mgmt")
class MgmtCountingWorker:
    async def process(self, job: Job) -> Any:
        RUNS[job.args.get("key", "-")] += 1


@worker(queue="mgmt")
class MgmtBlockingWorker:
    """Runs until released; ignores cancellation (the job then completes)."""

    async def process(self, job: Job) -> Any:
        gate = GATES[job.args["key"]]
        gate["started"].set()
        await asyncio.wait_for(gate["release"].wait(), 10)
        RUNS[job.args["key"]] += 1


@worker(queue="mgmt")
class MgmtCancellableWorker:
    """Waits for ``job.cancelled()``, then (once released) returns ``Cancel``."""

    async def process(self, job: Job) -> Any:
        gate = GATES[job.args["key"]]
        gate["started"].set()
        deadline = asyncio.get_running_loop().time() + 10
        while not job.cancelled():
            if asyncio.get_running_loop().time() > deadline:
                return None  # completing would make the test fail on the final state
            await asyncio.sleep(0.01)
        gate["noticed"].set()
        await asyncio.wait_for(gate["release"].wait(), 10)
        return Cancel("mgmt-stopped-on-request")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

NOW_TOLERANCE = timedelta(seconds=5)

_STATE_SQL = {
    "available": "state = 'available'",
    "scheduled": "state = 'scheduled', scheduled_at = timezone('UTC', now()) + interval '1 hour'",
    "retryable": (
        "state = 'retryable', attempt = 1, attempted_at = timezone('UTC', now()), "
        "scheduled_at = timezone('UTC', now()) + interval '1 minute'"
    ),
    "suspended": "state = 'suspended'",
    "executing": (
        "state = 'executing', attempt = 1, attempted_at = timezone('UTC', now()), "
        "attempted_by = ARRAY['elsewhere', 'some-uuid']"
    ),
    "completed": (
        "state = 'completed', attempt = 1, attempted_at = timezone('UTC', now()), "
        "completed_at = timezone('UTC', now())"
    ),
    "discarded": (
        "state = 'discarded', attempt = max_attempts, attempted_at = timezone('UTC', now()), "
        "discarded_at = timezone('UTC', now())"
    ),
    "cancelled": "state = 'cancelled', cancelled_at = timezone('UTC', now())",
}


async def _make(oban: Oban, sql: Callable[..., Any], state: str, **params: Any) -> Job:
    """Insert a job (nobody runs it) and force it into ``state`` with fitting timestamps."""
    params.setdefault("args", {"key": state})
    args = params.pop("args")
    job = await oban.enqueue(MgmtCountingWorker.new(args, **params))
    await sql(f"UPDATE oban_jobs SET {_STATE_SQL[state]} WHERE id = %s", (job.id,))
    return await _get(oban, job.id)


async def _get(oban: Oban, job_id: int | None) -> Job:
    assert job_id is not None
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing from the database"
    return found


async def _state_is(oban: Oban, job_id: int | None, state: str) -> Job | None:
    assert job_id is not None
    found = await oban.get_job(job_id)
    return found if found is not None and found.state == state else None


async def _count(sql: Callable[..., Any]) -> int:
    rows = await sql("SELECT count(*) FROM oban_jobs")
    return int(rows[0][0])


def _near_now(value: datetime | None, offset: timedelta = timedelta(0)) -> bool:
    return value is not None and abs(value - (datetime.now(UTC) + offset)) < NOW_TOLERANCE


async def _running_server(make_oban: Callable[..., Oban], **options: Any) -> Oban:
    options.setdefault("queues", {"mgmt": 2})
    options.setdefault("notifier", {"poll_interval": 0.1})
    server = make_oban(**options)
    await server.start()
    return server


# ---------------------------------------------------------------------------------------------
# get_job
# ---------------------------------------------------------------------------------------------


async def test_get_job_by_id_or_job_returns_the_current_row(oban: Oban, sql: Any) -> None:
    job = await MgmtCountingWorker.enqueue({"key": "get", "n": [1, 2]}, priority=2, tags=["x"])
    await sql("UPDATE oban_jobs SET priority = 5 WHERE id = %s", (job.id,))

    by_id = await oban.get_job(job.id)  # type: ignore[arg-type]
    by_job = await oban.get_job(job)

    for found in (by_id, by_job):
        assert found is not None
        assert found.id == job.id
        assert found.worker == MgmtCountingWorker._worker_name  # type: ignore[attr-defined]
        assert found.args == {"key": "get", "n": [1, 2]}
        assert found.priority == 5  # read from the database, not the caller's object
        assert found.tags == ["x"]
        assert found.state == "available"


async def test_get_job_of_a_missing_id_or_an_unsaved_job_is_none(oban: Oban) -> None:
    assert await oban.get_job(987654321) is None
    assert await oban.get_job(MgmtCountingWorker.new({"key": "unsaved"})) is None


# ---------------------------------------------------------------------------------------------
# cancel
# ---------------------------------------------------------------------------------------------


async def test_cancel_many_cancels_waiting_jobs(oban: Oban, sql: Any) -> None:
    waiting = [
        await _make(oban, sql, state, meta={"keep": state})
        for state in ("available", "scheduled", "retryable", "suspended")
    ]

    count = await oban.cancel_many_jobs(waiting)

    assert count == 4
    for before in waiting:
        after = await _get(oban, before.id)
        assert after.state == "cancelled", before.state
        assert _near_now(after.cancelled_at)
        assert after.meta["keep"] == before.meta["keep"]
        stamp = datetime.fromisoformat(after.meta["cancel_attempted_at"])
        assert _near_now(stamp)


async def test_cancel_job_accepts_a_job_or_an_id(oban: Oban, sql: Any) -> None:
    first = await _make(oban, sql, "available", args={"key": "a"})
    second = await _make(oban, sql, "scheduled", args={"key": "b"})

    assert await oban.cancel_job(first) == 1
    assert await oban.cancel_job(second.id) == 1  # type: ignore[arg-type]

    assert (await _get(oban, first.id)).state == "cancelled"
    assert (await _get(oban, second.id)).state == "cancelled"


async def test_cancel_leaves_finished_jobs_alone_and_does_not_count_them(
    oban: Oban, sql: Any
) -> None:
    finished = [await _make(oban, sql, s) for s in ("completed", "discarded", "cancelled")]
    waiting = await _make(oban, sql, "available")

    count = await oban.cancel_many_jobs([*finished, waiting])

    assert count == 1
    for before in finished:
        after = await _get(oban, before.id)
        assert after.state == before.state
        assert after.cancelled_at == before.cancelled_at
        assert after.completed_at == before.completed_at
        assert after.discarded_at == before.discarded_at
        assert "cancel_attempted_at" not in after.meta
    assert (await _get(oban, waiting.id)).state == "cancelled"


async def test_cancel_of_missing_ids_counts_nothing(oban: Oban) -> None:
    assert await oban.cancel_many_jobs([987654321]) == 0
    assert await oban.cancel_many_jobs([]) == 0


async def test_cancel_executing_job_signals_worker_which_records_the_cancel(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    gate = _gate("cancel-exec")
    job = await MgmtCancellableWorker.enqueue({"key": "cancel-exec"})
    await asyncio.wait_for(gate["started"].wait(), 5)

    count = await server.cancel_job(job)

    assert count == 1
    await asyncio.wait_for(gate["noticed"].wait(), 5)
    # The worker saw the signal but has not returned: the row still says executing.
    during = await _get(server, job.id)
    assert during.state == "executing"
    assert during.cancelled_at is None

    gate["release"].set()
    after = await eventually(
        lambda: _state_is(server, job.id, "cancelled"), message="job cancelled by its worker"
    )
    assert after.cancelled_at is not None
    assert any("mgmt-stopped-on-request" in str(e.get("error")) for e in after.errors)


async def test_cancel_from_a_client_instance_reaches_the_node_running_the_job(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    client = make_oban(name="MgmtClient")
    gate = _gate("cancel-remote")
    job = await MgmtCancellableWorker.enqueue({"key": "cancel-remote"})
    await asyncio.wait_for(gate["started"].wait(), 5)

    assert await client.cancel_job(job.id) == 1  # type: ignore[arg-type]

    await asyncio.wait_for(gate["noticed"].wait(), 5)
    gate["release"].set()
    await eventually(
        lambda: _state_is(server, job.id, "cancelled"), message="remote cancel recorded"
    )


async def test_cancel_of_executing_job_whose_worker_completes_leaves_it_completed(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    gate = _gate("cancel-ignored")
    job = await MgmtBlockingWorker.enqueue({"key": "cancel-ignored"})
    await asyncio.wait_for(gate["started"].wait(), 5)

    assert await server.cancel_job(job) == 1
    gate["release"].set()

    after = await eventually(
        lambda: _state_is(server, job.id, "completed"), message="job completed after all"
    )
    assert after.cancelled_at is None
    assert "cancel_attempted_at" not in after.meta


async def test_cancel_of_a_job_that_already_completed_leaves_it_completed(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    job = await MgmtCountingWorker.enqueue({"key": "done"})
    done = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")

    assert await server.cancel_job(job) == 0

    after = await _get(server, job.id)
    assert after.state == "completed"
    assert after.completed_at == done.completed_at
    assert after.cancelled_at is None


# ---------------------------------------------------------------------------------------------
# retry
# ---------------------------------------------------------------------------------------------


async def test_retry_makes_finished_and_waiting_jobs_available_now(oban: Oban, sql: Any) -> None:
    states = ("completed", "discarded", "cancelled", "retryable", "scheduled")
    jobs = [await _make(oban, sql, state) for state in states]

    count = await oban.retry_many_jobs(jobs)

    assert count == len(states)
    for before in jobs:
        after = await _get(oban, before.id)
        assert after.state == "available", before.state
        assert _near_now(after.scheduled_at), before.state
        assert after.completed_at is None
        assert after.cancelled_at is None
        assert after.discarded_at is None
        assert after.meta.get("uniq_bmp") == []


async def test_retry_job_accepts_a_job_or_an_id(oban: Oban, sql: Any) -> None:
    first = await _make(oban, sql, "completed", args={"key": "a"})
    second = await _make(oban, sql, "cancelled", args={"key": "b"})

    assert await oban.retry_job(first) == 1
    assert await oban.retry_job(second.id) == 1  # type: ignore[arg-type]

    assert (await _get(oban, first.id)).state == "available"
    assert (await _get(oban, second.id)).state == "available"


async def test_retry_of_an_exhausted_discarded_job_grants_one_more_attempt(
    oban: Oban, sql: Any
) -> None:
    exhausted = await _make(oban, sql, "discarded", max_attempts=3)
    assert exhausted.attempt == exhausted.max_attempts == 3
    roomy = await _make(oban, sql, "cancelled", max_attempts=5)

    assert await oban.retry_many_jobs([exhausted, roomy]) == 2

    assert (await _get(oban, exhausted.id)).max_attempts == 4
    assert (await _get(oban, roomy.id)).max_attempts == 5


async def test_retry_leaves_available_and_executing_jobs_alone(oban: Oban, sql: Any) -> None:
    available = await _make(oban, sql, "available")
    await sql(
        "UPDATE oban_jobs SET scheduled_at = timezone('UTC', now()) - interval '1 hour' "
        "WHERE id = %s",
        (available.id,),
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
    job = await MgmtCountingWorker.enqueue({"key": "again"})
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
    gate = _gate("retry-exec")
    job = await MgmtBlockingWorker.enqueue({"key": "retry-exec"})
    await asyncio.wait_for(gate["started"].wait(), 5)

    assert await server.retry_job(job) == 0
    gate["release"].set()

    after = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")
    assert after.attempt == 1
    assert RUNS["retry-exec"] == 1


# ---------------------------------------------------------------------------------------------
# delete
# ---------------------------------------------------------------------------------------------


async def test_delete_many_removes_every_job_that_is_not_executing(oban: Oban, sql: Any) -> None:
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

    count = await oban.delete_many_jobs([*gone, executing])

    assert count == len(states)
    for job in gone:
        assert await oban.get_job(job) is None, job.state
    assert (await _get(oban, executing.id)).state == "executing"
    assert await _count(sql) == 1


async def test_delete_job_accepts_a_job_or_an_id(oban: Oban, sql: Any) -> None:
    first = await _make(oban, sql, "available", args={"key": "a"})
    second = await _make(oban, sql, "completed", args={"key": "b"})

    assert await oban.delete_job(first) == 1
    assert await oban.delete_job(second.id) == 1  # type: ignore[arg-type]
    assert await oban.delete_job(second.id) == 0  # type: ignore[arg-type]

    assert await _count(sql) == 0


async def test_delete_of_an_executing_job_that_then_completes_leaves_it_completed(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    gate = _gate("delete-exec")
    job = await MgmtBlockingWorker.enqueue({"key": "delete-exec"})
    await asyncio.wait_for(gate["started"].wait(), 5)

    assert await server.delete_job(job) == 0
    gate["release"].set()

    after = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")
    assert after.completed_at is not None
    assert RUNS["delete-exec"] == 1


# ---------------------------------------------------------------------------------------------
# update
# ---------------------------------------------------------------------------------------------


async def test_update_job_stores_every_updatable_field(oban: Oban, sql: Any) -> None:
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


async def test_update_job_with_scheduled_at_stores_that_time(oban: Oban, sql: Any) -> None:
    job = await _make(oban, sql, "available")
    when = datetime(2999, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

    await oban.update_job(job.id, {"scheduled_at": when})  # type: ignore[arg-type]

    stored = await _get(oban, job.id)
    assert stored.scheduled_at == when
    assert stored.state == "scheduled"


async def test_update_available_job_into_the_future_makes_it_scheduled(
    oban: Oban, sql: Any
) -> None:
    job = await _make(oban, sql, "available")
    other = await _make(oban, sql, "available", args={"key": "alias"})

    updated = await oban.update_job(job, {"scheduled_in": 3600})
    aliased = await oban.update_job(other, {"schedule_in": timedelta(minutes=30)})

    assert updated.state == "scheduled"
    assert (await _get(oban, job.id)).state == "scheduled"
    assert aliased.state == "scheduled"
    assert _near_now((await _get(oban, other.id)).scheduled_at, timedelta(minutes=30))


async def test_update_scheduled_job_into_the_past_makes_it_available(oban: Oban, sql: Any) -> None:
    job = await _make(oban, sql, "scheduled")
    past = datetime.now(UTC) - timedelta(minutes=5)

    updated = await oban.update_job(job, {"scheduled_at": past})

    assert updated.state == "available"
    stored = await _get(oban, job.id)
    assert stored.state == "available"
    assert abs(stored.scheduled_at - past) < timedelta(milliseconds=1)  # type: ignore[operator]


async def test_update_many_with_a_callable_computes_changes_per_job(oban: Oban, sql: Any) -> None:
    jobs = [await _make(oban, sql, "available", args={"key": f"k{n}", "n": n}) for n in (1, 2, 3)]
    seen: list[int] = []

    def changes(job: Job) -> dict[str, Any]:
        seen.append(job.args["n"])  # the callable gets each job as stored
        return {"args": {**job.args, "n": job.args["n"] * 10}, "priority": job.args["n"]}

    updated = await oban.update_many_jobs([jobs[0], jobs[1].id, jobs[2]], changes)  # type: ignore[list-item]

    assert sorted(seen) == [1, 2, 3]
    assert sorted(j.args["n"] for j in updated) == [10, 20, 30]
    for n, job in zip((1, 2, 3), jobs, strict=True):
        stored = await _get(oban, job.id)
        assert stored.args == {"key": f"k{n}", "n": n * 10}
        assert stored.priority == n


async def test_update_revalidates_and_changes_nothing_when_invalid(oban: Oban, sql: Any) -> None:
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


async def test_update_of_a_missing_id_raises_naming_it(oban: Oban, sql: Any) -> None:
    present = await _make(oban, sql, "available", priority=1)

    with pytest.raises(ValueError, match="987654321"):
        await oban.update_job(987654321, {"priority": 2})
    with pytest.raises(ValueError, match="987654322"):
        await oban.update_many_jobs([present, 987654322], {"priority": 2})

    assert (await _get(oban, present.id)).priority == 1


async def test_update_leaves_executing_jobs_unchanged(oban: Oban, sql: Any) -> None:
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


async def test_update_of_a_completed_job_does_not_resurrect_it(oban: Oban, sql: Any) -> None:
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
    oban: Oban, sql: Any, dsn: str, prefix: str
) -> None:
    job = await _make(oban, sql, "available", args={"key": "race"})

    def complete_meanwhile(current: Job) -> dict[str, Any]:
        # Runs between the read and the write of update_job: the job finishes meanwhile.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                f"UPDATE \"{prefix}\".oban_jobs SET state = 'completed', attempt = 1, "
                "completed_at = timezone('UTC', now()), "
                'meta = \'{"recorded": true, "return": "g2EB"}\' WHERE id = %s',
                (current.id,),
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
    oban: Oban, sql: Any, dsn: str, prefix: str
) -> None:
    job = await _make(oban, sql, "available", args={"key": "race"}, priority=1)

    def fetched_meanwhile(current: Job) -> dict[str, Any]:
        # Runs between the read and the write of update_job: a queue claims the job meanwhile.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                f"UPDATE \"{prefix}\".oban_jobs SET state = 'executing', attempt = 1, "
                "attempted_at = timezone('UTC', now()) WHERE id = %s",
                (current.id,),
            )
        return {"priority": 7, "args": {"key": "changed"}}

    with pytest.raises(ValueError):
        await oban.update_job(job, fetched_meanwhile)

    stored = await _get(oban, job.id)
    assert stored.state == "executing"
    assert stored.priority == 1
    assert stored.args == {"key": "race"}


async def test_update_of_an_executing_job_that_then_completes_keeps_its_original_args(
    make_oban: Callable[..., Oban],
) -> None:
    server = await _running_server(make_oban)
    gate = _gate("update-exec")
    job = await MgmtBlockingWorker.enqueue({"key": "update-exec"})
    await asyncio.wait_for(gate["started"].wait(), 5)

    with pytest.raises(ValueError):
        await server.update_job(job, {"args": {"key": "other"}})
    gate["release"].set()

    after = await eventually(lambda: _state_is(server, job.id, "completed"), message="completed")
    assert after.args == {"key": "update-exec"}


# ---------------------------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------------------------


async def test_management_methods_reject_jobs_without_an_id(oban: Oban) -> None:
    unsaved = MgmtCountingWorker.new({"key": "unsaved"})
    with pytest.raises(TypeError):
        await oban.cancel_job(unsaved)
    with pytest.raises(TypeError):
        await oban.retry_job(unsaved)
    with pytest.raises(TypeError):
        await oban.delete_job(unsaved)
    with pytest.raises(TypeError):
        await oban.update_job(unsaved, {"priority": 1})
