"""Enqueueing against a real PostgreSQL: rows, states, transactions, NOTIFY, bad input."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from oban import Job, Oban, job, schema, worker
from oban.errors import DatabaseUnavailableError

SENTINEL = "enqueue-test-sentinel"
INJECTION = "x'); DROP TABLE oban_jobs; --"


@worker(queue="mailers", priority=2, max_attempts=7, tags=["Email", " urgent ", "email"])
class EnqMailer:
    async def process(self, job: Job) -> None:
        return None


@worker()
class EnqPlain:
    async def process(self, job: Job) -> None:
        return None


@worker(oban="Other")
class EnqOtherWorker:
    async def process(self, job: Job) -> None:
        return None


@job(queue="math")
def enq_add(a: int, b: int = 2) -> int:
    return a + b


MAILER = "tests.integration.test_enqueue.EnqMailer"
PLAIN = "tests.integration.test_enqueue.EnqPlain"


# Helpers


async def count_jobs(sql: Any, where: str = "TRUE", params: tuple[Any, ...] | None = None) -> int:
    rows = await sql(f"SELECT count(*) FROM oban_jobs WHERE {where}", params)
    return rows[0][0]


def sqlalchemy_url(dsn: str) -> str:
    assert dsn.startswith("postgresql://"), dsn
    return "postgresql+psycopg://" + dsn.removeprefix("postgresql://")


async def listen(dsn: str, prefix: str) -> psycopg.AsyncConnection[Any]:
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    channel = psql.Identifier(f"{prefix}.oban_insert")
    await listener.execute(psql.SQL("LISTEN {}").format(channel))
    return listener


async def notifications_until_sentinel(
    listener: psycopg.AsyncConnection[Any], pool: AsyncConnectionPool[Any], prefix: str
) -> list[dict[str, Any]]:
    """Every insert notification received before a sentinel sent after everything else.

    PostgreSQL delivers notifications in commit order, so anything the previous statements
    sent arrives before the sentinel: no waiting for an absence is needed.
    """
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_notify(%s, %s)", (f"{prefix}.oban_insert", SENTINEL))
    received: list[dict[str, Any]] = []
    async for note in listener.notifies(timeout=5.0):
        if note.payload == SENTINEL:
            return received
        received.append(json.loads(note.payload))
    raise AssertionError(f"sentinel notification never arrived (got {received!r})")


class CountingConnection(psycopg.AsyncConnection):
    """A psycopg connection that counts the statements sent through ``execute``."""

    executes = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.executes += 1
        return await super().execute(*args, **kwargs)


# Worker.enqueue


async def test_enqueue_returns_job_with_id_state_and_utc_timestamps(oban, sql):
    before = datetime.now(UTC)
    job = await EnqMailer.enqueue({"to": "ada", "n": [1, 2]}, meta={"trace": "abc"})
    after = datetime.now(UTC)

    assert isinstance(job, Job)
    assert isinstance(job.id, int)
    assert job.state == "available"
    for stamp in (job.inserted_at, job.scheduled_at):
        assert stamp is not None
        assert stamp.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=5) <= stamp <= after + timedelta(seconds=5)

    rows = await sql(
        "SELECT queue, worker, args, meta, tags, priority, max_attempts, state::text, "
        "attempt, inserted_at, scheduled_at FROM oban_jobs WHERE id = %s",
        (job.id,),
    )
    assert len(rows) == 1
    queue, worker_name, args, meta, tags, priority, max_attempts, state, attempt, ins, sch = rows[0]
    assert queue == "mailers"
    assert worker_name == MAILER
    assert args == {"to": "ada", "n": [1, 2]}
    assert meta == {"trace": "abc"}
    assert tags == ["email", "urgent"]
    assert priority == 2
    assert max_attempts == 7
    assert state == "available"
    assert attempt == 0
    # The returned timestamps are the row's (naive UTC in the database).
    assert ins.replace(tzinfo=UTC) == job.inserted_at
    assert sch.replace(tzinfo=UTC) == job.scheduled_at


async def test_enqueue_overrides_worker_options_per_call(oban, sql):
    job = await EnqMailer.enqueue({}, queue="other", priority=9, max_attempts=1, tags=["X"])

    rows = await sql(
        "SELECT queue, priority, max_attempts, tags FROM oban_jobs WHERE id = %s", (job.id,)
    )
    assert rows == [("other", 9, 1, ["x"])]


async def test_scheduled_in_future_is_scheduled(oban, sql):
    before = datetime.now(UTC)
    job = await EnqPlain.enqueue({}, scheduled_in=60)

    assert job.state == "scheduled"
    assert job.scheduled_at is not None
    assert job.scheduled_at.utcoffset() == timedelta(0)
    assert before + timedelta(seconds=55) <= job.scheduled_at <= before + timedelta(seconds=65)
    rows = await sql("SELECT state::text, scheduled_at FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows[0][0] == "scheduled"
    assert rows[0][1].replace(tzinfo=UTC) == job.scheduled_at


async def test_scheduled_at_in_future_is_scheduled(oban, sql):
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    job = await EnqPlain.enqueue({}, scheduled_at=at)

    assert job.state == "scheduled"
    assert job.scheduled_at == at
    rows = await sql("SELECT state::text, scheduled_at FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows == [("scheduled", at.replace(tzinfo=None))]


async def test_scheduled_at_in_another_timezone_is_stored_as_utc(oban, sql):
    utc = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    plus_five = utc.astimezone(timezone(timedelta(hours=5)))
    job = await EnqPlain.enqueue({}, scheduled_at=plus_five)

    assert job.state == "scheduled"
    assert job.scheduled_at == utc
    rows = await sql("SELECT scheduled_at FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows == [(utc.replace(tzinfo=None),)]


async def test_scheduled_at_in_past_is_available(oban, sql):
    at = datetime.now(UTC) - timedelta(hours=1)
    job = await EnqPlain.enqueue({}, scheduled_at=at)

    assert job.state == "available"
    rows = await sql("SELECT state::text FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows == [("available",)]


# enqueue_many


async def test_enqueue_many_varargs_returns_jobs_in_input_order(oban, sql):
    jobs = [EnqPlain.new({"n": n}) for n in (3, 1, 2)]
    inserted = await oban.enqueue_many(*jobs)

    assert [j.args["n"] for j in inserted] == [3, 1, 2]
    ids = [j.id for j in inserted]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 3
    rows = await sql("SELECT id, args FROM oban_jobs ORDER BY id")
    assert [(i, {"n": n}) for i, n in zip(ids, (3, 1, 2), strict=True)] == rows


async def test_enqueue_many_list_returns_jobs_in_input_order(oban, sql):
    jobs = [EnqPlain.new({"n": n}, queue=f"q{n % 3}") for n in range(20, 0, -1)]
    inserted = await oban.enqueue_many(jobs)

    assert [j.args["n"] for j in inserted] == list(range(20, 0, -1))
    ids = [j.id for j in inserted]
    assert all(a < b for a, b in itertools.pairwise(ids))
    rows = await sql("SELECT id, args->>'n', queue FROM oban_jobs ORDER BY id")
    assert rows == [(j.id, str(j.args["n"]), j.queue) for j in inserted]
    assert all(j.state == "available" for j in inserted)


async def test_enqueue_many_mixed_states_keeps_order(oban, sql):
    inserted = await oban.enqueue_many(
        EnqPlain.new({"n": 1}),
        EnqPlain.new({"n": 2}, scheduled_in=3600),
        EnqPlain.new({"n": 3}),
    )

    assert [j.args["n"] for j in inserted] == [1, 2, 3]
    assert [j.state for j in inserted] == ["available", "scheduled", "available"]
    rows = await sql("SELECT args->>'n', state::text FROM oban_jobs ORDER BY id")
    assert rows == [("1", "available"), ("2", "scheduled"), ("3", "available")]


async def test_enqueue_many_empty_inserts_nothing(oban, sql):
    assert await oban.enqueue_many([]) == []
    assert await count_jobs(sql) == 0


async def test_enqueue_many_ten_thousand_jobs_in_one_statement(oban, sql, dsn):
    jobs = [EnqPlain.new({"n": n}) for n in range(10_000)]
    conn = await CountingConnection.connect(dsn)
    try:
        before = conn.executes
        inserted = await oban.enqueue_many(jobs, conn=conn)
        assert conn.executes - before == 1
        await conn.commit()
    finally:
        await conn.close()

    assert len(inserted) == 10_000
    assert [j.args["n"] for j in inserted] == list(range(10_000))
    ids = [j.id for j in inserted]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert await count_jobs(sql) == 10_000
    rows = await sql("SELECT min(id), max(id), count(DISTINCT args->>'n') FROM oban_jobs")
    assert rows == [(ids[0], ids[-1], 10_000)]


# Inside the caller's transaction


async def test_psycopg_transaction_rolled_back_leaves_no_job(oban, sql, dsn):
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        job = await EnqPlain.enqueue({"tx": "rollback"}, conn=conn)
        assert job.id is not None
        # Visible inside the transaction, not outside it.
        cur = await conn.execute(
            psql.SQL("SELECT count(*) FROM {}.oban_jobs WHERE id = %s").format(
                psql.Identifier(oban.prefix)
            ),
            (job.id,),
        )
        assert (await cur.fetchone())[0] == 1
        assert await count_jobs(sql, "id = %s", (job.id,)) == 0
        await conn.rollback()
    finally:
        await conn.close()

    assert await count_jobs(sql) == 0


async def test_psycopg_transaction_committed_keeps_job(oban, sql, dsn):
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        async with conn.transaction():
            job = await EnqPlain.enqueue({"tx": "commit"}, conn=conn)
            assert await count_jobs(sql, "id = %s", (job.id,)) == 0
    finally:
        await conn.close()

    rows = await sql("SELECT args FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows == [({"tx": "commit"},)]


async def test_psycopg_cursor_as_conn_joins_transaction(oban, sql, dsn):
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        cur = conn.cursor()
        job = await EnqPlain.enqueue({"tx": "cursor"}, conn=cur)
        assert await count_jobs(sql, "id = %s", (job.id,)) == 0
        await conn.rollback()
    finally:
        await conn.close()

    assert await count_jobs(sql) == 0


async def test_sqlalchemy_session_rollback_and_commit(oban, sql, dsn):
    engine = create_async_engine(sqlalchemy_url(dsn))
    try:
        async with AsyncSession(engine) as session:
            await session.begin()
            rolled = await EnqPlain.enqueue({"sa": "session-rollback"}, conn=session)
            assert rolled.id is not None
            assert await count_jobs(sql, "id = %s", (rolled.id,)) == 0
            await session.rollback()
        assert await count_jobs(sql) == 0

        async with AsyncSession(engine) as session:
            async with session.begin():
                kept = await EnqPlain.enqueue({"sa": "session-commit"}, conn=session)
                assert await count_jobs(sql, "id = %s", (kept.id,)) == 0
    finally:
        await engine.dispose()

    rows = await sql("SELECT id, args FROM oban_jobs")
    assert rows == [(kept.id, {"sa": "session-commit"})]


async def test_sqlalchemy_connection_rollback_and_commit(oban, sql, dsn):
    engine = create_async_engine(sqlalchemy_url(dsn))
    try:
        async with engine.connect() as conn:
            trans = await conn.begin()
            rolled = await oban.enqueue(EnqPlain.new({"sa": "conn-rollback"}), conn=conn)
            assert rolled.id is not None
            assert await count_jobs(sql, "id = %s", (rolled.id,)) == 0
            await trans.rollback()
        assert await count_jobs(sql) == 0

        async with engine.begin() as conn:
            kept = await oban.enqueue(EnqPlain.new({"sa": "conn-commit"}), conn=conn)
            assert await count_jobs(sql, "id = %s", (kept.id,)) == 0
    finally:
        await engine.dispose()

    rows = await sql("SELECT id, args FROM oban_jobs")
    assert rows == [(kept.id, {"sa": "conn-commit"})]


async def test_conn_of_unsupported_type_raises_type_error(oban, sql):
    with pytest.raises(TypeError, match="conn"):
        await EnqPlain.enqueue({}, conn=object())
    assert await count_jobs(sql) == 0


# NOTIFY on insert


async def test_insert_notifies_once_per_queue(oban, pool, prefix, dsn):
    listener = await listen(dsn, prefix)
    try:
        jobs = [EnqPlain.new({"n": n}, queue="a") for n in range(100)]
        jobs += [EnqPlain.new({"n": n}, queue="b") for n in range(50)]
        await oban.enqueue_many(jobs)

        received = await notifications_until_sentinel(listener, pool, prefix)
    finally:
        await listener.close()

    assert len(received) == 2
    assert sorted(received, key=lambda m: m["queue"]) == [{"queue": "a"}, {"queue": "b"}]


async def test_scheduled_jobs_do_not_notify(oban, pool, prefix, dsn):
    listener = await listen(dsn, prefix)
    try:
        await oban.enqueue_many(
            EnqPlain.new({}, queue="later", scheduled_in=600),
            EnqPlain.new({}, queue="now"),
            EnqPlain.new({}, queue="also_later", scheduled_at=datetime.now(UTC) + timedelta(1)),
        )
        received = await notifications_until_sentinel(listener, pool, prefix)
    finally:
        await listener.close()

    assert received == [{"queue": "now"}]


async def test_rolled_back_insert_does_not_notify(oban, pool, prefix, dsn):
    listener = await listen(dsn, prefix)
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        await EnqPlain.enqueue({}, queue="ghost", conn=conn)
        await conn.rollback()
        received = await notifications_until_sentinel(listener, pool, prefix)
    finally:
        await conn.close()
        await listener.close()

    assert received == []


# Bad input


async def test_args_with_a_set_raise_type_error_naming_the_value(oban, sql):
    with pytest.raises(TypeError) as info:
        await EnqPlain.enqueue({"ok": 1, "bad": {7, 8}})

    message = str(info.value)
    assert "bad" in message
    assert "set" in message
    assert await count_jobs(sql) == 0


async def test_meta_with_unencodable_value_raises_type_error(oban, sql):
    with pytest.raises(TypeError, match="meta"):
        await EnqPlain.enqueue({}, meta={"when": object()})
    assert await count_jobs(sql) == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"queue": ""}, "queue"),
        ({"queue": "   "}, "queue"),
        ({"queue": "q" * 128}, "queue"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
async def test_invalid_options_raise_value_error_naming_the_field(oban, sql, options, field):
    with pytest.raises(ValueError, match=field):
        await EnqPlain.enqueue({}, **options)
    assert await count_jobs(sql) == 0


async def test_invalid_job_in_batch_inserts_nothing(oban, sql):
    good = EnqPlain.new({"n": 1})
    with pytest.raises(TypeError):
        await oban.enqueue_many(good, "not a job")  # type: ignore[arg-type]
    assert await count_jobs(sql) == 0


async def test_sql_in_queue_tags_meta_and_args_is_stored_verbatim(oban, sql):
    tags = ["o'reilly; --", 'x"); drop table oban_jobs; --', "$1 %s {prefix}"]
    meta = {"note": INJECTION, "k'ey": '"quoted"', "pct": "%(p1)s $2"}
    args = {"q": INJECTION, INJECTION: "key"}
    job = await EnqPlain.enqueue(args, queue=INJECTION, tags=tags, meta=meta)

    rows = await sql("SELECT queue, tags, meta, args FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows == [(INJECTION, sorted(tags), meta, args)]
    assert job.queue == INJECTION
    exists = await sql("SELECT to_regclass('oban_jobs') IS NOT NULL")
    assert exists == [(True,)]
    assert await count_jobs(sql) == 1


# @job functions


async def test_job_function_enqueue_binds_arguments(oban, sql):
    job = await enq_add.enqueue(3, b=4)

    rows = await sql("SELECT worker, queue, args FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows == [("tests.integration.test_enqueue.enq_add", "math", {"a": 3, "b": 4})]


async def test_job_function_enqueue_applies_defaults(oban, sql):
    job = await enq_add.enqueue(5)

    rows = await sql("SELECT args FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows == [({"a": 5, "b": 2},)]


# get_job


async def test_get_job_returns_the_row_as_a_job(oban, sql):
    enqueued = await EnqMailer.enqueue({"to": "grace"}, meta={"m": 1}, scheduled_in=120)
    found = await oban.get_job(enqueued.id)

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
    assert found.scheduled_at is not None and found.scheduled_at.utcoffset() == timedelta(0)
    assert found.attempted_at is None
    assert found.completed_at is None


async def test_get_job_reflects_database_changes(oban, sql):
    enqueued = await EnqPlain.enqueue({})
    await sql("UPDATE oban_jobs SET priority = 5 WHERE id = %s", (enqueued.id,))

    found = await oban.get_job(enqueued.id)
    assert found is not None and found.priority == 5


async def test_get_job_of_missing_id_is_none(oban):
    enqueued = await EnqPlain.enqueue({})
    assert await oban.get_job(enqueued.id + 1000) is None


# Instance routing


async def test_worker_with_oban_name_enqueues_through_that_instance(make_oban, pool, sql):
    other_prefix = f"s_{uuid.uuid4().hex[:10]}"
    await schema.install(pool, other_prefix)
    try:
        make_oban()  # "Oban", on the test schema
        other = make_oban(name="Other", prefix=other_prefix)
        assert Oban.get_instance("Other") is other

        job = await EnqOtherWorker.enqueue({"to": "other"})

        async with pool.connection() as conn:
            cur = await conn.execute(
                psql.SQL("SELECT id, args FROM {}.oban_jobs").format(psql.Identifier(other_prefix))
            )
            assert await cur.fetchall() == [(job.id, {"to": "other"})]
        assert await count_jobs(sql) == 0
    finally:
        async with pool.connection() as conn:
            await conn.execute(
                psql.SQL("DROP SCHEMA {} CASCADE").format(psql.Identifier(other_prefix))
            )


# Pools


async def test_create_pool_returns_open_pool_usable_for_enqueue(make_oban, sql, dsn):
    created = await Oban.create_pool(dsn=dsn)
    try:
        assert isinstance(created, AsyncConnectionPool)
        assert not created.closed
        oban = make_oban(pool=created)
        job = await oban.enqueue(EnqPlain.new({"via": "create_pool"}))
        rows = await sql("SELECT args FROM oban_jobs WHERE id = %s", (job.id,))
        assert rows == [({"via": "create_pool"},)]
    finally:
        await created.close()


async def test_create_pool_with_unreachable_dsn_raises_quickly():
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        await Oban.create_pool("postgresql://postgres@127.0.0.1:1/test", timeout=2)
    assert time.monotonic() - started < 5


# pool=None is not an error: with no DSN either, it selects the embedded SQLite engine.
@pytest.mark.parametrize("bad_pool", ["postgresql://postgres@127.0.0.1/test", object()])
def test_oban_with_a_non_pool_raises_type_error(bad_pool):
    with pytest.raises(TypeError, match="AsyncConnectionPool"):
        Oban(pool=bad_pool, name="EnqNotAPool")
    with pytest.raises(RuntimeError):
        Oban.get_instance("EnqNotAPool")


def test_oban_without_pool_or_dsn_uses_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    instance = Oban(name="EnqNoPool")
    assert instance.pool is None
    assert instance.sqlite_path == "oban.db"


def test_oban_with_an_unknown_dsn_scheme_is_a_value_error():
    with pytest.raises(ValueError, match="mysql"):
        Oban(dsn="mysql://localhost/db", name="EnqBadDsn")
