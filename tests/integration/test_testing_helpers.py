"""The testing helpers (oban.testing) and the pytest plugin, against a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

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

# ---------------------------------------------------------------------------------------------
# Shared state the workers write to. Every test starts from empty state.
# ---------------------------------------------------------------------------------------------

CALLS: list[Any] = []
SEEN: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    CALLS.clear()
    SEEN.clear()


class HelpersBoom(Exception):
    """Raised by the failing workers of this module."""


@worker(queue="helpers")
class HelpersEchoWorker:
    async def process(self, job: Job) -> Any:
        CALLS.append(("echo", job.args))
        return {"echoed": job.args}


@worker(queue="helpers")
class HelpersSyncWorker:
    def process(self, job: Job) -> Any:
        SEEN["sync_current"] = current_job()
        CALLS.append(("sync", job.args))
        return job.args.get("n", 0) * 2


@worker(queue="helpers")
class HelpersInspectWorker:
    async def process(self, job: Job) -> Any:
        SEEN["job"] = job
        SEEN["current"] = current_job()
        SEEN["args"] = job.args
        SEEN["meta"] = job.meta
        return "inspected"


@worker(queue="helpers")
class HelpersRaiseWorker:
    async def process(self, job: Job) -> Any:
        CALLS.append(("raise", job.attempt))
        raise HelpersBoom(f"helpers-boom-{job.args.get('tag', '')}")


@worker(queue="helpers")
class HelpersCancelWorker:
    async def process(self, job: Job) -> Any:
        CALLS.append(("cancel", job.args))
        return Cancel("helpers-not-wanted")


@worker(queue="helpers")
class HelpersSnoozeOnceWorker:
    async def process(self, job: Job) -> Any:
        CALLS.append(("snooze", job.meta.get("snoozed", 0)))
        if not job.meta.get("snoozed"):
            return Snooze(3600)
        return None


@worker(queue="helpers")
class HelpersRecursiveWorker:
    async def process(self, job: Job) -> Any:
        depth = job.args["depth"]
        CALLS.append(("recursive", depth))
        if depth < 2:
            await HelpersRecursiveWorker.enqueue({"depth": depth + 1})  # type: ignore[attr-defined]


@job(queue="helpers")
def helpers_pair(a: int, b: int = 2) -> int:
    CALLS.append(("pair", a, b))
    return a + b


ECHO = f"{__name__}.HelpersEchoWorker"
PAIR = f"{__name__}.helpers_pair"


async def _count(sql: Callable[..., Any]) -> int:
    rows = await sql("SELECT count(*) FROM oban_jobs")
    return int(rows[0][0])


async def _state(oban: Oban, job_id: int | None) -> str:
    assert job_id is not None
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing"
    return str(found.state)


# ---------------------------------------------------------------------------------------------
# mode
# ---------------------------------------------------------------------------------------------


async def test_inline_mode_runs_the_job_at_once_without_inserting(oban: Oban, sql: Any) -> None:
    with mode("inline"):
        returned = await HelpersEchoWorker.enqueue({"who": "ada"})  # type: ignore[attr-defined]

    assert CALLS == [("echo", {"who": "ada"})]
    assert returned.args == {"who": "ada"}
    assert await _count(sql) == 0


async def test_inline_mode_runs_each_job_of_enqueue_many(oban: Oban, sql: Any) -> None:
    with mode("inline"):
        await oban.enqueue_many(
            HelpersEchoWorker.new({"n": 1}),  # type: ignore[attr-defined]
            HelpersSyncWorker.new({"n": 2}),  # type: ignore[attr-defined]
        )

    assert CALLS == [("echo", {"n": 1}), ("sync", {"n": 2})]
    assert await _count(sql) == 0


async def test_inline_mode_propagates_worker_exceptions(oban: Oban, sql: Any) -> None:
    with mode("inline"), pytest.raises(HelpersBoom, match="helpers-boom-inline"):
        await HelpersRaiseWorker.enqueue({"tag": "inline"})  # type: ignore[attr-defined]

    assert await _count(sql) == 0


async def test_inline_mode_calls_job_functions_with_their_arguments(oban: Oban, sql: Any) -> None:
    with mode("inline"):
        await helpers_pair.enqueue(3, b=4)  # type: ignore[attr-defined]
        await helpers_pair.enqueue(5)  # type: ignore[attr-defined]

    assert CALLS == [("pair", 3, 4), ("pair", 5, 2)]
    assert await _count(sql) == 0


async def test_manual_mode_inserts_without_running(oban: Oban, sql: Any) -> None:
    with mode("manual"):
        inserted = await HelpersEchoWorker.enqueue({"who": "manual"})  # type: ignore[attr-defined]

    assert CALLS == []
    assert inserted.id is not None
    assert await _count(sql) == 1
    assert await _state(oban, inserted.id) == "available"


async def test_nested_modes_restore_the_outer_mode(oban: Oban, sql: Any) -> None:
    with mode("inline"):
        with mode("manual"):
            await HelpersEchoWorker.enqueue({"step": "inner-manual"})  # type: ignore[attr-defined]
        assert await _count(sql) == 1
        await HelpersEchoWorker.enqueue({"step": "outer-inline"})  # type: ignore[attr-defined]
        assert await _count(sql) == 1
    await HelpersEchoWorker.enqueue({"step": "default"})  # type: ignore[attr-defined]

    assert CALLS == [("echo", {"step": "outer-inline"})]
    assert await _count(sql) == 2


async def test_mode_is_restored_when_the_block_raises(oban: Oban, sql: Any) -> None:
    with pytest.raises(HelpersBoom), mode("inline"):
        raise HelpersBoom("leaving the block")

    await HelpersEchoWorker.enqueue({"after": "raise"})  # type: ignore[attr-defined]

    assert CALLS == []
    assert await _count(sql) == 1


def test_invalid_mode_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="eager"), mode("eager"):  # type: ignore[arg-type]
        pass


# ---------------------------------------------------------------------------------------------
# process_job inside a running loop
# ---------------------------------------------------------------------------------------------


async def test_process_job_in_a_loop_returns_an_awaitable_of_the_result() -> None:
    pending = process_job(HelpersEchoWorker.new({"x": 1}))  # type: ignore[attr-defined]
    assert inspect.isawaitable(pending)
    assert await pending == {"echoed": {"x": 1}}

    pending_sync = process_job(HelpersSyncWorker.new({"n": 21}))  # type: ignore[attr-defined]
    assert inspect.isawaitable(pending_sync)
    assert await pending_sync == 42

    assert await process_job(helpers_pair.new(1, b=10)) == 11  # type: ignore[attr-defined]


async def test_process_job_round_trips_args_and_meta_through_json() -> None:
    built = HelpersInspectWorker.new(  # type: ignore[attr-defined]
        {"pair": (1, 2), "nested": {"t": ("a",)}}, meta={"m": (3,)}
    )

    await process_job(built)

    assert SEEN["args"] == {"pair": [1, 2], "nested": {"t": ["a"]}}
    assert SEEN["meta"] == {"m": [3]}


async def test_process_job_fills_id_attempt_and_attempted_at() -> None:
    built = HelpersInspectWorker.new({})  # type: ignore[attr-defined]

    assert await process_job(built) == "inspected"

    seen: Job = SEEN["job"]
    assert seen.id is not None
    assert seen.attempt == 1
    assert seen.attempted_at is not None
    assert abs(seen.attempted_at - datetime.now(UTC)) < timedelta(seconds=5)


async def test_process_job_exposes_current_job_inside_the_worker() -> None:
    built = HelpersInspectWorker.new({"c": 1})  # type: ignore[attr-defined]
    await process_job(built)
    assert SEEN["current"] is SEEN["job"]
    assert current_job() is None

    await process_job(HelpersSyncWorker.new({"n": 1}))  # type: ignore[attr-defined]
    assert SEEN["sync_current"] is not None
    assert SEEN["sync_current"].args == {"n": 1}


async def test_process_job_propagates_exceptions_and_returns_special_results_raw() -> None:
    with pytest.raises(HelpersBoom, match="helpers-boom-direct"):
        await process_job(HelpersRaiseWorker.new({"tag": "direct"}))  # type: ignore[attr-defined]

    result = await process_job(HelpersCancelWorker.new({}))  # type: ignore[attr-defined]
    assert result == Cancel("helpers-not-wanted")


# ---------------------------------------------------------------------------------------------
# all_enqueued / assert_enqueued / refute_enqueued
# ---------------------------------------------------------------------------------------------


async def test_all_enqueued_filters_by_worker_class_function_or_name(oban: Oban) -> None:
    echo = await HelpersEchoWorker.enqueue({"n": 1})  # type: ignore[attr-defined]
    pair = await helpers_pair.enqueue(1, 2)  # type: ignore[attr-defined]

    assert [j.id for j in await all_enqueued(worker=HelpersEchoWorker)] == [echo.id]
    assert [j.id for j in await all_enqueued(worker=helpers_pair)] == [pair.id]
    assert [j.id for j in await all_enqueued(worker=ECHO)] == [echo.id]
    assert [j.id for j in await all_enqueued(worker=PAIR)] == [pair.id]
    assert await all_enqueued(worker=HelpersSyncWorker) == []


async def test_all_enqueued_matches_args_and_meta_as_subsets(oban: Oban) -> None:
    await HelpersEchoWorker.enqueue(  # type: ignore[attr-defined]
        {"a": 1, "b": {"c": 2}}, meta={"trace": "t1", "other": True}
    )

    assert len(await all_enqueued(args={"a": 1})) == 1
    assert len(await all_enqueued(args={"a": 1, "b": {"c": 2}})) == 1
    assert await all_enqueued(args={"a": 2}) == []
    assert await all_enqueued(args={"a": 1, "missing": None}) == []
    assert len(await all_enqueued(meta={"trace": "t1"})) == 1
    assert await all_enqueued(meta={"trace": "t2"}) == []


async def test_all_enqueued_filters_by_queue_priority_and_tags(oban: Oban) -> None:
    first = await HelpersEchoWorker.enqueue(  # type: ignore[attr-defined]
        {"n": 1}, queue="alpha", priority=1, tags=["red", "blue"]
    )
    second = await HelpersEchoWorker.enqueue(  # type: ignore[attr-defined]
        {"n": 2}, queue="beta", priority=2, tags=["green"]
    )

    assert [j.id for j in await all_enqueued(queue="alpha")] == [first.id]
    assert [j.id for j in await all_enqueued(priority=2)] == [second.id]
    assert [j.id for j in await all_enqueued(tags=["blue", "red"])] == [first.id]
    assert [j.id for j in await all_enqueued(tags=["green"])] == [second.id]
    assert await all_enqueued(queue="alpha", priority=2) == []


async def test_all_enqueued_matches_scheduled_in_within_a_second(oban: Oban) -> None:
    later = await HelpersEchoWorker.enqueue({"n": 1}, scheduled_in=60)  # type: ignore[attr-defined]
    await HelpersEchoWorker.enqueue({"n": 2})  # type: ignore[attr-defined]

    assert [j.id for j in await all_enqueued(scheduled_in=60)] == [later.id]
    assert [j.id for j in await all_enqueued(scheduled_in=timedelta(seconds=60))] == [later.id]
    assert await all_enqueued(scheduled_in=120) == []
    assert await all_enqueued(scheduled_in=58) == []
    await assert_enqueued(worker=HelpersEchoWorker, scheduled_in=60)


async def test_all_enqueued_lists_newest_first(oban: Oban) -> None:
    ids = [(await HelpersEchoWorker.enqueue({"n": n})).id for n in range(3)]  # type: ignore[attr-defined]

    assert [j.id for j in await all_enqueued(worker=HelpersEchoWorker)] == ids[::-1]


async def test_all_enqueued_lists_only_waiting_jobs(oban: Oban, sql: Any) -> None:
    jobs = {}
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
        jobs[state] = await HelpersEchoWorker.enqueue({"state": state})  # type: ignore[attr-defined]
        await sql(
            "UPDATE oban_jobs SET state = %s, attempt = 1 WHERE id = %s", (state, jobs[state].id)
        )

    listed = {j.args["state"] for j in await all_enqueued()}

    assert listed == {"available", "scheduled", "suspended"}
    await refute_enqueued(args={"state": "completed"})


async def test_all_enqueued_uses_the_given_instance(make_oban: Callable[..., Oban]) -> None:
    other = make_oban(name="HelpersOther")
    await other.enqueue(HelpersEchoWorker.new({"n": 1}))  # type: ignore[attr-defined]

    assert len(await all_enqueued(oban=other)) == 1
    assert len(await all_enqueued(oban="HelpersOther")) == 1


async def test_assert_enqueued_returns_the_matching_job(oban: Oban) -> None:
    await HelpersEchoWorker.enqueue({"who": "older"})  # type: ignore[attr-defined]
    newest = await HelpersEchoWorker.enqueue({"who": "newer"})  # type: ignore[attr-defined]

    found = await assert_enqueued(worker=HelpersEchoWorker)

    assert found.id == newest.id
    assert found.args == {"who": "newer"}


async def test_assert_enqueued_failure_lists_the_jobs_that_were_there(oban: Oban) -> None:
    await HelpersEchoWorker.enqueue({"who": "ada-lovelace"})  # type: ignore[attr-defined]

    with pytest.raises(AssertionError) as failure:
        await assert_enqueued(worker=helpers_pair)

    message = str(failure.value)
    assert ECHO in message
    assert "ada-lovelace" in message


async def test_assert_enqueued_waits_up_to_the_timeout(oban: Oban) -> None:
    async def enqueue_later() -> None:
        await asyncio.sleep(0.2)
        await HelpersEchoWorker.enqueue({"who": "late"})  # type: ignore[attr-defined]

    await refute_enqueued(worker=HelpersEchoWorker)
    task = asyncio.create_task(enqueue_later())
    try:
        found = await assert_enqueued(worker=HelpersEchoWorker, timeout=1)
    finally:
        await task

    assert found.args == {"who": "late"}


async def test_assert_enqueued_with_a_timeout_fails_when_nothing_comes(oban: Oban) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(AssertionError):
        await assert_enqueued(worker=HelpersEchoWorker, timeout=0.2)
    assert asyncio.get_running_loop().time() - started >= 0.2


async def test_refute_enqueued_raises_listing_the_match(oban: Oban) -> None:
    await HelpersEchoWorker.enqueue({"who": "grace-hopper"})  # type: ignore[attr-defined]

    await refute_enqueued(worker=helpers_pair)
    await refute_enqueued(args={"who": "someone-else"})
    with pytest.raises(AssertionError) as failure:
        await refute_enqueued(worker=HelpersEchoWorker)

    assert "grace-hopper" in str(failure.value)
    assert ECHO in str(failure.value)


async def test_unknown_filters_are_rejected(oban: Oban) -> None:
    with pytest.raises(ValueError, match="colour"):
        await all_enqueued(colour="red")
    with pytest.raises(ValueError, match="colour"):
        await assert_enqueued(colour="red")
    with pytest.raises(ValueError, match="colour"):
        await refute_enqueued(colour="red")


# ---------------------------------------------------------------------------------------------
# drain_queue
# ---------------------------------------------------------------------------------------------


async def test_drain_queue_runs_every_job_and_counts_outcomes(oban: Oban) -> None:
    done = [await HelpersEchoWorker.enqueue({"n": n}) for n in range(2)]  # type: ignore[attr-defined]
    cancel = await HelpersCancelWorker.enqueue({})  # type: ignore[attr-defined]
    snooze = await HelpersSnoozeOnceWorker.enqueue({})  # type: ignore[attr-defined]

    counts = await drain_queue("helpers")

    assert counts == {
        "cancelled": 1,
        "completed": 3,
        "discarded": 0,
        "retryable": 0,
        "scheduled": 1,
    }
    assert ("snooze", 0) in CALLS and ("snooze", 1) in CALLS
    for job_ in done:
        assert await _state(oban, job_.id) == "completed"
    assert await _state(oban, cancel.id) == "cancelled"
    assert await _state(oban, snooze.id) == "completed"
    assert await all_enqueued() == []


async def test_drain_queue_of_an_empty_queue_counts_nothing(oban: Oban) -> None:
    counts = await drain_queue("helpers")
    assert counts == {
        "cancelled": 0,
        "completed": 0,
        "discarded": 0,
        "retryable": 0,
        "scheduled": 0,
    }


async def test_drain_queue_only_runs_the_given_queue(oban: Oban) -> None:
    elsewhere = await HelpersEchoWorker.enqueue({"n": 1}, queue="elsewhere")  # type: ignore[attr-defined]
    await HelpersEchoWorker.enqueue({"n": 2})  # type: ignore[attr-defined]

    counts = await drain_queue("helpers")

    assert counts["completed"] == 1
    assert CALLS == [("echo", {"n": 2})]
    assert await _state(oban, elsewhere.id) == "available"


async def test_drain_queue_without_scheduled_leaves_future_jobs_alone(oban: Oban) -> None:
    await HelpersEchoWorker.enqueue({"n": "now"})  # type: ignore[attr-defined]
    future = await HelpersEchoWorker.enqueue({"n": "later"}, scheduled_in=3600)  # type: ignore[attr-defined]

    counts = await drain_queue("helpers", with_scheduled=False)

    assert counts["completed"] == 1
    assert CALLS == [("echo", {"n": "now"})]
    assert await _state(oban, future.id) == "scheduled"

    counts = await drain_queue("helpers")

    assert counts["completed"] == 1
    assert CALLS[-1] == ("echo", {"n": "later"})
    assert await _state(oban, future.id) == "completed"


async def test_drain_queue_without_scheduled_leaves_a_snoozed_job_scheduled(oban: Oban) -> None:
    snooze = await HelpersSnoozeOnceWorker.enqueue({})  # type: ignore[attr-defined]

    counts = await drain_queue("helpers", with_scheduled=False)

    assert counts["scheduled"] == 1
    assert counts["completed"] == 0
    assert await _state(oban, snooze.id) == "scheduled"


async def test_drain_queue_with_recursion_runs_jobs_enqueued_by_drained_jobs(oban: Oban) -> None:
    await HelpersRecursiveWorker.enqueue({"depth": 0})  # type: ignore[attr-defined]

    counts = await drain_queue("helpers", with_recursion=True)

    assert counts["completed"] == 3
    assert CALLS == [("recursive", 0), ("recursive", 1), ("recursive", 2)]
    assert await all_enqueued() == []


async def test_drain_queue_without_recursion_leaves_new_jobs_enqueued(oban: Oban) -> None:
    await HelpersRecursiveWorker.enqueue({"depth": 0})  # type: ignore[attr-defined]

    counts = await drain_queue("helpers", with_recursion=False)

    assert counts["completed"] == 1
    assert CALLS == [("recursive", 0)]
    child = await assert_enqueued(worker=HelpersRecursiveWorker)
    assert child.args == {"depth": 1}


async def test_drain_queue_without_safety_reraises_worker_errors(oban: Oban) -> None:
    await HelpersRaiseWorker.enqueue({"tag": "unsafe"})  # type: ignore[attr-defined]

    with pytest.raises(HelpersBoom, match="helpers-boom-unsafe"):
        await drain_queue("helpers", with_safety=False)


async def test_drain_queue_with_safety_records_errors_and_retries(oban: Oban) -> None:
    failing = await HelpersRaiseWorker.enqueue({"tag": "safe"}, max_attempts=2)  # type: ignore[attr-defined]

    counts = await drain_queue("helpers", with_safety=True)

    assert counts == {
        "cancelled": 0,
        "completed": 0,
        "discarded": 1,
        "retryable": 1,
        "scheduled": 0,
    }
    assert CALLS == [("raise", 1), ("raise", 2)]
    stored = await oban.get_job(failing)
    assert stored is not None
    assert stored.state == "discarded"
    assert len(stored.errors) == 2
    assert "helpers-boom-safe" in str(stored.errors[-1])


async def test_drain_queue_uses_the_given_instance(make_oban: Callable[..., Oban]) -> None:
    other = make_oban(name="HelpersDrainOther")
    inserted = await other.enqueue(HelpersEchoWorker.new({"n": 1}))  # type: ignore[attr-defined]

    counts = await drain_queue("helpers", oban="HelpersDrainOther")

    assert counts["completed"] == 1
    assert await _state(other, inserted.id) == "completed"


# ---------------------------------------------------------------------------------------------
# reset_oban
# ---------------------------------------------------------------------------------------------


async def test_reset_oban_empties_the_tables(oban: Oban, sql: Any) -> None:
    for n in range(3):
        await HelpersEchoWorker.enqueue({"n": n})  # type: ignore[attr-defined]
    await sql(
        "INSERT INTO oban_producers (uuid, node, queue) "
        "VALUES ('00000000-0000-0000-0000-000000000001', 'n', 'q')"
    )
    await sql(
        "INSERT INTO oban_leaders (node, elected_at, expires_at) "
        "VALUES ('n', timezone('UTC', now()), timezone('UTC', now()))"
    )

    await reset_oban()

    assert await _count(sql) == 0
    assert (await sql("SELECT count(*) FROM oban_producers"))[0][0] == 0
    assert (await sql("SELECT count(*) FROM oban_leaders"))[0][0] == 0
    assert await all_enqueued() == []
    fresh = await HelpersEchoWorker.enqueue({"n": "fresh"})  # type: ignore[attr-defined]
    assert fresh.id == 1


async def test_reset_oban_accepts_an_instance(make_oban: Callable[..., Oban], sql: Any) -> None:
    other = make_oban(name="HelpersResetOther")
    await other.enqueue(HelpersEchoWorker.new({"n": 1}))  # type: ignore[attr-defined]

    await reset_oban(other)

    assert await _count(sql) == 0


# ---------------------------------------------------------------------------------------------
# pytest plugin
# ---------------------------------------------------------------------------------------------

PLUGIN_TESTS = """
import asyncio

from psycopg_pool import AsyncConnectionPool

from oban import Oban, job

DSN = {dsn!r}
PREFIX = {prefix!r}
CALLS = []


@job(queue="plugin")
def plugin_record(value):
    CALLS.append(value)


async def _enqueue(value):
    pool = AsyncConnectionPool(DSN, open=False, min_size=1, max_size=2)
    await pool.open(wait=True, timeout=10)
    try:
        Oban(pool=pool, prefix=PREFIX)
        return await plugin_record.enqueue(value)
    finally:
        await pool.close()


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
    pytester: pytest.Pytester, dsn: str, prefix: str, sql: Any
) -> None:
    pytester.makepyfile(test_plugin_modes=PLUGIN_TESTS.format(dsn=dsn, prefix=prefix))

    result = await asyncio.to_thread(
        pytester.runpytest_subprocess, "-p", "oban.pytest_plugin", "-p", "no:cacheprovider"
    )

    result.assert_outcomes(passed=3)
    rows = await sql("SELECT args->>'value' FROM oban_jobs ORDER BY id")
    assert [row[0] for row in rows] == ["default", "manual"]
