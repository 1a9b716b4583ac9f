"""Enqueueing on PostgreSQL only: psycopg/SQLAlchemy transactions, insert NOTIFY, pools.

Engine-independent enqueue behaviour (returned jobs, states, ordering, bad input, get_job,
instance routing) is tested on both engines in tests/conformance/test_enqueue_conformance.py.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from oban import Job, Oban, worker
from oban.errors import DatabaseUnavailableError

SENTINEL = "enqueue-test-sentinel"


@worker()
class EnqPlain:
    async def process(self, job: Job) -> None:
        return None


# Helpers


async def count_jobs(
    sql: Callable[..., Any], where: str = "TRUE", params: tuple[Any, ...] | None = None
) -> int:
    rows: list[tuple[int]] = await sql(f"SELECT count(*) FROM oban_jobs WHERE {where}", params)
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


def statements_sent(trace: str) -> list[str]:
    """The statements a libpq protocol trace shows the client sending (Query messages and
    Execute messages of the extended protocol), without transaction control."""
    sent: list[str] = []
    for line in trace.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0] == "F" and fields[2] in ("Query", "Execute"):
            if not any(word in line for word in ('"BEGIN"', '"COMMIT"', '"ROLLBACK"')):
                sent.append(line)
    return sent


# enqueue_many


async def test_enqueue_many_ten_thousand_jobs_in_one_statement(
    oban: Oban, sql: Callable[..., Any], dsn: str
) -> None:
    jobs = [EnqPlain.new({"n": n}) for n in range(10_000)]
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        # Count at the protocol level: every statement the client sends, however sent.
        with tempfile.TemporaryFile() as trace:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            inserted = await oban.enqueue_many(jobs, conn=conn)
            conn.pgconn.untrace()
            trace.seek(0)
            sent = statements_sent(trace.read().decode(errors="replace"))
        assert len(sent) == 1, sent
        await conn.commit()
    finally:
        await conn.close()

    assert len(inserted) == 10_000
    assert [j.args["n"] for j in inserted] == list(range(10_000))
    ids = [j.id for j in inserted if j.id is not None]
    assert len(ids) == len(inserted)  # every job got an id
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert await count_jobs(sql) == 10_000
    rows = await sql("SELECT min(id), max(id), count(DISTINCT args->>'n') FROM oban_jobs")
    assert rows == [(ids[0], ids[-1], 10_000)]


# Inside the caller's transaction


async def test_psycopg_transaction_rolled_back_leaves_no_job(
    oban: Oban, sql: Callable[..., Any], dsn: str
) -> None:
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
        row = await cur.fetchone()
        assert row is not None and row[0] == 1
        assert await count_jobs(sql, "id = %s", (job.id,)) == 0
        await conn.rollback()
    finally:
        await conn.close()

    assert await count_jobs(sql) == 0


async def test_psycopg_transaction_committed_keeps_job(
    oban: Oban, sql: Callable[..., Any], dsn: str
) -> None:
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        async with conn.transaction():
            job = await EnqPlain.enqueue({"tx": "commit"}, conn=conn)
            assert await count_jobs(sql, "id = %s", (job.id,)) == 0
    finally:
        await conn.close()

    rows = await sql("SELECT args FROM oban_jobs WHERE id = %s", (job.id,))
    assert rows == [({"tx": "commit"},)]


async def test_psycopg_cursor_as_conn_joins_transaction(
    oban: Oban, sql: Callable[..., Any], dsn: str
) -> None:
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        cur = conn.cursor()
        job = await EnqPlain.enqueue({"tx": "cursor"}, conn=cur)
        assert await count_jobs(sql, "id = %s", (job.id,)) == 0
        await conn.rollback()
    finally:
        await conn.close()

    assert await count_jobs(sql) == 0


async def test_sqlalchemy_session_rollback_and_commit(
    oban: Oban, sql: Callable[..., Any], dsn: str
) -> None:
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


async def test_sqlalchemy_connection_rollback_and_commit(
    oban: Oban, sql: Callable[..., Any], dsn: str
) -> None:
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


# NOTIFY on insert


async def test_insert_notifies_once_per_queue(
    oban: Oban, pool: AsyncConnectionPool[Any], prefix: str, dsn: str
) -> None:
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


async def test_scheduled_jobs_do_not_notify(
    oban: Oban, pool: AsyncConnectionPool[Any], prefix: str, dsn: str
) -> None:
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


async def test_rolled_back_insert_does_not_notify(
    oban: Oban, pool: AsyncConnectionPool[Any], prefix: str, dsn: str
) -> None:
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


# Pools


async def test_create_pool_returns_open_pool_usable_for_enqueue(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], dsn: str
) -> None:
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


async def test_create_pool_with_unreachable_dsn_raises_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        await Oban.create_pool("postgresql://postgres@127.0.0.1:1/test", timeout=2)
    assert time.monotonic() - started < 5


# pool=None is not an error: with no DSN either, it selects the embedded SQLite engine.
@pytest.mark.parametrize("bad_pool", ["postgresql://postgres@127.0.0.1/test", object()])
def test_oban_with_a_non_pool_raises_type_error(bad_pool: Any) -> None:
    with pytest.raises(TypeError, match="AsyncConnectionPool"):
        Oban(pool=bad_pool, name="EnqNotAPool")
    with pytest.raises(RuntimeError):
        Oban.get_instance("EnqNotAPool")
