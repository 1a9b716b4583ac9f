"""Enqueueing on both engines: returned jobs, states, ordering, transactions, bad input."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import aiosqlite
import pytest

from oban import Job, Oban, job, schema, worker
from oban.testing import all_enqueued

INJECTION = "x'); DROP TABLE oban_jobs; --"


@worker(queue="mailers", priority=2, max_attempts=7, tags=["Email", " urgent ", "email"])
class ConfAEnqMailer:
    async def process(self, job: Job) -> None:
        return None


@worker()
class ConfAEnqPlain:
    async def process(self, job: Job) -> None:
        return None


@worker(oban="ConfAOther")
class ConfAEnqOtherWorker:
    async def process(self, job: Job) -> None:
        return None


@job(queue="math")
def confa_add(a: int, b: int = 2) -> int:
    return a + b


MODULE = "tests.conformance.test_enqueue_conformance"
MAILER = f"{MODULE}.ConfAEnqMailer"
PLAIN = f"{MODULE}.ConfAEnqPlain"


async def count_jobs(sql: Callable[..., Any], oban: Oban) -> int:
    rows = await sql(oban, "SELECT count(*) FROM oban_jobs")
    return int(rows[0][0])


async def stored(oban: Oban, job_id: int | None) -> Job:
    assert job_id is not None, "the job was never inserted"
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is not in the database"
    return found


def id_of(job: Job) -> int:
    assert job.id is not None, "the job was never inserted"
    return job.id


def assert_utc(stamp: datetime | None) -> None:
    assert stamp is not None
    assert stamp.utcoffset() == timedelta(0)


STORED_TEXT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}")


def stored_utc(engine: str, value: Any) -> datetime:
    """A timestamp column as stored, checked to be UTC: a naive ``timestamp`` on PostgreSQL,
    ``YYYY-MM-DD HH:MM:SS.SSS`` UTC text on SQLite. Returned as an aware UTC datetime."""
    if engine == "postgres":
        assert isinstance(value, datetime) and value.tzinfo is None, value
        return value.replace(tzinfo=UTC)
    assert isinstance(value, str) and STORED_TEXT.fullmatch(value), value
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def stored_json(value: Any) -> Any:
    """A JSON column as stored: decoded by psycopg (PostgreSQL) or JSON text (SQLite)."""
    return json.loads(value) if isinstance(value, str) else value


# Worker.enqueue


async def test_enqueue_returns_job_with_id_state_and_utc_timestamps(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    before = datetime.now(UTC)
    job = await ConfAEnqMailer.enqueue({"to": "ada", "n": [1, 2]}, meta={"trace": "abc"})
    after = datetime.now(UTC)

    assert isinstance(job, Job)
    assert isinstance(job.id, int)
    assert job.state == "available"
    for stamp in (job.inserted_at, job.scheduled_at):
        assert_utc(stamp)
        assert stamp is not None
        assert before - timedelta(seconds=5) <= stamp <= after + timedelta(seconds=5)

    found = await stored(oban, job.id)
    assert found.queue == "mailers"
    assert found.worker == MAILER
    assert found.args == {"to": "ada", "n": [1, 2]}
    assert found.meta == {"trace": "abc"}
    assert found.tags == ["email", "urgent"]
    assert found.priority == 2
    assert found.max_attempts == 7
    assert found.state == "available"
    assert found.attempt == 0
    assert found.errors == []
    assert found.attempted_at is None
    assert found.completed_at is None
    # The returned timestamps are the row's.
    assert found.inserted_at == job.inserted_at
    assert found.scheduled_at == job.scheduled_at

    # The row itself, as stored (timestamps in UTC).
    rows = await sql(
        oban,
        "SELECT queue, worker, args, meta, tags, priority, max_attempts, state, attempt, "
        "inserted_at, scheduled_at FROM oban_jobs WHERE id = %s",
        (job.id,),
    )
    assert len(rows) == 1
    queue, worker_name, args, meta, tags, priority, max_attempts, state, attempt, ins, sch = rows[0]
    assert queue == "mailers"
    assert worker_name == MAILER
    assert stored_json(args) == {"to": "ada", "n": [1, 2]}
    assert stored_json(meta) == {"trace": "abc"}
    assert stored_json(tags) == ["email", "urgent"]
    assert (priority, max_attempts, state, attempt) == (2, 7, "available", 0)
    assert stored_utc(engine, ins) == job.inserted_at
    assert stored_utc(engine, sch) == job.scheduled_at


async def test_enqueue_overrides_worker_options_per_call(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    job = await ConfAEnqMailer.enqueue({}, queue="other", priority=9, max_attempts=1, tags=["X"])

    found = await stored(oban, job.id)
    assert (found.queue, found.priority, found.max_attempts, found.tags) == ("other", 9, 1, ["x"])
    rows = await sql(
        oban, "SELECT queue, priority, max_attempts, tags FROM oban_jobs WHERE id = %s", (job.id,)
    )
    assert [(q, p, m, stored_json(t)) for q, p, m, t in rows] == [("other", 9, 1, ["x"])]


async def test_scheduled_in_future_is_scheduled(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    before = datetime.now(UTC)
    job = await ConfAEnqPlain.enqueue({}, scheduled_in=60)

    assert job.state == "scheduled"
    assert_utc(job.scheduled_at)
    assert job.scheduled_at is not None
    assert before + timedelta(seconds=55) <= job.scheduled_at <= before + timedelta(seconds=65)
    found = await stored(oban, job.id)
    assert found.state == "scheduled"
    assert found.scheduled_at == job.scheduled_at
    rows = await sql(oban, "SELECT state, scheduled_at FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows[0][0] == "scheduled"
    assert stored_utc(engine, rows[0][1]) == job.scheduled_at


async def test_scheduled_at_in_future_is_scheduled(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    job = await ConfAEnqPlain.enqueue({}, scheduled_at=at)

    assert job.state == "scheduled"
    assert job.scheduled_at == at
    found = await stored(oban, job.id)
    assert found.state == "scheduled"
    assert found.scheduled_at == at
    rows = await sql(oban, "SELECT state, scheduled_at FROM oban_jobs WHERE id = %s", (job.id,))
    assert [(state, stored_utc(engine, when)) for state, when in rows] == [("scheduled", at)]


async def test_scheduled_at_in_another_timezone_is_stored_as_utc(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    utc = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    plus_five = utc.astimezone(timezone(timedelta(hours=5)))
    job = await ConfAEnqPlain.enqueue({}, scheduled_at=plus_five)

    assert job.state == "scheduled"
    assert job.scheduled_at == utc
    assert_utc(job.scheduled_at)
    found = await stored(oban, job.id)
    assert found.scheduled_at == utc
    assert_utc(found.scheduled_at)
    rows = await sql(oban, "SELECT scheduled_at FROM oban_jobs WHERE id = %s", (job.id,))
    assert [stored_utc(engine, row[0]) for row in rows] == [utc]


@pytest.mark.parametrize("option", ["scheduled_at", "scheduled_in"])
async def test_schedule_in_the_past_is_available(
    oban: Oban, sql: Callable[..., Any], option: str
) -> None:
    when: Any = datetime.now(UTC) - timedelta(hours=1) if option == "scheduled_at" else -3600
    job = await ConfAEnqPlain.enqueue({}, **{option: when})

    assert job.state == "available"
    found = await stored(oban, job.id)
    assert found.state == "available"
    assert found.scheduled_at is not None
    assert found.scheduled_at < datetime.now(UTC) - timedelta(minutes=50)
    rows = await sql(oban, "SELECT state FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows[0][0] == "available"


# enqueue_many


async def test_enqueue_many_varargs_returns_jobs_in_input_order(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    inserted = await oban.enqueue_many(*[ConfAEnqPlain.new({"n": n}) for n in (3, 1, 2)])

    assert [j.args["n"] for j in inserted] == [3, 1, 2]
    ids = [id_of(j) for j in inserted]
    assert all(isinstance(i, int) for i in ids)
    assert all(a < b for a, b in itertools.pairwise(ids))
    for job_id, n in zip(ids, (3, 1, 2), strict=True):
        assert (await stored(oban, job_id)).args == {"n": n}
    rows = await sql(oban, "SELECT id FROM oban_jobs ORDER BY id")
    assert [r[0] for r in rows] == ids


async def test_enqueue_many_list_returns_jobs_in_input_order(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    jobs = [ConfAEnqPlain.new({"n": n}, queue=f"q{n % 3}") for n in range(20, 0, -1)]
    inserted = await oban.enqueue_many(jobs)

    assert [j.args["n"] for j in inserted] == list(range(20, 0, -1))
    ids = [id_of(j) for j in inserted]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert all(j.state == "available" for j in inserted)
    rows = await sql(oban, "SELECT id, queue FROM oban_jobs ORDER BY id")
    assert rows == [(j.id, j.queue) for j in inserted]
    for j in inserted:
        assert (await stored(oban, j.id)).args == j.args


async def test_enqueue_many_mixed_states_keeps_order(oban: Oban, sql: Callable[..., Any]) -> None:
    inserted = await oban.enqueue_many(
        ConfAEnqPlain.new({"n": 1}),
        ConfAEnqPlain.new({"n": 2}, scheduled_in=3600),
        ConfAEnqPlain.new({"n": 3}),
    )

    assert [j.args["n"] for j in inserted] == [1, 2, 3]
    assert [j.state for j in inserted] == ["available", "scheduled", "available"]
    rows = await sql(oban, "SELECT id, state FROM oban_jobs ORDER BY id")
    assert rows == [(j.id, str(j.state)) for j in inserted]


async def test_enqueue_many_empty_inserts_nothing(oban: Oban, sql: Callable[..., Any]) -> None:
    assert await oban.enqueue_many([]) == []
    assert await count_jobs(sql, oban) == 0


async def test_enqueue_many_two_thousand_jobs_in_one_call(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    inserted = await oban.enqueue_many([ConfAEnqPlain.new({"n": n}) for n in range(2000)])

    assert len(inserted) == 2000
    assert [j.args["n"] for j in inserted] == list(range(2000))
    ids = [id_of(j) for j in inserted]
    assert all(a < b for a, b in itertools.pairwise(ids))
    rows = await sql(oban, "SELECT count(*), min(id), max(id) FROM oban_jobs")
    assert tuple(rows[0]) == (2000, ids[0], ids[-1])
    first, last = await stored(oban, ids[0]), await stored(oban, ids[-1])
    assert (first.args, last.args) == ({"n": 0}, {"n": 1999})


# Inside the caller's transaction


async def test_caller_transaction_rolled_back_leaves_no_job(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    if engine == "postgres":
        assert oban.pool is not None
        async with oban.pool.connection() as conn:
            job = await ConfAEnqPlain.enqueue({"tx": "rollback"}, conn=conn)
            assert job.id is not None
            # Not visible outside the open transaction.
            assert await oban.get_job(job.id) is None
            await conn.rollback()
    else:
        assert oban.sqlite_path is not None
        async with aiosqlite.connect(oban.sqlite_path) as conn:
            await conn.execute("BEGIN")
            job = await oban.enqueue(ConfAEnqPlain.new({"tx": "rollback"}), conn=conn)
            assert job.id is not None
            assert await oban.get_job(job.id) is None
            await conn.rollback()

    assert await oban.get_job(job.id) is None
    assert await count_jobs(sql, oban) == 0


async def test_caller_transaction_committed_keeps_job(
    oban: Oban, sql: Callable[..., Any], engine: str
) -> None:
    if engine == "postgres":
        assert oban.pool is not None
        async with oban.pool.connection() as conn:
            job = await ConfAEnqPlain.enqueue({"tx": "commit"}, conn=conn)
            assert job.id is not None
            assert await oban.get_job(job.id) is None
            await conn.commit()
    else:
        assert oban.sqlite_path is not None
        async with aiosqlite.connect(oban.sqlite_path) as conn:
            await conn.execute("BEGIN")
            job = await oban.enqueue(ConfAEnqPlain.new({"tx": "commit"}), conn=conn)
            assert job.id is not None
            assert await oban.get_job(job.id) is None
            await conn.commit()

    found = await stored(oban, job.id)
    assert found.args == {"tx": "commit"}
    assert found.state == "available"
    assert await count_jobs(sql, oban) == 1


async def test_conn_of_unsupported_type_raises_type_error(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with pytest.raises(TypeError, match="conn"):
        await ConfAEnqPlain.enqueue({}, conn=object())
    assert await count_jobs(sql, oban) == 0


# Bad input


async def test_args_with_a_set_raise_type_error_naming_the_value(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with pytest.raises(TypeError) as info:
        await ConfAEnqPlain.enqueue({"ok": 1, "bad": {7, 8}})

    message = str(info.value)
    assert "bad" in message
    assert "set" in message
    assert await count_jobs(sql, oban) == 0


async def test_meta_with_unencodable_value_raises_type_error(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with pytest.raises(TypeError, match="meta"):
        await ConfAEnqPlain.enqueue({}, meta={"when": object()})
    assert await count_jobs(sql, oban) == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"queue": ""}, "queue"),
        ({"queue": "   "}, "queue"),
        ({"queue": "q" * 128}, "queue"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
async def test_invalid_options_raise_value_error_naming_the_field(
    oban: Oban, sql: Callable[..., Any], options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        await ConfAEnqPlain.enqueue({}, **options)
    assert await count_jobs(sql, oban) == 0


# A wrong type was a ValueError here; it is a TypeError naming the option, as in oban-py.
@pytest.mark.parametrize(
    ("options", "field"),
    [({"priority": "high"}, "priority"), ({"max_attempts": "5"}, "max_attempts")],
)
async def test_options_of_the_wrong_type_raise_type_error_naming_the_field(
    oban: Oban, sql: Callable[..., Any], options: dict[str, Any], field: str
) -> None:
    with pytest.raises(TypeError, match=field):
        await ConfAEnqPlain.enqueue({}, **options)
    assert await count_jobs(sql, oban) == 0


async def test_invalid_job_in_batch_inserts_nothing(oban: Oban, sql: Callable[..., Any]) -> None:
    good = ConfAEnqPlain.new({"n": 1})
    with pytest.raises(TypeError):
        await oban.enqueue_many(good, cast(Any, "not a job"))  # deliberately not a Job
    assert await count_jobs(sql, oban) == 0


async def test_sql_in_queue_tags_meta_and_args_is_stored_verbatim(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    tags = [
        "o'reilly; --",
        'x"); drop table oban_jobs; --',
        "$1 %s ? :jobs {prefix} {table_prefix}",
    ]
    meta = {"note": INJECTION, "k'ey": '"quoted"', "pct": "%(p1)s $2 ?1 :acks"}
    args = {"q": INJECTION, INJECTION: "key", "json": '{"a": [1, 2]}'}
    job = await ConfAEnqPlain.enqueue(args, queue=INJECTION, tags=tags, meta=meta)

    assert job.queue == INJECTION
    found = await stored(oban, job.id)
    assert found.queue == INJECTION
    assert found.tags == sorted(tags)
    assert found.meta == meta
    assert found.args == args
    # The table is still there and holds exactly this job.
    rows = await sql(oban, "SELECT id, queue FROM oban_jobs")
    assert rows == [(job.id, INJECTION)]


# @job functions


async def test_job_function_enqueue_binds_arguments(oban: Oban) -> None:
    job = await confa_add.enqueue(3, b=4)

    found = await stored(oban, job.id)
    assert found.worker == f"{MODULE}.confa_add"
    assert found.queue == "math"
    assert found.args == {"a": 3, "b": 4}


async def test_job_function_enqueue_applies_defaults(oban: Oban) -> None:
    job = await confa_add.enqueue(5)

    assert (await stored(oban, job.id)).args == {"a": 5, "b": 2}


async def test_job_function_enqueue_with_wrong_arguments_raises_type_error(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with pytest.raises(TypeError, match="confa_add"):
        await cast(Any, confa_add).enqueue(1, 2, 3)  # deliberately one argument too many
    assert await count_jobs(sql, oban) == 0


# get_job


async def test_get_job_returns_the_row_as_a_job(oban: Oban) -> None:
    enqueued = await ConfAEnqMailer.enqueue({"to": "grace"}, meta={"m": 1}, scheduled_in=120)
    found = await oban.get_job(id_of(enqueued))

    assert isinstance(found, Job)
    assert found.id == enqueued.id
    assert found.worker == MAILER
    assert found.queue == "mailers"
    assert found.args == {"to": "grace"}
    assert found.meta == {"m": 1}
    assert found.tags == ["email", "urgent"]
    assert found.priority == 2
    assert found.max_attempts == 7
    assert found.attempt == 0
    assert found.errors == []
    assert found.state == "scheduled"
    assert found.inserted_at == enqueued.inserted_at
    assert found.scheduled_at == enqueued.scheduled_at
    assert_utc(found.inserted_at)
    assert_utc(found.scheduled_at)
    assert found.attempted_at is None
    assert found.completed_at is None


async def test_get_job_reflects_database_changes(oban: Oban, sql: Callable[..., Any]) -> None:
    enqueued = await ConfAEnqPlain.enqueue({})
    await sql(oban, "UPDATE oban_jobs SET priority = 5 WHERE id = %s", (enqueued.id,))

    found = await oban.get_job(id_of(enqueued))
    assert found is not None and found.priority == 5


async def test_get_job_of_missing_id_is_none(oban: Oban) -> None:
    enqueued = await ConfAEnqPlain.enqueue({})
    assert await oban.get_job(id_of(enqueued) + 1000) is None
    assert await oban.get_job(enqueued) is not None


# Instance routing


async def test_worker_with_oban_name_enqueues_through_that_instance(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    main = make_oban()  # "Oban", on the test database
    other_prefix = f"o_{uuid.uuid4().hex[:10]}"
    if engine == "postgres":
        assert main.pool is not None
        await schema.install(main.pool, other_prefix)
    try:
        other = make_oban(name="ConfAOther", prefix=other_prefix)
        assert Oban.get_instance("ConfAOther") is other

        job = await ConfAEnqOtherWorker.enqueue({"to": "other"})

        listed = await all_enqueued(oban=other)
        assert [(j.id, j.args) for j in listed] == [(job.id, {"to": "other"})]
        assert await count_jobs(sql, main) == 0
    finally:
        if engine == "postgres":
            assert main.pool is not None
            async with main.pool.connection() as conn:
                await conn.execute(f'DROP SCHEMA "{other_prefix}" CASCADE')


# Choosing the engine (no database is touched)


def test_oban_without_pool_or_dsn_uses_sqlite_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    instance = Oban(name="ConfAEnqNoPool")
    assert instance.pool is None
    assert instance.sqlite_path == "oban.db"


def test_oban_with_an_unknown_dsn_scheme_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="mysql"):
        Oban(dsn="mysql://localhost/db", name="ConfAEnqBadDsn")
