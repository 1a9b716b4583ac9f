"""Nodes as real processes: ``python -m oban start`` killed with SIGKILL, PostgreSQL restarted.

The PostgreSQL restart happens on a private server (the ``private_pg`` fixture), never on the
shared test server.

Each node is an ``oban start`` subprocess whose working directory holds the worker module and
an ``oban.toml`` with short cluster intervals. The workers append ``start``/``done`` lines to a
file, so an execution leaves evidence even when its process is killed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from oban.oban import _instances
from tests.helpers import eventually
from tests.pgserver import PrivateServer

OBAN = [sys.executable, "-m", "oban"]

WORKERS = textwrap.dedent(
    """
    import os
    import time

    from oban import worker


    def _log(path, line):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\\n")


    @worker(queue="default")
    class NodesSleeper:
        def process(self, job):
            _log(job.args["log"], f"start {job.id} {os.getpid()} {job.attempt}")
            time.sleep(job.args.get("sleep", 0))
            _log(job.args["log"], f"done {job.id} {os.getpid()} {job.attempt}")
    """
)

CONFIG = textwrap.dedent(
    """
    shutdown_grace_period = 10

    [leader]
    interval = 1.0

    [lifeline]
    interval = 0.5

    [refresher]
    interval = 0.5
    max_age = 2
    """
)

WORKER = "nodes_workers.NodesSleeper"


class LaunchNode(Protocol):
    """Starts an ``oban start`` node on any server."""

    async def __call__(
        self, name: str, *, dsn: str, prefix: str, queues: str = "default:1"
    ) -> Node: ...


#: Starts a node on the shared test server: ``await nodes("node-1", queues="default:2")``.
StartNode = Callable[..., Awaitable["Node"]]


# ---------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------


class Node:
    """One ``oban start`` process; its output goes to a file (a full pipe would block it)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, output: Path) -> None:
        self.proc = proc
        self.name = name
        self.output = output

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 40) -> str:
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return f"--- {self.name} output ---\n" + "\n".join(text.splitlines()[-lines:])

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The nodes' working directory: the worker module and oban.toml."""
    (tmp_path / "nodes_workers.py").write_text(WORKERS)
    (tmp_path / "oban.toml").write_text(CONFIG)
    return tmp_path


@pytest.fixture
async def launch_node(project: Path) -> AsyncIterator[LaunchNode]:
    """``await launch_node("node-1", dsn=..., prefix=...)`` starts a node on any server; all
    are killed at the end."""
    started: list[Node] = []

    async def start(name: str, *, dsn: str, prefix: str, queues: str = "default:1") -> Node:
        output = project / f"{name}.out"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        with output.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                *OBAN,
                "start",
                "--dsn",
                dsn,
                "--prefix",
                prefix,
                "--queues",
                queues,
                "--node",
                name,
                cwd=project,
                env=env,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
        node = Node(proc, name, output)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            await node.kill()


@pytest.fixture
def nodes(dsn: str, prefix: str, launch_node: LaunchNode) -> StartNode:
    """``await nodes("node-1", queues="default:1")`` starts a node on the shared test server."""

    async def start(name: str, queues: str = "default:1") -> Node:
        return await launch_node(name, dsn=dsn, prefix=prefix, queues=queues)

    return start


@dataclass
class Private:
    """Everything of the restart test that lives on its private server."""

    server: PrivateServer
    pool: AsyncConnectionPool[Any]
    prefix: str
    client: Oban

    async def sql(self, query: str, params: tuple[Any, ...] | None = None) -> list[Any]:
        async with self.pool.connection() as conn:
            await conn.execute(f'SET search_path TO "{self.prefix}"')
            try:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []
            finally:
                await conn.execute("RESET search_path")


@pytest.fixture
async def private(private_pg: PrivateServer) -> AsyncIterator[Private]:
    """A pool, an installed schema and a client Oban, all on the test's own server."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        private_pg.dsn, min_size=1, max_size=10, open=False
    )
    await pool.open(wait=True, timeout=10)
    try:
        prefix = "nodes_restart"
        await schema.install(pool, prefix)
        client = Oban(name="nodes_client", pool=pool, prefix=prefix, shutdown_grace_period=5.0)
        try:
            yield Private(private_pg, pool, prefix, client)
        finally:
            await client.stop()
            _instances.pop(client.name, None)
    finally:
        await pool.close()


async def _until(check: Any, *nodes: Node, timeout: float = 5.0, message: str) -> Any:
    """``eventually``, with the nodes' latest output in the failure message."""
    try:
        return await eventually(check, timeout=timeout, message=message)
    except AssertionError as error:
        raise AssertionError("\n".join([str(error), *(node.tail() for node in nodes)])) from None


async def _job(client: Oban, job_id: int | None) -> Job:
    assert job_id is not None
    found = await client.get_job(job_id)
    assert found is not None, f"job {job_id} is missing"
    return found


def _log_lines(log: Path, kind: str, job_id: int | None) -> list[list[str]]:
    """The ``kind`` ("start"/"done") lines for ``job_id``, split: [kind, id, pid, attempt]."""
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines()]
    return [line for line in lines if line[0] == kind and line[1] == str(job_id)]


async def _producer_registered(sql: Any, node: str) -> bool:
    return bool(await sql("SELECT 1 FROM oban_producers WHERE node = %s", (node,)))


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


async def test_kill_9_mid_job_is_rescued_and_completed_once_by_the_other_node(
    make_oban: Callable[..., Oban], nodes: StartNode, project: Path, sql: Callable[..., Any]
) -> None:
    client = make_oban(name="nodes_client")
    log = project / "runs.log"

    first = await nodes("node-1")

    async def first_leads() -> bool:
        rows: list[tuple[Any, ...]] = await sql("SELECT node FROM oban_peers")
        return rows == [("node-1",)]

    await _until(first_leads, first, timeout=20, message="node-1 leads")
    job = await client.enqueue(Job(WORKER, args={"log": str(log), "sleep": 3}))

    async def executing_on_first() -> Job | None:
        found = await _job(client, job.id)
        ok = found.state == "executing" and found.attempted_by[0] == "node-1"
        return found if ok else None

    await _until(executing_on_first, first, timeout=10, message="job executing on node-1")
    await _until(
        lambda: [line[2] for line in _log_lines(log, "start", job.id)] == [str(first.pid)],
        first,
        message="the worker started in process 1",
    )

    second = await nodes("node-2")
    await _until(
        lambda: _producer_registered(sql, "node-2"), second, timeout=20, message="node-2 up"
    )

    # The leader itself dies, mid-job, without any chance to clean up.
    await first.kill()
    assert _log_lines(log, "done", job.id) == []

    async def completed() -> Job | None:
        found = await _job(client, job.id)
        return found if found.state == "completed" else None

    # Lease 1 s, lifeline every 0.5 s, producer stale after 2 s, then a 3 s run: ~7 s.
    done = await _until(completed, second, timeout=20, message="job rescued and completed")

    starts = _log_lines(log, "start", job.id)
    finishes = _log_lines(log, "done", job.id)
    assert 1 <= len(starts) <= 2, starts
    assert [line[2] for line in finishes] == [str(second.pid)], finishes
    assert done.attempted_by[0] == "node-2"
    assert done.attempt == 2
    assert done.meta.get("rescued") == 1
    assert await sql("SELECT node FROM oban_peers") == [("node-2",)]
    assert second.proc.returncode is None, second.tail()


async def test_postgres_restart_loses_no_job_and_runs_none_twice(
    private: Private, launch_node: LaunchNode, project: Path
) -> None:
    # Restarting PostgreSQL kills every connection to it: this test has a server of its own.
    client, sql = private.client, private.sql
    log = project / "runs.log"
    node = await launch_node(
        "node-r", dsn=private.server.dsn, prefix=private.prefix, queues="default:2"
    )
    await _until(lambda: _producer_registered(sql, "node-r"), node, timeout=20, message="node up")

    before = await client.enqueue_many(
        [Job(WORKER, args={"log": str(log), "sleep": 0.4}) for _ in range(6)]
    )
    await _until(
        lambda: any(_log_lines(log, "start", job.id) for job in before),
        node,
        message="jobs running before the restart",
    )

    await asyncio.to_thread(private.server.restart)  # returns once it accepts connections
    await private.pool.check()  # our own pooled connections died with the server

    after = await client.enqueue_many(
        [Job(WORKER, args={"log": str(log), "sleep": 0.1}) for _ in range(5)]
    )
    ids = [job.id for job in before + after]

    async def all_completed() -> bool:
        rows = await sql("SELECT state::text FROM oban_jobs WHERE id = ANY(%s)", (ids,))
        return len(rows) == len(ids) and all(row[0] == "completed" for row in rows)

    await _until(all_completed, node, timeout=30, message="every job completed")
    for job_id in ids:
        assert len(_log_lines(log, "start", job_id)) == 1, (job_id, log.read_text())
        assert len(_log_lines(log, "done", job_id)) == 1, (job_id, log.read_text())
    assert node.proc.returncode is None, node.tail()

    # The node is healthy, not just alive: it still shuts down cleanly.
    node.proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(node.proc.wait(), 20)
    assert code == 0, node.tail()
    assert not await _producer_registered(sql, "node-r")
