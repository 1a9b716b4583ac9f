"""Unique jobs and staging, on both engines: a job that would take a key another job holds
when it becomes available is discarded with ``meta.unique_conflict``, never failing the
staging of everything else (Oban issue 1416, oban-py issue 19)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from oban import Job, Oban, Snooze, telemetry, worker
from oban._cron import CronEntry
from oban._scheduler import Scheduler
from oban._unique import UniqueOptions
from oban.errors import SchemaNotInstalledError
from tests.helpers import eventually

#: Our own state lists always hold retryable; a row another client wrote (Oban Pro with a
#: custom list, Oban issue 1416) may not. Such a retryable job does not hold its key and takes
#: it again when staged.
INCOMPLETE: UniqueOptions = {"group": "incomplete"}

Sql = Callable[..., Any]


def _job(key: int, **options: Any) -> Job:
    return Job("conf.unique.Worker", queue="uq", args={"key": key}, unique=INCOMPLETE, **options)


async def without_retryable(oban: Oban, sql: Sql, job_id: int) -> None:
    """Make ``job_id`` a row another client wrote: its uniq_bmp without retryable (3)."""
    if oban.pool is not None:
        query = (
            "UPDATE oban_jobs SET meta = jsonb_set(meta, '{uniq_bmp}', '[0, 1, 2]') WHERE id = %s"
        )
    else:
        query = (
            "UPDATE oban_jobs SET meta = json_set(meta, '$.uniq_bmp', json('[0,1,2]')) "
            "WHERE id = %s"
        )
    await sql(oban, query, (job_id,))


async def _make_due_retryable(oban: Oban, sql: Sql, backdate: Sql, job_id: int) -> None:
    await without_retryable(oban, sql, job_id)
    await sql(oban, "UPDATE oban_jobs SET state = 'retryable' WHERE id = %s", (job_id,))
    await backdate(oban, job_id, "scheduled_at", 5)


async def _stage(oban: Oban) -> dict[str, int]:
    engine = await oban._ready()
    return await engine.stage_jobs(None, 100)


async def _states(oban: Oban, sql: Sql, ids: list[int]) -> list[tuple[Any, ...]]:
    rows = await sql(oban, "SELECT id, state, meta FROM oban_jobs ORDER BY id")
    return [row for row in rows if row[0] in ids]


def _meta(value: Any) -> dict[str, Any]:
    import json

    return value if isinstance(value, dict) else json.loads(value)


async def test_a_job_whose_key_is_held_is_discarded_at_staging_and_the_rest_staged(
    oban: Oban, sql: Sql, backdate: Sql
) -> None:
    events: list[dict[str, Any]] = []
    telemetry.attach("uniq-test", ["oban.unique.conflict"], lambda _n, meta: events.append(meta))
    try:
        first = await oban.enqueue(_job(1))
        await _make_due_retryable(oban, sql, backdate, first.id)  # type: ignore[arg-type]
        holder = await oban.enqueue(_job(1))  # the retryable one does not hold the key
        assert not holder.conflict and holder.id != first.id
        plain = await oban.enqueue(Job("conf.unique.Worker", queue="other", scheduled_in=60))
        await backdate(oban, plain.id, "scheduled_at", 5)

        staged = await _stage(oban)
    finally:
        telemetry.detach("uniq-test")

    assert staged.get("other") == 1, staged
    rows = {
        row[0]: (row[1], _meta(row[2]))
        for row in await _states(
            oban,
            sql,
            [first.id, holder.id, plain.id],  # type: ignore[list-item]
        )
    }
    assert rows[first.id][0] == "discarded", rows
    assert rows[first.id][1]["unique_conflict"] == "staging", rows
    assert rows[holder.id][0] == "available", rows
    assert rows[plain.id][0] == "available", rows
    assert events == [{"queue": "uq", "count": 1, "at": "stage"}], events
    # Nothing is left to fail the next run.
    assert await _stage(oban) in ({}, {"other": 0}, {"uq": 0}, {"other": 0, "uq": 0})


async def test_two_due_jobs_with_one_key_stage_the_earlier_and_discard_the_other(
    oban: Oban, sql: Sql, backdate: Sql
) -> None:
    first = await oban.enqueue(_job(2))
    await _make_due_retryable(oban, sql, backdate, first.id)  # type: ignore[arg-type]
    second = await oban.enqueue(_job(2))
    assert not second.conflict
    await _make_due_retryable(oban, sql, backdate, second.id)  # type: ignore[arg-type]
    await backdate(oban, first.id, "scheduled_at", 10)

    await _stage(oban)

    rows = {
        row[0]: row[1]
        for row in await _states(
            oban,
            sql,
            [first.id, second.id],  # type: ignore[list-item]
        )
    }
    assert rows == {first.id: "available", second.id: "discarded"}, rows
    again = await oban.enqueue(_job(2))
    assert again.conflict and again.id == first.id


SNOOZE_GATE: dict[str, asyncio.Event] = {}


@worker(queue="uqsnooze", unique={"group": "scheduled"})
class UniqueSnoozer:
    """Waits for the test's gate, then snoozes: back to ``scheduled``, where its key counts."""

    async def process(self, job: Job) -> Snooze:
        await SNOOZE_GATE["open"].wait()
        return Snooze(600)


async def test_a_snooze_into_a_key_another_job_holds_discards_the_job_and_acks_the_rest(
    make_oban: Callable[..., Oban],
) -> None:
    SNOOZE_GATE["open"] = asyncio.Event()
    oban = make_oban(queues={"uqsnooze": 2, "default": 2})
    await oban.start()
    # Available, so outside its group ("scheduled"): it does not hold the key while it runs.
    running = await UniqueSnoozer.enqueue({"k": 1})
    assert not running.conflict

    async def executing() -> bool:
        job = await oban.get_job(running.id)  # type: ignore[arg-type]
        return job is not None and job.state == "executing"

    await eventually(executing, message="the snoozer runs")
    holder = await UniqueSnoozer.enqueue({"k": 1}, scheduled_in=300)
    assert not holder.conflict and holder.state == "scheduled"
    others = await oban.enqueue_many([Job("conf.unique.Missing", max_attempts=1) for _ in range(3)])
    SNOOZE_GATE["open"].set()

    async def final() -> Job | None:
        job = await oban.get_job(running.id)  # type: ignore[arg-type]
        return job if job is not None and job.state == "discarded" else None

    done = await eventually(final, message="the snoozed duplicate discarded", timeout=10)
    assert "could not store" in done.errors[-1]["error"], done.errors
    assert (await oban.get_job(holder.id)).state == "scheduled"  # type: ignore[arg-type, union-attr]

    async def others_acked() -> bool:  # an unknown worker's job is discarded at once
        found = [await oban.get_job(job.id) for job in others]  # type: ignore[arg-type]
        return all(job is not None and job.state == "discarded" for job in found)

    await eventually(others_acked, message="the other jobs acked")


@worker(queue="uqcron", unique={"group": "incomplete"})
class UniqueCronWorker:
    async def process(self, job: Job) -> None:
        return None


async def test_a_unique_cron_worker_on_three_nodes_inserts_once_and_skips_while_incomplete(
    make_oban: Callable[..., Oban], sql: Sql
) -> None:
    entry = CronEntry.build("* * * * *", UniqueCronWorker)
    nodes = [make_oban(name=f"uq_cron_{n}", node=f"cron-{n}") for n in "abc"]
    schedulers = [
        Scheduler(
            engine=await node._ready(),
            entries=lambda: [entry],
            instance="Oban",
            is_leader=lambda: True,
        )
        for node in nodes
    ]
    minute = datetime(2031, 3, 4, 5, 6, tzinfo=UTC)

    async def evaluate(at: datetime) -> list[int]:
        found = await asyncio.gather(*(s.evaluate(at) for s in schedulers))
        return [job_id for ids in found for job_id in ids]

    first = await evaluate(minute)
    assert len(first) == 1, first
    # The next minutes: the first job is still available, so its key is held.
    assert await evaluate(minute + timedelta(minutes=1)) == []
    assert await evaluate(minute + timedelta(minutes=2)) == []
    await sql(nodes[0], "UPDATE oban_jobs SET state = 'completed' WHERE id = %s", (first[0],))
    later = await evaluate(minute + timedelta(minutes=3))
    assert len(later) == 1 and later != first, later
    rows = await sql(nodes[0], "SELECT count(*) FROM oban_jobs")
    assert rows[0][0] == 2


async def test_replacing_the_time_of_an_available_job_makes_it_wait(oban: Oban) -> None:
    options: dict[str, Any] = {
        "unique": {"group": "incomplete"},
        "replace": {"available": ["scheduled_at"]},
    }
    first = await oban.enqueue(Job("conf.unique.Debounced", args={"k": 1}, **options))
    assert first.state == "available"
    later = await oban.enqueue(
        Job("conf.unique.Debounced", args={"k": 1}, scheduled_in=600, **options)
    )

    assert later.conflict and later.id == first.id
    assert later.state == "scheduled"
    stored = await oban.get_job(first.id)  # type: ignore[arg-type]
    assert stored is not None and stored.state == "scheduled"
    assert stored.scheduled_at is not None and first.scheduled_at is not None
    assert (stored.scheduled_at - first.scheduled_at).total_seconds() > 590


async def test_an_update_into_a_held_key_is_a_value_error_and_changes_nothing(oban: Oban) -> None:
    scheduled: Any = {"group": "scheduled"}
    waiting = await oban.enqueue(Job("conf.unique.Upd", args={"k": 1}, unique=scheduled))
    holder = await oban.enqueue(
        Job("conf.unique.Upd", args={"k": 1}, unique=scheduled, scheduled_in=600)
    )
    assert waiting.state == "available" and not holder.conflict

    with pytest.raises(ValueError, match="unique key another job holds"):
        await oban.update_job(waiting, {"scheduled_in": 300})
    after = await oban.get_job(waiting)
    assert after is not None and after.state == "available"


async def test_a_unique_insert_on_a_sqlite_file_without_the_index_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    client = Oban(name="uq_old_file", dsn=f"sqlite:///{path}")
    try:
        await client.enqueue(Job("conf.unique.Old"))  # installs the schema
        with sqlite3.connect(path) as raw:
            raw.execute("DROP INDEX oban_jobs_unique_index")  # as a file from before it
        conn = sqlite3.connect(path)
        try:
            with pytest.raises(SchemaNotInstalledError, match="oban_jobs_unique_index"):
                client.sync.enqueue(Job("conf.unique.Old", unique=True), conn=conn)
        finally:
            conn.close()
    finally:
        await client.stop()


async def test_copies_of_unique_jobs_and_odd_keys_in_meta_insert_in_one_batch(oban: Oban) -> None:
    original = await oban.enqueue(Job("conf.unique.Copy", args={"k": 1}, unique=True))
    copy = await oban.get_job(original)  # unique is not stored: only its meta entries are
    assert copy is not None and copy.unique is None and "uniq_key" in copy.meta
    odd = [Job("conf.unique.Odd", meta={"uniq_key": 5}), Job("conf.unique.Odd", meta={"x": 1})]
    answered = await oban.enqueue_many([Job("conf.unique.Copy", meta=copy.meta), *odd])

    assert answered[0].conflict and answered[0].id == original.id  # the index refused it
    assert not answered[1].conflict and not answered[2].conflict
    assert answered[1].id is not None and answered[2].id is not None
