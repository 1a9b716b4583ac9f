"""The testing helpers (oban.testing) on both engines: modes, process_job, the enqueued
assertions, drain_queue and reset_oban."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from oban import Cancel, Job, Oban, Snooze, current_job, job, worker
from oban.testing import (
    all_enqueued,
    assert_enqueued,
    drain_queue,
    mode,
    process_job,
    refute_enqueued,
    reset_oban,
)

pytest_plugins = ["pytester"]

CALLS: list[Any] = []
SEEN: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    CALLS.clear()
    SEEN.clear()


class ConfBBoom(Exception):
    """Raised by the failing worker of this module."""


@worker(queue="confb_helpers")
class ConfBEchoWorker:
    async def process(self, job: Job) -> Any:
        CALLS.append(("echo", job.args))
        return {"echoed": job.args}


@worker(queue="confb_helpers")
class ConfBSyncWorker:
    def process(self, job: Job) -> Any:
        SEEN["sync_current"] = current_job()
        CALLS.append(("sync", job.args))
        return job.args.get("n", 0) * 2


@worker(queue="confb_helpers")
class ConfBInspectWorker:
    async def process(self, job: Job) -> Any:
        SEEN["job"] = job
        SEEN["current"] = current_job()
        SEEN["args"] = job.args
        SEEN["meta"] = job.meta
        return "inspected"


@worker(queue="confb_helpers")
class ConfBRaiseWorker:
    async def process(self, job: Job) -> Any:
        CALLS.append(("raise", job.attempt))
        raise ConfBBoom(f"confb-boom-{job.args.get('tag', '')}")


@worker(queue="confb_helpers")
class ConfBCancelWorker:
    async def process(self, job: Job) -> Any:
        CALLS.append(("cancel", job.args))
        return Cancel("confb-not-wanted")


@worker(queue="confb_helpers")
class ConfBSnoozeOnceWorker:
    async def process(self, job: Job) -> Any:
        CALLS.append(("snooze", job.meta.get("snoozed", 0)))
        if not job.meta.get("snoozed"):
            return Snooze(3600)
        return None


@worker(queue="confb_helpers")
class ConfBRecursiveWorker:
    async def process(self, job: Job) -> Any:
        depth = job.args["depth"]
        CALLS.append(("recursive", depth))
        if depth < 2:
            await ConfBRecursiveWorker.enqueue({"depth": depth + 1})


@job(queue="confb_helpers")
def confb_pair(a: int, b: int = 2) -> int:
    CALLS.append(("pair", a, b))
    return a + b


ECHO = f"{__name__}.ConfBEchoWorker"
PAIR = f"{__name__}.confb_pair"
ZERO = {"cancelled": 0, "completed": 0, "discarded": 0, "retryable": 0, "scheduled": 0}


async def _count(oban: Oban, sql: Callable[..., Any], table: str = "oban_jobs") -> int:
    rows = await sql(oban, f"SELECT count(*) FROM {table}")
    return int(rows[0][0])


async def _state(oban: Oban, job_id: int | None) -> str:
    assert job_id is not None
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing"
    return str(found.state)


# ---------------------------------------------------------------------------------------------
# mode and process_job
# ---------------------------------------------------------------------------------------------


async def test_inline_mode_runs_jobs_at_once_without_touching_the_database(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with mode("inline"):
        returned = await ConfBEchoWorker.enqueue({"who": "ada"})
        await oban.enqueue_many(
            ConfBSyncWorker.new({"n": 2}),
            confb_pair.new(3, b=4),
        )
        with pytest.raises(ConfBBoom, match="confb-boom-inline"):
            await ConfBRaiseWorker.enqueue({"tag": "inline"})

    assert returned.args == {"who": "ada"}
    assert CALLS == [
        ("echo", {"who": "ada"}),
        ("sync", {"n": 2}),
        ("pair", 3, 4),
        ("raise", 1),
    ]
    assert await _count(oban, sql) == 0


async def test_manual_mode_and_nested_modes_insert_without_running(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with mode("inline"):
        with mode("manual"):
            inserted = await ConfBEchoWorker.enqueue({"step": "inner-manual"})
        assert await _count(oban, sql) == 1
        await ConfBEchoWorker.enqueue({"step": "outer-inline"})
        assert await _count(oban, sql) == 1
    await ConfBEchoWorker.enqueue({"step": "default"})

    assert CALLS == [("echo", {"step": "outer-inline"})]
    assert await _count(oban, sql) == 2
    assert inserted.id is not None
    assert await _state(oban, inserted.id) == "available"


async def test_inline_mode_calls_job_functions_with_their_arguments(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with mode("inline"):
        await confb_pair.enqueue(3, b=4)
        await confb_pair.enqueue(5)

    assert CALLS == [("pair", 3, 4), ("pair", 5, 2)]
    assert await _count(oban, sql) == 0


async def test_mode_is_restored_when_the_block_raises(oban: Oban, sql: Callable[..., Any]) -> None:
    with pytest.raises(ConfBBoom), mode("inline"):
        raise ConfBBoom("leaving the block")

    await ConfBEchoWorker.enqueue({"after": "raise"})

    assert CALLS == []
    assert await _count(oban, sql) == 1


async def test_process_job_runs_a_job_read_back_from_the_database(oban: Oban) -> None:
    inserted = await ConfBEchoWorker.enqueue({"x": [1, {"y": None}]})
    stored = await oban.get_job(inserted)
    assert stored is not None

    assert await process_job(stored) == {"echoed": {"x": [1, {"y": None}]}}
    assert await process_job(ConfBSyncWorker.new({"n": 21})) == 42
    assert await process_job(confb_pair.new(1, b=10)) == 11
    assert await process_job(ConfBCancelWorker.new({})) == Cancel("confb-not-wanted")
    with pytest.raises(ConfBBoom, match="confb-boom-direct"):
        await process_job(ConfBRaiseWorker.new({"tag": "direct"}))
    # process_job runs the worker only: the stored row is untouched.
    assert await _state(oban, inserted.id) == "available"


# Modes and process_job without a database: these tests touch neither engine, so they run once.


def test_invalid_mode_name_is_rejected() -> None:
    # Deliberately not a valid mode name: the runtime check is what is tested.
    with pytest.raises(ValueError, match="eager"), mode(cast(Any, "eager")):
        pass


async def test_process_job_in_a_loop_returns_an_awaitable_of_the_result() -> None:
    pending = process_job(ConfBEchoWorker.new({"x": 1}))
    assert inspect.isawaitable(pending)
    assert await pending == {"echoed": {"x": 1}}

    pending_sync = process_job(ConfBSyncWorker.new({"n": 21}))
    assert inspect.isawaitable(pending_sync)
    assert await pending_sync == 42

    assert await process_job(confb_pair.new(1, b=10)) == 11


async def test_process_job_round_trips_args_and_meta_through_json() -> None:
    built = ConfBInspectWorker.new({"pair": (1, 2), "nested": {"t": ("a",)}}, meta={"m": (3,)})

    await process_job(built)

    assert SEEN["args"] == {"pair": [1, 2], "nested": {"t": ["a"]}}
    assert SEEN["meta"] == {"m": [3]}


async def test_process_job_fills_id_attempt_and_attempted_at() -> None:
    built = ConfBInspectWorker.new({})

    assert await process_job(built) == "inspected"

    seen: Job = SEEN["job"]
    assert seen.id is not None
    assert seen.attempt == 1
    assert seen.attempted_at is not None
    assert abs(seen.attempted_at - datetime.now(UTC)) < timedelta(seconds=5)


async def test_process_job_exposes_current_job_inside_the_worker() -> None:
    built = ConfBInspectWorker.new({"c": 1})
    await process_job(built)
    assert SEEN["current"] is SEEN["job"]
    assert current_job() is None

    await process_job(ConfBSyncWorker.new({"n": 1}))
    assert SEEN["sync_current"] is not None
    assert SEEN["sync_current"].args == {"n": 1}


# ---------------------------------------------------------------------------------------------
# all_enqueued / assert_enqueued / refute_enqueued
# ---------------------------------------------------------------------------------------------


async def test_all_enqueued_filters_by_worker_args_meta_queue_priority_and_tags(
    oban: Oban,
) -> None:
    echo = await ConfBEchoWorker.enqueue(
        {"a": 1, "b": {"c": 2}},
        meta={"trace": "t1", "other": True},
        queue="alpha",
        priority=1,
        tags=["red", "blue"],
    )
    pair = await confb_pair.enqueue(5, 6)

    assert [j.id for j in await all_enqueued(worker=ConfBEchoWorker)] == [echo.id]
    assert [j.id for j in await all_enqueued(worker=confb_pair)] == [pair.id]
    assert [j.id for j in await all_enqueued(worker=ECHO)] == [echo.id]
    assert [j.id for j in await all_enqueued(worker=PAIR)] == [pair.id]
    assert await all_enqueued(worker=ConfBSyncWorker) == []

    assert [j.id for j in await all_enqueued(args={"a": 1})] == [echo.id]
    assert [j.id for j in await all_enqueued(args={"a": 1, "b": {"c": 2}})] == [echo.id]
    assert await all_enqueued(args={"a": 2}) == []
    assert await all_enqueued(args={"a": 1, "missing": None}) == []
    assert [j.id for j in await all_enqueued(meta={"trace": "t1"})] == [echo.id]
    assert await all_enqueued(meta={"trace": "t2"}) == []

    assert [j.id for j in await all_enqueued(queue="alpha")] == [echo.id]
    assert [j.id for j in await all_enqueued(priority=0)] == [pair.id]
    assert [j.id for j in await all_enqueued(tags=["blue", "red"])] == [echo.id]
    assert await all_enqueued(queue="alpha", priority=0) == []


async def test_all_enqueued_matches_scheduled_in_within_a_second(oban: Oban) -> None:
    later = await ConfBEchoWorker.enqueue({"n": 1}, scheduled_in=60)
    await ConfBEchoWorker.enqueue({"n": 2})

    assert [j.id for j in await all_enqueued(scheduled_in=60)] == [later.id]
    assert [j.id for j in await all_enqueued(scheduled_in=timedelta(seconds=60))] == [later.id]
    assert await all_enqueued(scheduled_in=120) == []
    assert await all_enqueued(scheduled_in=58) == []
    await assert_enqueued(worker=ConfBEchoWorker, scheduled_in=60)


async def test_all_enqueued_lists_only_waiting_jobs_newest_first(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    ids = {}
    for state in (
        "available",
        "scheduled",
        "suspended",
        "executing",
        "retryable",
        "completed",
        "cancelled",
        "discarded",
    ):
        inserted = await ConfBEchoWorker.enqueue({"state": state})
        ids[state] = inserted.id
        await sql(
            oban, "UPDATE oban_jobs SET state = %s, attempt = 1 WHERE id = %s", (state, inserted.id)
        )

    listed = await all_enqueued()

    assert [j.id for j in listed] == [ids["suspended"], ids["scheduled"], ids["available"]]
    assert [j.args["state"] for j in listed] == ["suspended", "scheduled", "available"]
    await refute_enqueued(args={"state": "completed"})


async def test_assert_enqueued_returns_the_newest_match_and_lists_jobs_on_failure(
    oban: Oban,
) -> None:
    await ConfBEchoWorker.enqueue({"who": "older"})
    newest = await ConfBEchoWorker.enqueue({"who": "ada-lovelace"})

    found = await assert_enqueued(worker=ConfBEchoWorker)
    assert found.id == newest.id
    assert found.args == {"who": "ada-lovelace"}

    with pytest.raises(AssertionError) as failure:
        await assert_enqueued(worker=confb_pair)
    message = str(failure.value)
    assert ECHO in message
    assert "ada-lovelace" in message


async def test_assert_enqueued_waits_up_to_the_timeout(oban: Oban) -> None:
    async def enqueue_later() -> None:
        await asyncio.sleep(0.2)
        await ConfBEchoWorker.enqueue({"who": "late"})

    await refute_enqueued(worker=ConfBEchoWorker)
    task = asyncio.create_task(enqueue_later())
    try:
        found = await assert_enqueued(worker=ConfBEchoWorker, timeout=2)
    finally:
        await task
    assert found.args == {"who": "late"}

    started = asyncio.get_running_loop().time()
    with pytest.raises(AssertionError):
        await assert_enqueued(worker=confb_pair, timeout=0.2)
    assert asyncio.get_running_loop().time() - started >= 0.2


async def test_refute_enqueued_raises_listing_the_match_and_unknown_filters_are_rejected(
    oban: Oban,
) -> None:
    await ConfBEchoWorker.enqueue({"who": "grace-hopper"})

    await refute_enqueued(worker=confb_pair)
    await refute_enqueued(args={"who": "someone-else"})
    with pytest.raises(AssertionError) as failure:
        await refute_enqueued(worker=ConfBEchoWorker)
    assert "grace-hopper" in str(failure.value)
    assert ECHO in str(failure.value)

    with pytest.raises(ValueError, match="colour"):
        await all_enqueued(colour="red")
    with pytest.raises(ValueError, match="colour"):
        await assert_enqueued(colour="red")
    with pytest.raises(ValueError, match="colour"):
        await refute_enqueued(colour="red")


async def test_all_enqueued_uses_the_given_instance(make_oban: Callable[..., Oban]) -> None:
    other = make_oban(name="ConfBHelpersOther")
    await other.enqueue(ConfBEchoWorker.new({"n": 1}))

    assert len(await all_enqueued(oban=other)) == 1
    assert len(await all_enqueued(oban="ConfBHelpersOther")) == 1


# ---------------------------------------------------------------------------------------------
# drain_queue
# ---------------------------------------------------------------------------------------------


async def test_drain_queue_runs_every_job_of_the_queue_and_counts_outcomes(oban: Oban) -> None:
    done = [await ConfBEchoWorker.enqueue({"n": n}) for n in range(2)]
    cancel = await ConfBCancelWorker.enqueue({})
    snooze = await ConfBSnoozeOnceWorker.enqueue({})
    elsewhere = await ConfBEchoWorker.enqueue({"n": "elsewhere"}, queue="confb_other")

    counts = await drain_queue("confb_helpers")

    assert counts == {**ZERO, "cancelled": 1, "completed": 3, "scheduled": 1}
    assert ("snooze", 0) in CALLS and ("snooze", 1) in CALLS
    assert ("echo", {"n": "elsewhere"}) not in CALLS
    for job_ in done:
        assert await _state(oban, job_.id) == "completed"
    assert await _state(oban, cancel.id) == "cancelled"
    assert await _state(oban, snooze.id) == "completed"
    assert await _state(oban, elsewhere.id) == "available"
    assert [j.id for j in await all_enqueued()] == [elsewhere.id]

    assert await drain_queue("confb_helpers") == ZERO


async def test_drain_queue_without_scheduled_leaves_future_jobs_alone(oban: Oban) -> None:
    await ConfBEchoWorker.enqueue({"n": "now"})
    future = await ConfBEchoWorker.enqueue({"n": "later"}, scheduled_in=3600)
    snooze = await ConfBSnoozeOnceWorker.enqueue({})

    counts = await drain_queue("confb_helpers", with_scheduled=False)

    assert counts == {**ZERO, "completed": 1, "scheduled": 1}
    assert CALLS == [("echo", {"n": "now"}), ("snooze", 0)]
    assert await _state(oban, future.id) == "scheduled"
    assert await _state(oban, snooze.id) == "scheduled"

    counts = await drain_queue("confb_helpers")

    assert counts == {**ZERO, "completed": 2}
    assert await _state(oban, future.id) == "completed"
    assert await _state(oban, snooze.id) == "completed"


async def test_drain_queue_with_recursion_runs_jobs_enqueued_by_drained_jobs(oban: Oban) -> None:
    await ConfBRecursiveWorker.enqueue({"depth": 0})

    counts = await drain_queue("confb_helpers", with_recursion=True)

    assert counts == {**ZERO, "completed": 3}
    assert CALLS == [("recursive", 0), ("recursive", 1), ("recursive", 2)]
    assert await all_enqueued() == []


async def test_drain_queue_without_recursion_leaves_new_jobs_enqueued(oban: Oban) -> None:
    await ConfBRecursiveWorker.enqueue({"depth": 0})

    counts = await drain_queue("confb_helpers", with_recursion=False)

    assert counts == {**ZERO, "completed": 1}
    assert CALLS == [("recursive", 0)]
    child = await assert_enqueued(worker=ConfBRecursiveWorker)
    assert child.args == {"depth": 1}


async def test_drain_queue_without_safety_reraises_worker_errors(oban: Oban) -> None:
    await ConfBRaiseWorker.enqueue({"tag": "unsafe"})

    with pytest.raises(ConfBBoom, match="confb-boom-unsafe"):
        await drain_queue("confb_helpers", with_safety=False)


async def test_drain_queue_with_safety_records_errors_retries_and_discards(oban: Oban) -> None:
    failing = await ConfBRaiseWorker.enqueue({"tag": "safe"}, max_attempts=2)

    counts = await drain_queue("confb_helpers", with_safety=True)

    assert counts == {**ZERO, "discarded": 1, "retryable": 1}
    assert CALLS == [("raise", 1), ("raise", 2)]
    stored = await oban.get_job(failing)
    assert stored is not None
    assert stored.state == "discarded"
    assert stored.attempt == 2
    assert stored.discarded_at is not None
    assert [e["attempt"] for e in stored.errors] == [1, 2]
    assert "confb-boom-safe" in str(stored.errors[-1])


async def test_drain_queue_uses_the_given_instance(make_oban: Callable[..., Oban]) -> None:
    other = make_oban(name="ConfBDrainOther")
    inserted = await other.enqueue(ConfBEchoWorker.new({"n": 1}))

    counts = await drain_queue("confb_helpers", oban="ConfBDrainOther")

    assert counts == {**ZERO, "completed": 1}
    assert await _state(other, inserted.id) == "completed"


# ---------------------------------------------------------------------------------------------
# reset_oban
# ---------------------------------------------------------------------------------------------


async def test_reset_oban_empties_the_tables_and_restarts_ids(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    client = make_oban()
    for n in range(3):
        await ConfBEchoWorker.enqueue({"n": n})
    await sql(
        client,
        "INSERT INTO oban_producers (uuid, name, node, queue, meta, started_at, updated_at) "
        "VALUES (%s, 'Oban', 'n', 'q', '{}', %s, %s)",
        (
            "00000000-0000-0000-0000-000000000001",
            "2030-01-01 00:00:00.000",
            "2030-01-01 00:00:00.000",
        ),
    )
    await sql(
        client,
        "INSERT INTO oban_leaders (name, node, elected_at, expires_at) VALUES (%s, %s, %s, %s)",
        ("Oban", "n", "2030-01-01 00:00:00.000", "2030-01-01 00:00:00.000"),
    )
    assert await _count(client, sql) == 3

    await reset_oban()

    assert await _count(client, sql) == 0
    assert await _count(client, sql, "oban_producers") == 0
    assert await _count(client, sql, "oban_leaders") == 0
    assert await all_enqueued() == []
    fresh = await ConfBEchoWorker.enqueue({"n": "fresh"})
    assert fresh.id == 1


async def test_reset_oban_accepts_an_instance(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    other = make_oban(name="ConfBResetOther")
    await other.enqueue(ConfBEchoWorker.new({"n": 1}))

    await reset_oban(other)

    assert await _count(other, sql) == 0


# ---------------------------------------------------------------------------------------------
# pytest plugin
# ---------------------------------------------------------------------------------------------

PLUGIN_TESTS = """
import asyncio

from psycopg_pool import AsyncConnectionPool

from oban import Oban, job

ENGINE = {engine!r}
DSN = {dsn!r}
PREFIX = {prefix!r}
CALLS = []


@job(queue="plugin")
def plugin_record(value):
    CALLS.append(value)


async def _enqueue(value):
    if ENGINE == "postgres":
        pool = AsyncConnectionPool(DSN, open=False, min_size=1, max_size=2)
        await pool.open(wait=True, timeout=10)
        try:
            Oban(pool=pool, prefix=PREFIX)
            return await plugin_record.enqueue(value)
        finally:
            await pool.close()
    instance = Oban(dsn=DSN)
    try:
        return await plugin_record.enqueue(value)
    finally:
        await instance._close_engine()


def test_inline_fixture_runs_jobs_at_once(oban_inline):
    asyncio.run(_enqueue("inline"))
    assert CALLS == ["inline"]


def test_default_mode_after_the_inline_fixture_inserts():
    inserted = asyncio.run(_enqueue("default"))
    assert inserted.id is not None
    assert CALLS == ["inline"]


def test_manual_fixture_inserts(oban_manual):
    inserted = asyncio.run(_enqueue("manual"))
    assert inserted.id is not None
    assert inserted.state == "available"
    assert CALLS == ["inline"]
"""


async def test_pytest_plugin_fixtures_switch_the_mode(
    pytester: pytest.Pytester, oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    if engine == "postgres":
        assert oban.pool is not None
        dsn = oban.pool.conninfo
    else:
        dsn = f"sqlite:///{oban.sqlite_path}"
    await _count(oban, sql)  # the database exists before the other process uses it
    pytester.makepyfile(
        test_plugin_modes=PLUGIN_TESTS.format(engine=engine, dsn=dsn, prefix=oban.prefix)
    )

    result = await asyncio.to_thread(
        pytester.runpytest_subprocess, "-p", "oban.pytest_plugin", "-p", "no:cacheprovider"
    )

    result.assert_outcomes(passed=3)
    rows = await sql(oban, "SELECT args FROM oban_jobs ORDER BY id")
    assert [json.loads(a)["value"] if isinstance(a, str) else a["value"] for (a,) in rows] == [
        "default",
        "manual",
    ]
