"""A node killed between an ack and its workflow release check (issue 18, proofs): the parent's
completion is committed, the node dies (SIGKILL) before it checks the workflow, and the
leader's sweeper releases the child, which runs once. Real ``python -m oban start`` processes
on both engines.

Node ``b`` starts first and leads (the sweeper runs on the leader); it runs the queue
``second``, where the child goes. Node ``a`` runs the queue ``first``, where the parent goes,
with ``OBAN_TEST_FAULT=after_ack`` (``oban._faults``): it kills itself with SIGKILL right after
its first ack batch commits, before anything else happens in the process (no waiter woken, no
release check). Every run appends ``"<event> <step> <pid> <time>"`` to a ledger file.
"""

from __future__ import annotations

import signal
import sqlite3
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, Workflow, schema
from tests.processes import Launcher, until

DSN = "postgresql://postgres@127.0.0.1:5432/test"

WORKERS = textwrap.dedent(
    """
    import os
    import time

    from oban import worker


    @worker(queue="first")
    class CrashStep:
        def process(self, job):
            with open(job.args["ledger"], "a") as ledger:
                ledger.write(f"start {job.args['step']} {os.getpid()} {time.time()}\\n")
            with open(job.args["ledger"], "a") as ledger:
                ledger.write(f"done {job.args['step']} {os.getpid()} {time.time()}\\n")
            return None
    """
)
WORKER = "crash_workers.CrashStep"

CONFIG = textwrap.dedent(
    """
    [leader]
    interval = 0.5
    """
)


@pytest.fixture(params=["postgres", "sqlite"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A DSN with a fresh schema (PostgreSQL) or file (SQLite) for the nodes and the client;
    the ``prefix`` the nodes use is ``crash``."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
        return
    prefix = f"crash_{uuid.uuid4().hex[:10]}"
    request.node.crash_prefix = prefix
    yield DSN
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')


def _ledger(path: Path) -> list[tuple[str, str, int, float]]:
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(event, step, int(pid), float(at)) for event, step, pid, at in lines]


async def test_the_sweeper_releases_the_child_of_a_node_killed_after_its_ack(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    (tmp_path / "crash_workers.py").write_text(WORKERS)
    (tmp_path / "oban.toml").write_text(CONFIG)
    prefix = getattr(request.node, "crash_prefix", "public")
    ledger = tmp_path / "ledger.txt"
    client = Oban(dsn=database, prefix=prefix, name="crash-client")
    launcher = Launcher(tmp_path)
    try:
        if database.startswith("postgresql"):
            async with AsyncConnectionPool(database, min_size=1, max_size=1) as pool:
                await schema.install(pool, prefix)
        await client.get_job(1)  # opens the pool; the SQLite engine installs the file
        args = ["--dsn", database, "--prefix", prefix]
        leader = await launcher.start("b", *args, "--queues", "second:2", "--node", "b")
        await until(lambda: _leads(client, "b"), leader, timeout=20, message="b leads")
        dying = await launcher.start(
            "a",
            *args,
            "--queues",
            "first:1",
            "--node",
            "a",
            env={"OBAN_TEST_FAULT": "after_ack"},
        )
        await until(lambda: _runs_queue(client, "first"), dying, timeout=20, message="a runs first")

        workflow = Workflow().add(
            "parent", Job(WORKER, queue="first", args={"step": "parent", "ledger": str(ledger)})
        )
        workflow.add(
            "child",
            Job(WORKER, queue="second", args={"step": "child", "ledger": str(ledger)}),
            deps="parent",
        )
        jobs = await client.enqueue_many(workflow)
        parent, child = jobs[0], jobs[1]

        code = await dying.exit_code(timeout=20)
        assert code == -signal.SIGKILL, (code, dying.tail())
        died = time.time()
        parent_row = await client.get_job(parent.id or 0)
        assert parent_row is not None and parent_row.state == "completed", dying.tail()
        # Died before its release check: the child waits for the sweeper.
        child_row = await client.get_job(child.id or 0)
        assert child_row is not None

        async def child_completed() -> bool:
            row = await client.get_job(child.id or 0)
            return row is not None and row.state == "completed"

        await until(child_completed, leader, timeout=15, message="the child completed")
        runs = _ledger(ledger)
        assert [(e, s) for e, s, _pid, _at in runs] == [
            ("start", "parent"),
            ("done", "parent"),
            ("start", "child"),
            ("done", "child"),
        ], runs
        assert runs[0][2] == dying.pid and runs[2][2] == leader.pid, (runs, dying.pid)
        assert runs[2][3] >= died - 0.5, "the child started before the node that acked died"
    finally:
        await launcher.kill_all()
        await client.stop()


async def _leads(client: Oban, node: str) -> bool:
    rows = await _sql(client, "SELECT node FROM oban_peers", "SELECT node FROM oban_leaders")
    return [tuple(r) for r in rows] == [(node,)]


async def _runs_queue(client: Oban, queue: str) -> bool:
    query = "SELECT queue FROM oban_producers"
    return (queue,) in [tuple(r) for r in await _sql(client, query, query)]


async def _sql(client: Oban, pg: str, lite: str) -> list[Any]:
    if client.pool is not None:
        async with client.pool.connection() as conn:
            cur = await conn.execute(pg.replace("oban_", f'"{client.prefix}".oban_'))
            return list(await cur.fetchall())
    assert client.sqlite_path is not None
    with sqlite3.connect(client.sqlite_path) as conn:
        return list(conn.execute(lite).fetchall())


def test_an_unknown_fault_point_stops_the_import() -> None:
    import subprocess
    import sys

    from tests.processes import subprocess_env

    result = subprocess.run(
        [sys.executable, "-c", "import oban"],
        env=subprocess_env({"OBAN_TEST_FAULT": "after_akc"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "OBAN_TEST_FAULT must be one of after_ack, got 'after_akc'" in result.stderr
