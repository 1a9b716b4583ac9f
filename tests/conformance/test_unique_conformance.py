"""Unique jobs on both engines: a duplicate insert answers with the existing job instead of
adding a row, by the fields, keys, period and states (group) the ``unique=`` option names;
``replace=`` updates the existing job; ``retry_job`` releases a job's key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiosqlite
import pytest

from oban import Job, Oban, job, worker
from oban.testing import drain_queue, mode
from tests.conformance.test_unique_maintenance import without_retryable
from tests.helpers import eventually

QUEUE = "confu"
KEY_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
STATES = (
    "scheduled",
    "available",
    "executing",
    "retryable",
    "completed",
    "cancelled",
    "discarded",
    "suspended",
)
INCOMPLETE = ("available", "executing", "retryable", "scheduled", "suspended")
GROUP_STATES: dict[str, tuple[str, ...]] = {
    "all": STATES,
    "incomplete": INCOMPLETE,
    "scheduled": ("scheduled",),
    "successful": (*INCOMPLETE, "completed"),
}
GROUP_BITMAPS: dict[str, list[int]] = {
    "all": [0, 1, 2, 3, 4, 5, 6, 7],
    "incomplete": [0, 1, 2, 3, 7],
    "scheduled": [0],
    "successful": [0, 1, 2, 3, 4, 7],
}

CALLS: list[Any] = []


@pytest.fixture(autouse=True)
def _clean_calls() -> None:
    CALLS.clear()


@worker(queue=QUEUE)
class ConfUniqPlain:
    async def process(self, job: Job) -> None:
        CALLS.append(("plain", job.args))


@worker(queue=QUEUE)
class ConfUniqOther:
    async def process(self, job: Job) -> None:
        CALLS.append(("other", job.args))


@worker(queue=QUEUE, unique=True)
class ConfUniqDeclared:
    async def process(self, job: Job) -> None:
        CALLS.append(("declared", job.args))


# Declared like this before unique jobs existed, when it raised "not implemented".
@worker(queue=QUEUE, unique={"period": 60})
class ConfUniqLegacy:
    async def process(self, job: Job) -> None:
        CALLS.append(("legacy", job.args))


@job(queue=QUEUE, unique=True)
def confu_add(a: int, b: int = 0) -> int:
    CALLS.append(("add", a, b))
    return a + b


def future_day_at(hour: int, minute: int, second: int) -> datetime:
    """A UTC time on a day in the future: jobs scheduled then are ``scheduled``."""
    day = (datetime.now(UTC) + timedelta(days=3)).date()
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def id_of(job: Job) -> int:
    assert job.id is not None, "the job was never inserted"
    return job.id


async def stored(oban: Oban, job_id: int | None) -> Job:
    assert job_id is not None, "the job was never inserted"
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is not in the database"
    return found


async def count_jobs(sql: Callable[..., Any], oban: Oban) -> int:
    rows = await sql(oban, "SELECT count(*) FROM oban_jobs")
    return int(rows[0][0])


async def set_state(sql: Callable[..., Any], oban: Oban, job_id: int, state: str) -> None:
    attempt = 0 if state in ("available", "scheduled") else 1
    await sql(
        oban,
        "UPDATE oban_jobs SET state = %s, attempt = %s WHERE id = %s",
        (state, attempt, job_id),
    )


def assert_fresh(inserted: Job) -> None:
    assert inserted.conflict is False
    assert isinstance(inserted.id, int)


def assert_duplicate_of(inserted: Job, existing: Job) -> None:
    assert inserted.conflict is True
    assert inserted.id == existing.id


# ---------------------------------------------------------------------------------------------
# What a unique job carries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", sorted(GROUP_BITMAPS))
async def test_a_unique_job_carries_its_key_and_bitmap_in_meta(oban: Oban, group: str) -> None:
    unique: Any = {"group": group}
    inserted = await ConfUniqPlain.enqueue({"n": 1}, meta={"trace": "t"}, unique=unique)

    found = await stored(oban, inserted.id)
    assert found.meta["trace"] == "t"
    assert found.meta["uniq"] is True
    assert isinstance(found.meta["uniq_key"], str)
    assert KEY_SHAPE.fullmatch(found.meta["uniq_key"])
    assert found.meta["uniq_bmp"] == GROUP_BITMAPS[group]
    assert set(found.meta) == {"trace", "uniq", "uniq_key", "uniq_bmp"}


async def test_a_job_that_is_not_unique_carries_no_key(oban: Oban) -> None:
    inserted = await ConfUniqPlain.enqueue({"n": 1}, meta={"trace": "t"})

    assert inserted.conflict is False
    assert (await stored(oban, inserted.id)).meta == {"trace": "t"}


async def test_explicit_states_are_stored_as_a_sorted_bitmap(oban: Oban) -> None:
    unique: Any = {"states": ["completed", "executing", "retryable", "scheduled", "available"]}
    inserted = await ConfUniqPlain.enqueue({}, unique=unique)

    assert (await stored(oban, inserted.id)).meta["uniq_bmp"] == [0, 1, 2, 3, 4]


async def test_explicit_states_of_just_the_required_states_hold_the_key_until_it_finishes(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"states": ["available", "scheduled", "executing", "retryable"]}
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    blocked = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    await set_state(sql, oban, id_of(first), "executing")
    while_running = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    await set_state(sql, oban, id_of(first), "completed")
    once_done = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)

    assert (await stored(oban, first.id)).meta["uniq_bmp"] == [0, 1, 2, 3]
    assert_duplicate_of(blocked, first)
    assert_duplicate_of(while_running, first)
    assert_fresh(once_done)
    assert once_done.id != first.id
    assert await count_jobs(sql, oban) == 2


async def test_jobs_with_the_same_fields_get_the_same_key(oban: Oban) -> None:
    # Available jobs of group "scheduled" do not hold their key: both rows exist to compare.
    unique: Any = {"group": "scheduled"}
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    second = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    other = await ConfUniqPlain.enqueue({"n": 2}, unique=unique)

    assert len({first.id, second.id, other.id}) == 3
    key_one = (await stored(oban, first.id)).meta["uniq_key"]
    key_two = (await stored(oban, second.id)).meta["uniq_key"]
    key_other = (await stored(oban, other.id)).meta["uniq_key"]
    assert key_one == key_two
    assert key_one != key_other


async def cancel(oban: Oban, inserted: Job) -> None:
    assert await oban.cancel_job(inserted) == 1
    assert (await stored(oban, inserted.id)).state == "cancelled"


# ---------------------------------------------------------------------------------------------
# A duplicate insert
# ---------------------------------------------------------------------------------------------


async def test_a_duplicate_returns_the_existing_job_marked_as_a_conflict(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await ConfUniqPlain.enqueue({"to": "ada"}, unique=True)
    second = await ConfUniqPlain.enqueue({"to": "ada"}, unique=True)

    assert_fresh(first)
    assert first.state == "available"
    assert_duplicate_of(second, first)
    assert second.state == "available"
    assert second.queue == QUEUE
    assert second.scheduled_at == first.scheduled_at
    assert await count_jobs(sql, oban) == 1
    found = await stored(oban, first.id)
    assert found.args == {"to": "ada"}
    assert found.state == "available"


async def test_a_duplicate_returns_the_callers_job_object(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = ConfUniqPlain.new({"to": "ada"}, unique=True)
    second = ConfUniqPlain.new({"to": "ada"}, unique=True)

    returned_first = await oban.enqueue(first)
    returned_second = await oban.enqueue(second)

    assert returned_first is first
    assert returned_second is second
    assert second.conflict is True
    assert second.id == first.id
    assert await count_jobs(sql, oban) == 1


async def test_a_duplicate_describes_the_existing_state_queue_and_time(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"fields": ["worker", "args"]}
    at = future_day_at(9, 30, 0)
    first = await ConfUniqPlain.enqueue(
        {"n": 1}, queue="confu_first", scheduled_at=at, unique=unique
    )
    await set_state(sql, oban, id_of(first), "completed")

    second = await ConfUniqPlain.enqueue(
        {"n": 1}, queue="confu_second", scheduled_in=30, unique=unique
    )

    assert_duplicate_of(second, first)
    assert second.state == "completed"
    assert second.queue == "confu_first"
    assert second.scheduled_at == at
    assert await count_jobs(sql, oban) == 1
    found = await stored(oban, first.id)
    assert (found.queue, found.state, found.scheduled_at) == ("confu_first", "completed", at)


async def test_many_concurrent_inserts_of_one_unique_job_leave_one_row(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    results = await asyncio.gather(
        *[ConfUniqPlain.enqueue({"race": 1}, unique=True) for _ in range(20)]
    )

    assert len({r.id for r in results}) == 1
    assert sorted(r.conflict for r in results) == [False] + [True] * 19
    assert await count_jobs(sql, oban) == 1


async def test_concurrent_inserts_from_two_instances_leave_one_row(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    one = make_oban()
    two = make_oban(name="ConfUniqSecond")

    results = await asyncio.gather(
        *[
            instance.enqueue(ConfUniqPlain.new({"race": "two"}, unique=True))
            for _ in range(10)
            for instance in (one, two)
        ]
    )

    assert len({r.id for r in results}) == 1
    assert None not in {r.id for r in results}
    assert sorted(r.conflict for r in results) == [False] + [True] * 19
    assert await count_jobs(sql, one) == 1


# Every way of asking for uniqueness


async def _by_worker_decorator(n: int) -> Job:
    return await ConfUniqDeclared.enqueue({"n": n})


async def _by_job_decorator(n: int) -> Job:
    return await confu_add.enqueue(n, b=1)


async def _by_new(n: int) -> Job:
    return await Oban.get_instance().enqueue(ConfUniqPlain.new({"n": n}, unique=True))


async def _by_enqueue(n: int) -> Job:
    return await ConfUniqPlain.enqueue({"n": n}, unique=True)


async def _by_job_constructor(n: int) -> Job:
    built = Job(f"{__name__}.ConfUniqPlain", args={"n": n}, queue=QUEUE, unique=True)
    return await Oban.get_instance().enqueue(built)


WAYS: dict[str, Callable[[int], Any]] = {
    "worker_decorator": _by_worker_decorator,
    "job_decorator": _by_job_decorator,
    "new": _by_new,
    "enqueue": _by_enqueue,
    "job_constructor": _by_job_constructor,
}


@pytest.mark.parametrize("way", sorted(WAYS))
async def test_every_way_to_ask_for_uniqueness_deduplicates(
    oban: Oban, sql: Callable[..., Any], way: str
) -> None:
    first: Job = await WAYS[way](1)
    second: Job = await WAYS[way](1)
    other: Job = await WAYS[way](2)

    assert_fresh(first)
    assert_duplicate_of(second, first)
    assert_fresh(other)
    assert other.id != first.id
    assert await count_jobs(sql, oban) == 2
    assert (await stored(oban, first.id)).meta["uniq"] is True


async def test_a_worker_declared_unique_before_unique_jobs_existed_now_deduplicates(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    at = future_day_at(8, 15, 10)  # both in one 60 s bucket, whenever the test runs
    first = await ConfUniqLegacy.enqueue({"n": 1}, scheduled_at=at)
    second = await ConfUniqLegacy.enqueue({"n": 1}, scheduled_at=at + timedelta(seconds=40))

    assert_fresh(first)
    assert_duplicate_of(second, first)
    assert await count_jobs(sql, oban) == 1


async def test_a_job_that_is_not_unique_is_inserted_every_time(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await ConfUniqPlain.enqueue({"n": 1})
    second = await ConfUniqPlain.enqueue({"n": 1})

    assert_fresh(first)
    assert_fresh(second)
    assert first.id != second.id
    assert await count_jobs(sql, oban) == 2


async def test_a_unique_job_does_not_collide_with_an_equal_job_that_is_not_unique(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    plain = await ConfUniqPlain.enqueue({"n": 1})
    marked = await ConfUniqPlain.enqueue({"n": 1}, unique=True)

    assert_fresh(marked)
    assert marked.id != plain.id
    assert await count_jobs(sql, oban) == 2


# ---------------------------------------------------------------------------------------------
# What makes two jobs duplicates: fields, keys, canonical args
# ---------------------------------------------------------------------------------------------


async def test_by_default_worker_queue_and_args_decide(oban: Oban, sql: Callable[..., Any]) -> None:
    first = await ConfUniqPlain.enqueue({"n": 1}, meta={"trace": "a"}, unique=True)

    other_args = await ConfUniqPlain.enqueue({"n": 2}, unique=True)
    other_queue = await ConfUniqPlain.enqueue({"n": 1}, queue="confu_elsewhere", unique=True)
    other_worker = await ConfUniqOther.enqueue({"n": 1}, unique=True)
    other_meta = await ConfUniqPlain.enqueue({"n": 1}, meta={"trace": "b"}, unique=True)
    other_priority = await ConfUniqPlain.enqueue({"n": 1}, priority=5, tags=["x"], unique=True)

    for fresh in (other_args, other_queue, other_worker):
        assert_fresh(fresh)
    assert_duplicate_of(other_meta, first)
    assert_duplicate_of(other_priority, first)
    assert await count_jobs(sql, oban) == 4
    assert (await stored(oban, first.id)).meta["trace"] == "a"


async def test_fields_worker_only_makes_any_args_a_duplicate(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"fields": ["worker"]}
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    second = await ConfUniqPlain.enqueue({"n": 2}, queue="confu_elsewhere", unique=unique)
    other_worker = await ConfUniqOther.enqueue({"n": 1}, unique=unique)

    assert_duplicate_of(second, first)
    assert_fresh(other_worker)
    assert await count_jobs(sql, oban) == 2
    assert (await stored(oban, first.id)).args == {"n": 1}


async def test_fields_with_meta_make_meta_decide(oban: Oban, sql: Callable[..., Any]) -> None:
    unique: Any = {"fields": ["worker", "meta"]}
    first = await ConfUniqPlain.enqueue({"n": 1}, meta={"tenant": 1}, unique=unique)
    same_meta = await ConfUniqPlain.enqueue({"n": 2}, meta={"tenant": 1}, unique=unique)
    other_meta = await ConfUniqPlain.enqueue({"n": 1}, meta={"tenant": 2}, unique=unique)

    assert_duplicate_of(same_meta, first)
    assert_fresh(other_meta)
    assert await count_jobs(sql, oban) == 2


async def test_keys_restrict_args_to_those_keys(oban: Oban, sql: Callable[..., Any]) -> None:
    unique: Any = {"keys": ["account"]}
    first = await ConfUniqPlain.enqueue({"account": 1, "n": 1}, unique=unique)
    same_account = await ConfUniqPlain.enqueue({"account": 1, "n": 2}, unique=unique)
    other_account = await ConfUniqPlain.enqueue({"account": 2, "n": 1}, unique=unique)

    assert_duplicate_of(same_account, first)
    assert_fresh(other_account)
    assert await count_jobs(sql, oban) == 2


async def test_a_key_missing_from_args_is_simply_absent(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"keys": ["account", "region"]}
    first = await ConfUniqPlain.enqueue({"account": 1, "n": 1}, unique=unique)
    also_without_region = await ConfUniqPlain.enqueue({"account": 1, "n": 2}, unique=unique)
    with_region = await ConfUniqPlain.enqueue({"account": 1, "region": "eu"}, unique=unique)
    neither = await ConfUniqPlain.enqueue({"n": 3}, unique=unique)
    neither_again = await ConfUniqPlain.enqueue({"n": 4}, unique=unique)

    assert_duplicate_of(also_without_region, first)
    assert_fresh(with_region)
    assert_fresh(neither)
    assert_duplicate_of(neither_again, neither)
    assert await count_jobs(sql, oban) == 3


async def test_keys_restrict_meta_to_those_keys(oban: Oban, sql: Callable[..., Any]) -> None:
    unique: Any = {"fields": ["worker", "meta"], "keys": ["tenant"]}
    first = await ConfUniqPlain.enqueue({"n": 1}, meta={"tenant": 1, "trace": "a"}, unique=unique)
    same_tenant = await ConfUniqPlain.enqueue(
        {"n": 2}, meta={"tenant": 1, "trace": "b"}, unique=unique
    )
    other_tenant = await ConfUniqPlain.enqueue({"n": 1}, meta={"tenant": 2}, unique=unique)

    assert_duplicate_of(same_tenant, first)
    assert_fresh(other_tenant)
    assert await count_jobs(sql, oban) == 2


async def test_the_order_of_nested_keys_does_not_matter(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await ConfUniqPlain.enqueue({"a": {"x": 1, "y": 2}, "b": 0}, unique=True)
    reordered = await ConfUniqPlain.enqueue({"b": 0, "a": {"y": 2, "x": 1}}, unique=True)

    assert_duplicate_of(reordered, first)
    assert await count_jobs(sql, oban) == 1


async def test_a_difference_deep_inside_args_is_not_a_duplicate(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await ConfUniqPlain.enqueue({"a": {"b": [1, {"c": 1}]}}, unique=True)
    deep = await ConfUniqPlain.enqueue({"a": {"b": [1, {"c": 2}]}}, unique=True)
    again = await ConfUniqPlain.enqueue({"a": {"b": [1, {"c": 1}]}}, unique=True)

    assert_fresh(deep)
    assert_duplicate_of(again, first)
    assert await count_jobs(sql, oban) == 2


async def test_an_int_and_a_string_are_not_the_same_arg(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    number = await ConfUniqPlain.enqueue({"id": 1}, unique=True)
    text = await ConfUniqPlain.enqueue({"id": "1"}, unique=True)

    assert_fresh(number)
    assert_fresh(text)
    assert await count_jobs(sql, oban) == 2


# ---------------------------------------------------------------------------------------------
# Periods
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("period", [3600, timedelta(hours=1)], ids=["seconds", "timedelta"])
async def test_jobs_collide_only_within_one_period_bucket(
    oban: Oban, sql: Callable[..., Any], period: int | timedelta
) -> None:
    unique: Any = {"period": period}
    at_10_00 = future_day_at(10, 0, 0)
    at_10_59 = future_day_at(10, 59, 59)
    at_11_00 = future_day_at(11, 0, 0)

    first = await ConfUniqPlain.enqueue({"n": 1}, scheduled_at=at_10_00, unique=unique)
    same_bucket = await ConfUniqPlain.enqueue({"n": 1}, scheduled_at=at_10_59, unique=unique)
    next_bucket = await ConfUniqPlain.enqueue({"n": 1}, scheduled_at=at_11_00, unique=unique)

    assert_fresh(first)
    assert first.state == "scheduled"
    assert_duplicate_of(same_bucket, first)
    assert same_bucket.state == "scheduled"
    assert same_bucket.scheduled_at == at_10_00
    assert_fresh(next_bucket)
    assert next_bucket.scheduled_at == at_11_00
    assert await count_jobs(sql, oban) == 2


async def test_a_bucket_boundary_splits_jobs_one_second_apart(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"period": 3600}
    before = await ConfUniqPlain.enqueue(
        {"n": 1}, scheduled_at=future_day_at(10, 59, 59), unique=unique
    )
    after = await ConfUniqPlain.enqueue(
        {"n": 1}, scheduled_at=future_day_at(11, 0, 0), unique=unique
    )

    assert_fresh(before)
    assert_fresh(after)
    assert before.id != after.id
    assert await count_jobs(sql, oban) == 2


async def test_a_period_without_scheduled_at_buckets_the_insert_time(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    # A bucket of about 31 years: both inserts fall in it whenever the test runs.
    unique: Any = {"period": 10**9}
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    second = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)

    assert_fresh(first)
    assert_duplicate_of(second, first)
    assert await count_jobs(sql, oban) == 1


async def test_without_a_period_jobs_collide_whenever_they_are_scheduled(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await ConfUniqPlain.enqueue({"n": 1}, scheduled_at=future_day_at(1, 0, 0), unique=True)
    later = await ConfUniqPlain.enqueue(
        {"n": 1}, scheduled_at=future_day_at(23, 0, 0) + timedelta(days=30), unique=True
    )
    now = await ConfUniqPlain.enqueue({"n": 1}, unique=True)

    assert_duplicate_of(later, first)
    assert_duplicate_of(now, first)
    assert await count_jobs(sql, oban) == 1


# ---------------------------------------------------------------------------------------------
# enqueue_many
# ---------------------------------------------------------------------------------------------


async def test_enqueue_many_keeps_positions_and_answers_duplicates_within_the_batch(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    jobs = [
        ConfUniqPlain.new({"k": 1}, unique=True),
        ConfUniqPlain.new({"k": 2}, unique=True),
        ConfUniqPlain.new({"k": 1}, unique=True),
        ConfUniqPlain.new({"k": 3}, unique=True),
    ]

    inserted = await oban.enqueue_many(jobs)

    assert len(inserted) == 4
    assert all(returned is given for returned, given in zip(inserted, jobs, strict=True))
    assert [j.args["k"] for j in inserted] == [1, 2, 1, 3]
    assert [j.conflict for j in inserted] == [False, False, True, False]
    assert inserted[2].id == inserted[0].id
    assert len({inserted[0].id, inserted[1].id, inserted[3].id}) == 3
    assert await count_jobs(sql, oban) == 3
    for position in (0, 1, 3):
        found = await stored(oban, inserted[position].id)
        assert found.args == {"k": inserted[position].args["k"]}


async def test_enqueue_many_answers_a_duplicate_of_an_existing_row_with_its_id(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    existing = await ConfUniqPlain.enqueue({"k": 0}, unique=True)

    inserted = await oban.enqueue_many(
        ConfUniqPlain.new({"plain": 1}),
        ConfUniqPlain.new({"k": 0}, unique=True),
        ConfUniqPlain.new({"plain": 1}),
        ConfUniqPlain.new({"k": 5}, unique=True),
    )

    assert [j.conflict for j in inserted] == [False, True, False, False]
    assert inserted[1].id == existing.id
    assert inserted[1].state == "available"
    ids = [id_of(j) for j in inserted]
    assert len({ids[0], ids[2], ids[3], id_of(existing)}) == 4
    assert await count_jobs(sql, oban) == 4
    assert (await stored(oban, ids[0])).args == {"plain": 1}
    assert (await stored(oban, ids[2])).args == {"plain": 1}
    assert (await stored(oban, ids[3])).args == {"k": 5}


async def test_enqueue_many_of_a_large_batch_answers_every_duplicate_with_its_first(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    jobs = [ConfUniqPlain.new({"k": n % 100}, unique=True) for n in range(1000)]

    inserted = await oban.enqueue_many(jobs)

    assert len(inserted) == 1000
    first_ids = [id_of(j) for j in inserted[:100]]
    assert len(set(first_ids)) == 100
    assert not any(j.conflict for j in inserted[:100])
    for n, returned in enumerate(inserted[100:], start=100):
        assert returned.conflict is True
        assert returned.id == first_ids[n % 100]
        assert returned.args == {"k": n % 100}
    assert await count_jobs(sql, oban) == 100
    for k in (0, 57, 99):
        assert (await stored(oban, first_ids[k])).args == {"k": k}


async def test_enqueue_many_of_only_duplicates_inserts_nothing(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await ConfUniqPlain.enqueue({"k": 1}, unique=True)
    second = await ConfUniqPlain.enqueue({"k": 2}, unique=True)

    inserted = await oban.enqueue_many(
        ConfUniqPlain.new({"k": 2}, unique=True), ConfUniqPlain.new({"k": 1}, unique=True)
    )

    assert [(j.conflict, j.id) for j in inserted] == [(True, second.id), (True, first.id)]
    assert await count_jobs(sql, oban) == 2


# ---------------------------------------------------------------------------------------------
# States: which existing jobs block an insert
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("existing_state", STATES)
@pytest.mark.parametrize("group", sorted(GROUP_STATES))
async def test_an_existing_job_blocks_an_insert_only_in_a_state_of_its_group(
    oban: Oban, sql: Callable[..., Any], group: str, existing_state: str
) -> None:
    unique: Any = {"group": group}
    # Both scheduled: a scheduled insert holds its key in every group.
    first = await ConfUniqPlain.enqueue({"n": 1}, scheduled_in=3600, unique=unique)
    await set_state(sql, oban, id_of(first), existing_state)

    second = await ConfUniqPlain.enqueue({"n": 1}, scheduled_in=3600, unique=unique)

    if existing_state in GROUP_STATES[group]:
        assert_duplicate_of(second, first)
        assert second.state == existing_state
        assert await count_jobs(sql, oban) == 1
    else:
        assert_fresh(second)
        assert second.id != first.id
        assert second.state == "scheduled"
        assert await count_jobs(sql, oban) == 2
    assert (await stored(oban, first.id)).state == existing_state


@pytest.mark.parametrize(
    ("existing_state", "blocks"),
    [("executing", True), ("retryable", True), ("completed", False), ("discarded", True)],
)
async def test_explicit_states_decide_which_existing_jobs_block(
    oban: Oban, sql: Callable[..., Any], existing_state: str, blocks: bool
) -> None:
    unique: Any = {"states": ["available", "scheduled", "executing", "retryable", "discarded"]}
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    await set_state(sql, oban, id_of(first), existing_state)

    second = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)

    assert second.conflict is blocks
    assert (second.id == first.id) is blocks
    assert await count_jobs(sql, oban) == (1 if blocks else 2)


async def test_incomplete_group_lets_a_job_in_again_once_the_first_has_run(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"group": "incomplete"}
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    blocked = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    assert_duplicate_of(blocked, first)

    counts = await drain_queue(QUEUE)

    assert counts["completed"] == 1
    assert CALLS == [("plain", {"n": 1})]
    assert (await stored(oban, first.id)).state == "completed"
    again = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    assert_fresh(again)
    assert again.id != first.id
    assert again.state == "available"
    assert await count_jobs(sql, oban) == 2


async def test_all_group_keeps_blocking_after_the_first_has_run(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=True)

    await drain_queue(QUEUE)

    assert (await stored(oban, first.id)).state == "completed"
    again = await ConfUniqPlain.enqueue({"n": 1}, unique=True)
    assert_duplicate_of(again, first)
    assert again.state == "completed"
    assert await count_jobs(sql, oban) == 1
    assert CALLS == [("plain", {"n": 1})]


async def test_successful_group_lets_a_job_in_again_after_a_cancel_but_not_after_success(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"group": "successful"}
    cancelled = await ConfUniqPlain.enqueue({"n": "cancel"}, unique=unique)
    await cancel(oban, cancelled)
    completed = await ConfUniqPlain.enqueue({"n": "run"}, unique=unique)
    await drain_queue(QUEUE)
    assert (await stored(oban, completed.id)).state == "completed"

    after_cancel = await ConfUniqPlain.enqueue({"n": "cancel"}, unique=unique)
    after_success = await ConfUniqPlain.enqueue({"n": "run"}, unique=unique)

    assert_fresh(after_cancel)
    assert after_cancel.id != cancelled.id
    assert_duplicate_of(after_success, completed)
    assert await count_jobs(sql, oban) == 3


async def test_scheduled_group_is_blocked_by_a_scheduled_job_not_an_available_one(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"group": "scheduled"}
    available = await ConfUniqPlain.enqueue({"n": "now"}, unique=unique)
    available_again = await ConfUniqPlain.enqueue({"n": "now"}, unique=unique)
    scheduled = await ConfUniqPlain.enqueue({"n": "later"}, scheduled_in=600, unique=unique)
    scheduled_again = await ConfUniqPlain.enqueue({"n": "later"}, scheduled_in=900, unique=unique)

    assert available.state == "available"
    assert_fresh(available_again)
    assert available_again.id != available.id
    assert scheduled.state == "scheduled"
    assert_duplicate_of(scheduled_again, scheduled)
    assert scheduled_again.state == "scheduled"
    assert scheduled_again.scheduled_at == scheduled.scheduled_at
    assert await count_jobs(sql, oban) == 3


async def test_a_unique_job_runs_like_any_other(oban: Oban) -> None:
    inserted = await confu_add.enqueue(2, b=3)

    counts = await drain_queue(QUEUE)

    assert counts["completed"] == 1
    assert CALLS == [("add", 2, 3)]
    found = await stored(oban, inserted.id)
    assert found.state == "completed"
    assert found.args == {"a": 2, "b": 3}


async def test_a_duplicate_inside_the_callers_transaction_is_answered_with_its_job(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    if engine == "postgres":
        assert oban.pool is not None
        async with oban.pool.connection() as conn:
            first = await ConfUniqPlain.enqueue({"tx": 1}, unique=True, conn=conn)
            second = await ConfUniqPlain.enqueue({"tx": 1}, unique=True, conn=conn)
            await conn.commit()
    else:
        assert oban.sqlite_path is not None
        async with aiosqlite.connect(oban.sqlite_path) as conn:
            await conn.execute("BEGIN")
            first = await ConfUniqPlain.enqueue({"tx": 1}, unique=True, conn=conn)
            second = await ConfUniqPlain.enqueue({"tx": 1}, unique=True, conn=conn)
            await conn.commit()

    assert_fresh(first)
    assert_duplicate_of(second, first)
    assert second.state == "available"
    assert await count_jobs(sql, oban) == 1
    after = await ConfUniqPlain.enqueue({"tx": 1}, unique=True)
    assert_duplicate_of(after, first)


async def test_a_unique_job_rolled_back_with_the_callers_transaction_holds_no_key(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    if engine == "postgres":
        assert oban.pool is not None
        async with oban.pool.connection() as conn:
            await ConfUniqPlain.enqueue({"tx": 1}, unique=True, conn=conn)
            await conn.rollback()
    else:
        assert oban.sqlite_path is not None
        async with aiosqlite.connect(oban.sqlite_path) as conn:
            await conn.execute("BEGIN")
            await ConfUniqPlain.enqueue({"tx": 1}, unique=True, conn=conn)
            await conn.rollback()

    assert await count_jobs(sql, oban) == 0
    again = await ConfUniqPlain.enqueue({"tx": 1}, unique=True)
    assert_fresh(again)
    assert await count_jobs(sql, oban) == 1


# Staging: a retryable row another client wrote with a bitmap without retryable (our own lists
# always hold it) may meet a new holder of its key when it becomes available again. Whatever
# happens to it, staging must go on.

WAITING_ONLY: Any = {"fields": ["worker", "args"], "group": "incomplete"}


async def _retryable_job_and_a_new_holder(oban: Oban, sql: Callable[..., Any]) -> tuple[Job, Job]:
    retrying = await ConfUniqPlain.enqueue({"n": 1}, unique=WAITING_ONLY)
    await without_retryable(oban, sql, id_of(retrying))
    await set_state(sql, oban, id_of(retrying), "retryable")  # due: scheduled_at is now
    # The holder waits in a queue nothing runs, so it holds the key throughout.
    holder = await ConfUniqPlain.enqueue({"n": 1}, queue="confu_idle", unique=WAITING_ONLY)
    assert_fresh(holder)
    assert holder.id != retrying.id
    return retrying, holder


async def test_drain_queue_goes_on_when_a_retried_job_meets_a_holder_of_its_key(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    _retrying, holder = await _retryable_job_and_a_new_holder(oban, sql)
    other = await ConfUniqPlain.enqueue({"n": "other"}, scheduled_in=3600)

    await drain_queue(QUEUE)

    assert (await stored(oban, other.id)).state == "completed"
    assert ("plain", {"n": "other"}) in CALLS
    assert (await stored(oban, holder.id)).state == "available"


async def test_the_stager_goes_on_when_a_retried_job_meets_a_holder_of_its_key(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], backdate: Callable[..., Any]
) -> None:
    client = make_oban()
    _retrying, holder = await _retryable_job_and_a_new_holder(client, sql)
    other = await ConfUniqPlain.enqueue({"n": "other"}, scheduled_in=3600)
    await backdate(client, id_of(other), "scheduled_at", 1)
    server = make_oban(name="ConfUniqServer", queues={QUEUE: 2}, stager={"interval": 0.1})

    await server.start()

    async def other_completed() -> bool:
        return (await stored(client, other.id)).state == "completed"

    await eventually(other_completed, timeout=5.0, message="the other due job is staged and run")
    assert (await stored(client, holder.id)).state == "available"


# ---------------------------------------------------------------------------------------------
# retry_job releases the key
# ---------------------------------------------------------------------------------------------


async def test_retry_of_a_completed_unique_job_clears_its_bitmap_and_releases_its_key(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=True)
    await drain_queue(QUEUE)
    assert (await stored(oban, first.id)).state == "completed"

    assert await oban.retry_job(first) == 1

    retried = await stored(oban, first.id)
    assert retried.state == "available"
    assert retried.meta["uniq_bmp"] == []
    assert retried.meta["uniq"] is True
    again = await ConfUniqPlain.enqueue({"n": 1}, unique=True)
    assert_fresh(again)
    assert again.id != first.id
    assert (await stored(oban, first.id)).state == "available"
    # The new job holds the key now.
    third = await ConfUniqPlain.enqueue({"n": 1}, unique=True)
    assert_duplicate_of(third, again)
    assert await count_jobs(sql, oban) == 2


async def test_retry_never_collides_with_a_job_holding_the_key(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"group": "incomplete"}
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    await set_state(sql, oban, id_of(first), "discarded")
    holder = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    assert_fresh(holder)

    assert await oban.retry_job(first) == 1

    retried = await stored(oban, first.id)
    assert retried.state == "available"
    assert retried.meta["uniq_bmp"] == []
    assert (await stored(oban, holder.id)).state == "available"
    again = await ConfUniqPlain.enqueue({"n": 1}, unique=unique)
    assert_duplicate_of(again, holder)
    assert await count_jobs(sql, oban) == 2


async def test_a_retried_unique_job_runs_again(oban: Oban) -> None:
    first = await ConfUniqPlain.enqueue({"n": 1}, unique=True)
    await drain_queue(QUEUE)
    await oban.retry_job(first)

    counts = await drain_queue(QUEUE)

    assert counts["completed"] == 1
    assert CALLS == [("plain", {"n": 1}), ("plain", {"n": 1})]
    assert (await stored(oban, first.id)).state == "completed"


# ---------------------------------------------------------------------------------------------
# replace
# ---------------------------------------------------------------------------------------------


async def test_replace_pushes_a_scheduled_job_forward_debouncing_it(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"fields": ["worker", "queue"]}
    replace = {"scheduled": ["scheduled_at", "args"]}
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    later = soon + timedelta(minutes=10)
    first = await ConfUniqPlain.enqueue({"n": 1}, scheduled_at=soon, unique=unique, replace=replace)

    second = await ConfUniqPlain.enqueue(
        {"n": 2}, scheduled_at=later, unique=unique, replace=replace
    )

    assert_duplicate_of(second, first)
    assert second.state == "scheduled"
    found = await stored(oban, first.id)
    assert found.scheduled_at == later
    assert found.args == {"n": 2}
    assert found.state == "scheduled"
    assert second.scheduled_at == later
    assert await count_jobs(sql, oban) == 1


async def test_replace_leaves_a_job_in_an_unlisted_state_unchanged(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    unique: Any = {"fields": ["worker", "queue"]}
    replace = {"scheduled": ["scheduled_at", "args", "priority"]}
    first = await ConfUniqPlain.enqueue({"n": 1}, priority=1, unique=unique, replace=replace)
    assert first.state == "available"
    before = await stored(oban, first.id)

    second = await ConfUniqPlain.enqueue(
        {"n": 2}, priority=8, scheduled_in=600, unique=unique, replace=replace
    )

    assert_duplicate_of(second, first)
    assert second.state == "available"
    found = await stored(oban, first.id)
    assert found.args == {"n": 1}
    assert found.priority == 1
    assert found.scheduled_at == before.scheduled_at
    assert found.state == "available"
    assert await count_jobs(sql, oban) == 1


async def test_replace_updates_every_listed_field(oban: Oban, sql: Callable[..., Any]) -> None:
    unique: Any = {"fields": ["args"], "keys": ["id"]}
    fields = ["args", "max_attempts", "meta", "priority", "queue", "tags", "worker"]
    replace = {"available": fields}
    first = await ConfUniqPlain.enqueue(
        {"id": 1, "v": "old"},
        queue="confu_old",
        priority=1,
        max_attempts=3,
        tags=["old"],
        meta={"note": "old"},
        unique=unique,
        replace=replace,
    )
    key = (await stored(oban, first.id)).meta["uniq_key"]

    second = await ConfUniqOther.enqueue(
        {"id": 1, "v": "new"},
        queue="confu_new",
        priority=7,
        max_attempts=9,
        tags=["new"],
        meta={"note": "new"},
        unique=unique,
        replace=replace,
    )

    assert_duplicate_of(second, first)
    found = await stored(oban, first.id)
    assert found.args == {"id": 1, "v": "new"}
    assert found.worker == f"{__name__}.ConfUniqOther"
    assert found.queue == "confu_new"
    assert (found.priority, found.max_attempts, found.tags) == (7, 9, ["new"])
    assert found.meta["note"] == "new"
    assert found.meta["uniq_key"] == key
    assert found.state == "available"
    assert await count_jobs(sql, oban) == 1
    # The replaced job still holds its key.
    third = await ConfUniqPlain.enqueue({"id": 1}, unique=unique)
    assert_duplicate_of(third, first)


async def test_replace_changes_only_the_listed_fields(oban: Oban, sql: Callable[..., Any]) -> None:
    unique: Any = {"fields": ["worker"]}
    replace = {"available": ["priority"]}
    first = await ConfUniqPlain.enqueue(
        {"n": 1}, priority=1, tags=["old"], unique=unique, replace=replace
    )

    second = await ConfUniqPlain.enqueue(
        {"n": 2}, priority=6, tags=["new"], unique=unique, replace=replace
    )

    assert_duplicate_of(second, first)
    found = await stored(oban, first.id)
    assert found.priority == 6
    assert found.args == {"n": 1}
    assert found.tags == ["old"]
    assert await count_jobs(sql, oban) == 1


async def test_replace_without_unique_is_a_value_error_and_inserts_nothing(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with pytest.raises(ValueError, match="unique"):
        await ConfUniqPlain.enqueue({}, replace={"scheduled": ["scheduled_at"]})
    assert await count_jobs(sql, oban) == 0


# ---------------------------------------------------------------------------------------------
# Bad options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unique", "named"),
    [
        ({"perod": 60}, "period"),
        ({"fields": ["args", "state"]}, "state"),
        ({"group": "done"}, "done"),
        ({"states": ["available", "scheduled", "finished"]}, "finished"),
        ({"states": ["scheduled", "executing"]}, "available"),
        ({"states": ["available", "completed"]}, "scheduled"),
        ({"group": "all", "states": ["available", "scheduled"]}, "group"),
        ({"fields": ["worker", "queue"], "keys": ["id"]}, "keys"),
        ({"period": 0}, "period"),
        ({"period": 2.5}, "period"),
        ({"period": timedelta(milliseconds=10)}, "period"),
    ],
)
async def test_bad_unique_options_are_value_errors_and_insert_nothing(
    oban: Oban, sql: Callable[..., Any], unique: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        await ConfUniqPlain.enqueue({}, unique=cast(Any, unique))
    with pytest.raises(ValueError, match=named):
        await oban.enqueue(Job(f"{__name__}.ConfUniqPlain", unique=cast(Any, unique)))
    assert await count_jobs(sql, oban) == 0


async def test_a_bad_replace_field_is_a_value_error_and_inserts_nothing(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with pytest.raises(ValueError, match="state"):
        await ConfUniqPlain.enqueue({}, unique=True, replace={"scheduled": ["state"]})
    assert await count_jobs(sql, oban) == 0


# ---------------------------------------------------------------------------------------------
# Inline testing mode
# ---------------------------------------------------------------------------------------------


async def test_inline_mode_runs_every_unique_job_without_checking_uniqueness(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    # Inline mode runs jobs instead of inserting them: there is no existing job to collide
    # with, so duplicates simply run.
    with mode("inline"):
        first = await ConfUniqPlain.enqueue({"n": 1}, unique=True)
        second = await ConfUniqPlain.enqueue({"n": 1}, unique=True)
        await ConfUniqDeclared.enqueue({"n": 1})
        await ConfUniqDeclared.enqueue({"n": 1})
        await oban.enqueue_many(
            ConfUniqPlain.new({"n": 2}, unique=True), ConfUniqPlain.new({"n": 2}, unique=True)
        )

    assert CALLS == [
        ("plain", {"n": 1}),
        ("plain", {"n": 1}),
        ("declared", {"n": 1}),
        ("declared", {"n": 1}),
        ("plain", {"n": 2}),
        ("plain", {"n": 2}),
    ]
    assert first.conflict is False
    assert second.conflict is False
    assert await count_jobs(sql, oban) == 0
