"""The lifeline judges stale heartbeats by how long the database has been up (issue 13, point
3), on a private PostgreSQL server that the test restarts (never the shared one).

A producer's heartbeat that went stale while the server was down proves nothing: its node may
be alive and unable to write. So within a producer ``max_age`` of the server's start
(``pg_postmaster_start_time()``) no job is rescued for a stale heartbeat; once the server has
been up that long, a heartbeat still stale means a dead node and its job is rescued. Beside a
server that stayed up, the same stale heartbeat is acted on at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from oban import schema
from oban._engines.postgres import PostgresEngine
from tests.pgserver import PrivateServer

PREFIX = "lifeline_restart"
MAX_AGE = 5.0  # the producer max_age the lifeline is given, in seconds
RESCUE_AFTER = 3_600.0  # jobs of unknown producers: far away, never met here


async def _orphan(dsn: str) -> int:
    """A producer whose heartbeat is a minute old and a job it was running; the job's id."""
    producer = str(uuid.uuid4())
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            f"INSERT INTO {PREFIX}.oban_producers (uuid, name, node, queue, updated_at) "
            "VALUES (%s, 'Oban', 'quiet-node', 'a', timezone('UTC', now()) - interval '60 s')",
            (producer,),
        )
        cur = await conn.execute(
            f"INSERT INTO {PREFIX}.oban_jobs (worker, queue, state, attempt, attempted_at, "
            "attempted_by) VALUES ('app.Work', 'a', 'executing', 1, "
            "timezone('UTC', now()) - interval '60 s', ARRAY['quiet-node', %s]) RETURNING id",
            (producer,),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def _state(dsn: str, job_id: int) -> tuple[str, Any]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT state::text, meta->'rescued' FROM {PREFIX}.oban_jobs WHERE id = %s",
            (job_id,),
        )
        row = await cur.fetchone()
        assert row is not None
        return str(row[0]), row[1]


async def _uptime(dsn: str) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT extract(epoch FROM now() - pg_postmaster_start_time())")
        row = await cur.fetchone()
        assert row is not None
        return float(row[0])


async def _until_up_for(dsn: str, seconds: float) -> None:
    uptime = await _uptime(dsn)
    if uptime < seconds:
        await asyncio.sleep(seconds - uptime + 0.05)
    assert await _uptime(dsn) >= seconds


async def test_a_heartbeat_gone_stale_across_a_restart_waits_a_max_age(
    private_pg: PrivateServer,
) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        private_pg.dsn, min_size=1, max_size=2, open=False
    )
    await pool.open(wait=True, timeout=10)
    try:
        await schema.install(pool, PREFIX)
        engine = PostgresEngine(pool, prefix=PREFIX)

        # A server that has been up for a max_age: the stale producer's job is rescued at once.
        await _until_up_for(private_pg.dsn, MAX_AGE)
        before = await _orphan(private_pg.dsn)
        assert await engine.rescue_jobs(RESCUE_AFTER, MAX_AGE, 100) == {
            "available": 1,
            "discarded": 0,
        }
        assert await _state(private_pg.dsn, before) == ("available", 1)

        # The same stale heartbeat just after a restart (a clean one keeps the unlogged
        # producer row): nothing is rescued while the server is younger than a max_age.
        after = await _orphan(private_pg.dsn)
        await pool.close()
        await asyncio.to_thread(private_pg.restart, "fast")
        restarted = time.monotonic()
        pool = AsyncConnectionPool(private_pg.dsn, min_size=1, max_size=2, open=False)
        await pool.open(wait=True, timeout=10)
        engine = PostgresEngine(pool, prefix=PREFIX)
        assert await _uptime(private_pg.dsn) < MAX_AGE - 1, "the restart took too long to test"
        while time.monotonic() - restarted < MAX_AGE - 1.5:
            assert await engine.rescue_jobs(RESCUE_AFTER, MAX_AGE, 100) == {
                "available": 0,
                "discarded": 0,
            }, "a heartbeat that went stale across the restart was taken for a dead node"
            await asyncio.sleep(0.5)
        assert await _state(private_pg.dsn, after) == ("executing", None)

        # Up for a max_age and the heartbeat is still stale: now the node is dead.
        await _until_up_for(private_pg.dsn, MAX_AGE)
        assert await engine.rescue_jobs(RESCUE_AFTER, MAX_AGE, 100) == {
            "available": 1,
            "discarded": 0,
        }
        assert await _state(private_pg.dsn, after) == ("available", 1)
    finally:
        await pool.close()
