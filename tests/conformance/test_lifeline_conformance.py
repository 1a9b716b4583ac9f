"""The lifeline's rescue rules on both engines, with its default options.

Elixir Oban nodes share the PostgreSQL database but write no ``oban_producers`` rows: a job
one of them runs is ``executing`` with ``attempted_by = [node, producer uuid]`` and no row for
that uuid. Nothing tells such a job from an orphan, so it may be rescued only by time, and no
sooner than Elixir's own Lifeline would (60 minutes by default). Jobs of producers that have a
row keep the heartbeat rules. SQLite has no Elixir nodes, but the option means the same there.

The lifeline is ticked by hand: its first tick at start aside, it runs once a minute.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from oban import Job, Oban, worker
from oban.worker import worker_name
from tests.helpers import eventually

MINUTE = 60.0

#: How an Elixir node leaves a job it runs, and rows with no producer at all.
UNKNOWN_PRODUCERS = {
    "elixir": ["elixir@app-1", "0b9e2c5e-3f1a-4c2b-9d8e-2f6a7c1e5b40"],
    "node-only": ["elixir@app-1"],
    "none": None,
}


def _ts(offset: float = 0.0) -> str:
    """A UTC timestamp as SQLite stores it; PostgreSQL casts the same text."""
    value = datetime.now(UTC) + timedelta(seconds=offset)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


async def _executing_job(
    node: Oban,
    sql: Callable[..., Any],
    engine: str,
    attempted_by: list[str] | None,
    *,
    attempt: int = 1,
    max_attempts: int = 20,
) -> int:
    """An executing job inserted as another node left it, just started."""
    by = json.dumps(attempted_by) if engine == "sqlite" and attempted_by else attempted_by
    rows = await sql(
        node,
        "INSERT INTO oban_jobs (state, queue, worker, args, attempt, max_attempts, "
        "attempted_by, attempted_at) "
        "VALUES ('executing', 'default', 'MyApp.LongReport', '{}', %s, %s, %s, %s) "
        "RETURNING id",
        (attempt, max_attempts, by, _ts()),
    )
    return int(rows[0][0])


async def _producer(node: Oban, sql: Callable[..., Any], ident: str, *, age: float) -> None:
    """A producer row of another Python node whose last heartbeat was ``age`` seconds ago.

    Insert its job first: the leader deletes a stale producer row that runs no job."""
    await sql(
        node,
        "INSERT INTO oban_producers (uuid, name, node, queue, meta, started_at, updated_at) "
        "VALUES (%s, 'Oban', 'py-other', 'default', '{}', %s, %s)",
        (ident, _ts(-age), _ts(-age)),
    )


async def _leader(make_oban: Callable[..., Oban], **options: Any) -> Oban:
    node = make_oban(name="LifelineDefaults", node="py-leader", leadership=True, **options)
    await node.start()
    await eventually(lambda: node.is_leader, message="the node leads")
    return node


async def _tick(node: Oban) -> None:
    (lifeline,) = [plugin for plugin in node._plugins if plugin.name == "lifeline"]
    await lifeline.tick()


async def _job(node: Oban, job_id: int) -> Job:
    found = await node.get_job(job_id)
    assert found is not None, f"job {job_id} is missing"
    return found


@pytest.mark.parametrize("attempted_by", UNKNOWN_PRODUCERS.values(), ids=UNKNOWN_PRODUCERS)
async def test_job_of_an_unknown_producer_is_rescued_only_after_sixty_minutes(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    engine: str,
    attempted_by: list[str] | None,
) -> None:
    node = await _leader(make_oban)
    job_id = await _executing_job(node, sql, engine, attempted_by)

    # Ten minutes, then 59: an Elixir job this long may well still be running.
    for minutes in (10, 59):
        await backdate(node, job_id, "attempted_at", minutes * MINUTE)
        await _tick(node)
        running = await _job(node, job_id)
        assert running.state == "executing", f"rescued after {minutes} minutes"
        assert "rescued" not in running.meta

    await backdate(node, job_id, "attempted_at", 61 * MINUTE)
    await _tick(node)
    rescued = await _job(node, job_id)
    assert rescued.state == "available"
    assert rescued.meta == {"rescued": 1}
    assert rescued.attempt == 1


async def test_configured_rescue_after_rescues_unknown_producers_jobs_sooner(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    engine: str,
) -> None:
    node = await _leader(make_oban, lifeline={"rescue_after": 5 * MINUTE})
    young = await _executing_job(node, sql, engine, UNKNOWN_PRODUCERS["elixir"])
    old = await _executing_job(node, sql, engine, UNKNOWN_PRODUCERS["elixir"])
    await backdate(node, young, "attempted_at", 4 * MINUTE)
    await backdate(node, old, "attempted_at", 10 * MINUTE)

    await _tick(node)

    assert (await _job(node, young)).state == "executing"
    rescued = await _job(node, old)
    assert rescued.state == "available"
    assert rescued.meta == {"rescued": 1}


async def test_unknown_producers_job_out_of_attempts_is_discarded_after_sixty_minutes(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    engine: str,
) -> None:
    node = await _leader(make_oban)
    job_id = await _executing_job(
        node, sql, engine, UNKNOWN_PRODUCERS["elixir"], attempt=3, max_attempts=3
    )
    await backdate(node, job_id, "attempted_at", 10 * MINUTE)
    await _tick(node)
    assert (await _job(node, job_id)).state == "executing"

    await backdate(node, job_id, "attempted_at", 61 * MINUTE)
    await _tick(node)
    discarded = await _job(node, job_id)
    assert discarded.state == "discarded"
    assert discarded.discarded_at is not None
    assert discarded.meta == {}, "a discarded job was counted as rescued"


async def test_job_of_a_heartbeating_producer_is_not_rescued_however_old(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    engine: str,
) -> None:
    node = await _leader(make_oban)
    producer = str(uuid.uuid4())
    job_id = await _executing_job(node, sql, engine, ["py-other", producer])
    await _producer(node, sql, producer, age=0)
    await backdate(node, job_id, "attempted_at", 3 * 60 * MINUTE)

    await _tick(node)

    assert (await _job(node, job_id)).state == "executing"


async def test_job_of_a_stale_producer_is_rescued_by_heartbeat_long_before_rescue_after(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    engine: str,
) -> None:
    # Heartbeats are trusted once the database has been up for a producer max_age (1 s here).
    node = await _leader(make_oban, refresher={"max_age": 1})
    producer = str(uuid.uuid4())
    job_id = await _executing_job(node, sql, engine, ["py-other", producer])
    await _producer(node, sql, producer, age=10 * MINUTE)
    await backdate(node, job_id, "attempted_at", 5)

    async def rescued() -> Job | None:
        await _tick(node)
        found = await _job(node, job_id)
        return found if found.state == "available" else None

    found: Job = await eventually(rescued, timeout=4.0, interval=0.2, message="the rescue")
    assert found.meta == {"rescued": 1}
    assert found.attempt == 1


RESCUED_RUNS: list[int] = []


@worker(queue="lifeline_wake")
class LifelineWakeWorker:
    async def process(self, job: Job) -> None:
        assert job.id is not None
        RESCUED_RUNS.append(job.id)


async def test_a_rescued_job_starts_at_once_not_at_the_next_poll(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    engine: str,
) -> None:
    """The lifeline wakes the producers (and, on PostgreSQL, stages, which notifies every
    node's queues with available jobs): with polling and staging 30 s apart, the rescued job
    still runs within a second of its rescue."""
    RESCUED_RUNS.clear()
    node = await _leader(
        make_oban,
        queues={"lifeline_wake": 1},
        refresher={"max_age": 1},
        notifier={"poll_interval": 30},
        stager={"interval": 30},
    )
    producer = str(uuid.uuid4())
    rows = await sql(
        node,
        "INSERT INTO oban_jobs (state, queue, worker, args, attempt, max_attempts, "
        "attempted_by, attempted_at) VALUES ('executing', 'lifeline_wake', %s, '{}', 1, 20, "
        "%s, %s) RETURNING id",
        (
            worker_name(LifelineWakeWorker),
            json.dumps(["py-other", producer]) if engine == "sqlite" else ["py-other", producer],
            _ts(-5),
        ),
    )
    job_id = int(rows[0][0])
    await _producer(node, sql, producer, age=10 * MINUTE)

    async def rescued() -> bool:
        await _tick(node)
        return (await _job(node, job_id)).state != "executing"

    await eventually(rescued, timeout=4.0, interval=0.2, message="the rescue")
    rescued_at = time.monotonic()

    async def completed() -> bool:
        return (await _job(node, job_id)).state == "completed"

    await eventually(completed, timeout=3.0, message="the rescued job ran")
    assert RESCUED_RUNS == [job_id]
    assert time.monotonic() - rescued_at < 3.0
