"""One stager per cluster, on the leader (PostgreSQL).

Elixir's stager moves due jobs with a plain ``UPDATE ... WHERE id IN (due rows)`` that takes
no lock first and does not check the state again (played in SQL by ``tests/elixir_sql.py``).
Beside a second stager that statement can make a job that a node already claimed available
again. These tests show the race at the SQL level, and that it cannot happen with ours: only
the leader stages, and our statement locks the rows it moves (SKIP LOCKED) and checks their
state under the lock.

To make the race deterministic, Elixir's statement is held up on another row (``K``, which
it updates first) that a third transaction keeps locked; meanwhile the job ``J`` is staged
and claimed; then the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, worker
from tests import elixir_sql
from tests.helpers import eventually, more_calls, spy

RUNS: dict[int | None, list[str]] = {}
QUEUE = "stage_q"


@pytest.fixture(autouse=True)
def _clean_runs() -> Iterator[None]:
    RUNS.clear()  # job ids restart in each test's schema
    yield
    RUNS.clear()


@worker(queue=QUEUE)
class StagingRecordWorker:
    async def process(self, job: Job) -> None:
        RUNS.setdefault(job.id, []).append(job.attempted_by[0] if job.attempted_by else "?")


async def due_job(conn: Any, queue: str = QUEUE, *, ago: float = 60.0) -> int:
    """A scheduled job that fell due ``ago`` seconds ago (older is staged later by Elixir)."""
    cur = await conn.execute(
        "INSERT INTO oban_jobs (state, queue, worker, args, scheduled_at) VALUES ('scheduled', "
        "%s, %s, '{}', timezone('UTC', now()) - make_interval(secs => %s)) RETURNING id",
        (queue, f"{__name__}.StagingRecordWorker", ago),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def state_of(conn: Any, job_id: int) -> tuple[str, int]:
    cur = await conn.execute("SELECT state::text, attempt FROM oban_jobs WHERE id = %s", (job_id,))
    row = await cur.fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


async def lock_waiting(conn: Any, pid: int) -> bool:
    cur = await conn.execute(
        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def blocker(conn: Any) -> int:
    """Row K: due later than the other jobs and inserted before them, so Elixir's statement
    updates it first whichever way it joins."""
    return await due_job(conn, "stage_other_q", ago=1.0)


@contextlib.asynccontextmanager
async def elixir_stager_held_up(
    pool: AsyncConnectionPool[Any], prefix: str, watcher: Any, k: int
) -> AsyncIterator[asyncio.Task[list[tuple[Any, ...]]]]:
    """Elixir's stage statement, started now and held up on row ``k`` until the block
    exits: K's lock is then released and the statement goes on with the rows it read
    before. Yields its task."""
    async with (
        elixir_sql.session(pool, prefix) as holder,
        elixir_sql.session(pool, prefix) as elixir,
    ):
        await holder.set_autocommit(False)
        await holder.execute("SELECT 1 FROM oban_jobs WHERE id = %s FOR UPDATE", (k,))
        await elixir.execute("SET lock_timeout = '20s'")
        # The row order is the subquery's (scheduled_at DESC), as a nested loop keeps it.
        await elixir.execute("SET enable_hashjoin = off")
        await elixir.execute("SET enable_mergejoin = off")
        task = asyncio.create_task(elixir_sql.stage(elixir))
        try:
            pid = elixir.info.backend_pid
            await eventually(lambda: lock_waiting(watcher, pid), message="Elixir's stager waits")
            yield task
        finally:
            await holder.rollback()
            await holder.set_autocommit(True)
            await asyncio.wait_for(task, 20)
            await elixir.execute("RESET ALL")


# ---------------------------------------------------------------------------------------------
# The race, at the SQL level
# ---------------------------------------------------------------------------------------------


async def test_two_stagers_let_elixirs_resurrect_a_job_our_node_claimed(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str
) -> None:
    # What happened when every Python node staged beside an Elixir leader.
    oban = make_oban()  # the engine only: its stage and fetch statements
    engine = await oban._ready()
    async with elixir_sql.session(pool, prefix) as watcher:
        k = await blocker(watcher)
        j = await due_job(watcher)
        async with elixir_stager_held_up(pool, prefix, watcher, k) as elixir:
            # Our statement skips the locked K, stages J; a producer claims J.
            assert await engine.stage_jobs([QUEUE], 10) == {QUEUE: 1}
            [claimed] = await engine.fetch_jobs(QUEUE, 1, "py-node", str(uuid.uuid4()))
            assert claimed.id == j
            assert await state_of(watcher, j) == ("executing", 1)
        # Elixir's statement read J as scheduled before; it overwrites the claim.
        assert (j, QUEUE, "scheduled") in elixir.result()
        assert await state_of(watcher, j) == ("available", 1)


async def test_our_stage_statement_never_overwrites_a_claimed_row(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str
) -> None:
    oban = make_oban()
    engine = await oban._ready()
    async with (
        elixir_sql.session(pool, prefix) as watcher,
        elixir_sql.session(pool, prefix) as other,
    ):
        j = await due_job(watcher)
        # Another node (Elixir's stager, then its producer) holds J, mid-transaction.
        await other.set_autocommit(False)
        await elixir_sql.stage(other)
        await other.execute(
            "UPDATE oban_jobs SET state = 'executing', attempt = 1, "
            "attempted_at = timezone('UTC', now()) WHERE id = %s",
            (j,),
        )
        # Ours neither waits for the lock nor takes the row.
        assert await asyncio.wait_for(engine.stage_jobs(None, 10), 2.0) == {}
        await other.commit()
        await other.set_autocommit(True)
        assert await engine.stage_jobs(None, 10) == {}
        assert await state_of(watcher, j) == ("executing", 1)


async def test_in_a_cluster_led_by_elixir_our_node_never_stages_and_runs_the_job_once(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str
) -> None:
    async with elixir_sql.session(pool, prefix) as watcher:
        await elixir_sql.write_peer(watcher, name="Oban", node="elixir@host-1", expires_in=60)
        node = make_oban(
            leader={"interval": 1},
            node="py-node",
            queues={QUEUE: 1},
            stager={"interval": 0.05},
            notifier={"poll_interval": 0.05},
        )
        stages = spy(node, "stage_jobs")
        elections = spy(node, "elect_leader")
        await node.start()
        k = await blocker(watcher)
        j = await due_job(watcher)
        async with elixir_stager_held_up(pool, prefix, watcher, k):
            await more_calls(elections, extra=2)  # a second: twenty stager intervals
            assert await state_of(watcher, j) == ("scheduled", 0)
        await elixir_sql.notify(watcher, prefix, "insert", {"queue": QUEUE})

        async def completed() -> bool:
            return (await state_of(watcher, j))[0] == "completed"

        await eventually(completed, message="the job staged by Elixir runs on our node")
        assert await state_of(watcher, j) == ("completed", 1)
        assert RUNS[j] == ["py-node"]
        assert stages == []
        assert node.is_leader is False


# ---------------------------------------------------------------------------------------------
# One stager per cluster
# ---------------------------------------------------------------------------------------------


async def test_a_job_elixir_stages_wakes_our_producer_through_the_insert_notice(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str
) -> None:
    async with elixir_sql.session(pool, prefix) as watcher:
        await elixir_sql.write_peer(watcher, name="Oban", node="elixir@host-1", expires_in=60)
        # Producers poll only every 30 s: a prompt run can only come from the notice.
        node = make_oban(node="py-node", queues={QUEUE: 1}, notifier={"poll_interval": 30})
        await node.start()
        j = await due_job(watcher)
        assert await state_of(watcher, j) == ("scheduled", 0)

        assert [row[0] for row in await elixir_sql.stage(watcher)] == [j]
        await elixir_sql.notify(watcher, prefix, "insert", {"queue": QUEUE})

        async def completed() -> bool:
            return (await state_of(watcher, j))[0] == "completed"

        await eventually(completed, timeout=1.0, message="our node runs it within a second")


async def test_the_leader_stages_every_queue_and_wakes_the_other_nodes(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str, dsn: str
) -> None:
    leader = make_oban(node="py-leader", queues={"stage_idle_q": 1}, stager={"interval": 0.1})
    await leader.start()
    assert leader.is_leader is True
    follower = make_oban(
        node="py-follower", leadership=False, queues={QUEUE: 1}, notifier={"poll_interval": 30}
    )
    stages = spy(follower, "stage_jobs")
    await follower.start()

    async with await AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{prefix}.oban_insert"')
        job = await follower.enqueue(StagingRecordWorker.new({}, scheduled_in=0.5))
        assert job.state == "scheduled"

        async def completed() -> bool:
            found = await follower.get_job(job)
            return found is not None and found.state == "completed"

        await eventually(completed, timeout=3.0, message="the follower runs the staged job")
        notices = [orjson.loads(n.payload) async for n in listener.notifies(timeout=0.5)]
    assert RUNS[job.id] == ["py-follower"]
    assert stages == []  # the leader staged it, though it runs no such queue
    assert {"queue": QUEUE} in notices  # as Elixir's stager sends it: Elixir nodes wake too
