"""Harness for tests that run nodes as real ``python -m oban start`` processes.

Each node is an ``oban start`` subprocess whose working directory (the ``project`` fixture)
holds the worker module and an ``oban.toml`` with short cluster intervals. The workers append
lines to a ledger file, so an execution leaves evidence even when its process is killed:

- ``NodesSleeper`` (sync): ``start <id> <pid> <attempt>`` and ``done <id> <pid> <attempt>``.
- ``LifecycleSleeper`` (sync): sleeps ``args["sleeps"][attempt - 1]`` (the last entry for
  later attempts) and writes ``start <id> <pid> <attempt> <unix time>`` and
  ``done <id> <pid> <attempt> <unix time> cancelled=<job.cancelled()>``.
- ``LifecycleAsync`` (async): the same ``start`` line, ``done`` when its sleep ends, and
  ``finally <id> <pid> <attempt> <unix time>`` from its ``finally`` block in any case.

Import the fixtures (``project``, ``launch_node``, ``nodes``, ``private``) into a test module
to use them. The nodes are ``tests.processes.Node`` objects.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from oban.oban import _instances
from tests.pgserver import PrivateServer
from tests.processes import Launcher, Node, until

WORKERS = textwrap.dedent(
    """
    import asyncio
    import os
    import time

    from oban import worker


    def _log(path, line):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\\n")


    def _sleep_for(job):
        sleeps = job.args.get("sleeps", [0])
        return sleeps[min(job.attempt, len(sleeps)) - 1]


    def _tag(kind, job):
        return f"{kind} {job.id} {os.getpid()} {job.attempt} {time.time():.3f}"


    @worker(queue="default")
    class NodesSleeper:
        def process(self, job):
            _log(job.args["log"], f"start {job.id} {os.getpid()} {job.attempt}")
            time.sleep(job.args.get("sleep", 0))
            _log(job.args["log"], f"done {job.id} {os.getpid()} {job.attempt}")


    @worker(queue="default")
    class LifecycleSleeper:
        def process(self, job):
            _log(job.args["log"], _tag("start", job))
            time.sleep(_sleep_for(job))
            _log(job.args["log"], _tag("done", job) + f" cancelled={job.cancelled()}")


    @worker(queue="default")
    class LifecycleAsync:
        async def process(self, job):
            _log(job.args["log"], _tag("start", job))
            try:
                await asyncio.sleep(_sleep_for(job))
                _log(job.args["log"], _tag("done", job))
            finally:
                _log(job.args["log"], _tag("finally", job))
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
SYNC_WORKER = "nodes_workers.LifecycleSleeper"
ASYNC_WORKER = "nodes_workers.LifecycleAsync"


class LaunchNode(Protocol):
    """Starts an ``oban start`` node on any server (``env``: extra environment variables)."""

    async def __call__(
        self,
        name: str,
        *,
        dsn: str,
        prefix: str,
        queues: str = "default:1",
        env: Mapping[str, str] | None = None,
    ) -> Node: ...


#: Starts a node on the shared test server: ``await nodes("node-1", queues="default:2")``.
StartNode = Callable[..., Awaitable["Node"]]


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
    launcher = Launcher(project)

    async def start(
        name: str,
        *,
        dsn: str,
        prefix: str,
        queues: str = "default:1",
        env: Mapping[str, str] | None = None,
    ) -> Node:
        args = ["--dsn", dsn, "--prefix", prefix, "--queues", queues, "--node", name]
        return await launcher.start(name, *args, env=env)

    try:
        yield start
    finally:
        await launcher.kill_all()


@pytest.fixture
def nodes(dsn: str, prefix: str, launch_node: LaunchNode) -> StartNode:
    """``await nodes("node-1", queues="default:1")`` starts a node on the shared test server
    (``env={...}`` adds environment variables)."""

    async def start(
        name: str, queues: str = "default:1", env: Mapping[str, str] | None = None
    ) -> Node:
        return await launch_node(name, dsn=dsn, prefix=prefix, queues=queues, env=env)

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


#: ``eventually``, with the nodes' latest output in the failure message.
_until = until


async def _job(client: Oban, job_id: int | None) -> Job:
    assert job_id is not None
    found = await client.get_job(job_id)
    assert found is not None, f"job {job_id} is missing"
    return found


def _log_lines(log: Path, kind: str, job_id: int | None) -> list[list[str]]:
    """The ``kind`` ("start"/"done"/...) lines for ``job_id``, split:
    [kind, id, pid, attempt, ...]."""
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines()]
    return [line for line in lines if line[0] == kind and line[1] == str(job_id)]


async def _producer_registered(sql: Any, node: str) -> bool:
    return bool(await sql("SELECT 1 FROM oban_producers WHERE node = %s", (node,)))
