"""Nodes in separate processes for the cross-process conformance tests, on both engines.

Each node is a ``python -m oban start`` subprocess whose working directory (``tmp_path``)
holds the worker module and an ``oban.toml`` with short heartbeat intervals (and the default
1 s signal poll). PostgreSQL nodes use the shared test server with a fresh schema per test
(``x_<hex>``, dropped afterwards); SQLite nodes a file in ``tmp_path``. A client ``Oban`` in
the test process (node "client", no queues, no leadership) drives them through the public API.
Decorate each test with :func:`with_node_output`: a failing assertion then shows what every
node logged.

The workers append to a ledger file opened with ``O_APPEND``, so every line of every process
lands whole: ``<kind> <job id> <pid> <unix time> [detail]`` with kind

- ``start``: ``process`` began;
- ``done``: ``process`` reached its end (the sync worker adds ``cancelled=<job.cancelled()>``);
- ``finally``: the async worker's ``finally`` block ran (also when its task was cancelled);
- ``seen``: the sync worker first saw ``job.cancelled()`` turn true (it keeps sleeping and
  returns normally afterwards: its result must be discarded).

Import the ``cluster`` fixture into a test module by assignment to use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from oban._producer import QueueInfo
from oban.oban import _instances
from tests.helpers import drop_schema, eventually, stop_all
from tests.processes import Node, kill_all

MODULE = "xproc_workers"
ASYNC_WORKER = f"{MODULE}.XprocSleep"
SYNC_WORKER = f"{MODULE}.XprocSyncSleep"

#: The signal poll interval (the default): SQLite nodes read other processes' signals this
#: often, and poll for jobs inserted by other processes this often.
POLL_INTERVAL = 1.0
REFRESH_INTERVAL = 0.3
#: A node whose producer rows are older than this is left out of ``Oban.queues()``; the
#: client is configured with the same value (``queues()`` applies the caller's own).
MAX_AGE = 1.5
#: "Within about a second": the bound every cross-process effect is asserted within (a
#: 1 s poll plus a noisy 2-core machine).
BOUND = 3.0

WORKERS = textwrap.dedent(
    """
    import asyncio
    import os
    import time

    from oban import worker


    def _log(job, kind, detail=""):
        line = f"{kind} {job.id} {os.getpid()} {time.time():.3f}{detail}\\n"
        fd = os.open(job.args["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


    @worker(queue="default")
    class XprocSleep:
        async def process(self, job):
            _log(job, "start")
            try:
                await asyncio.sleep(job.args.get("sleep", 0))
                _log(job, "done")
            finally:
                _log(job, "finally")


    @worker(queue="default")
    class XprocSyncSleep:
        def process(self, job):
            _log(job, "start")
            deadline = time.monotonic() + job.args.get("sleep", 0)
            seen = False
            while time.monotonic() < deadline:
                if not seen and job.cancelled():
                    seen = True
                    _log(job, "seen")
                time.sleep(0.02)
            _log(job, "done", f" cancelled={job.cancelled()}")
            return None
    """
)

SLOW_ELECTION_MODULE = "xproc_slow_election"

#: Imported by a node started with ``--cron-modules xproc_slow_election``.
SLOW_ELECTION = textwrap.dedent(
    """
    import asyncio

    from oban._leader import Leader

    _tick = Leader.tick_safely
    _slowed = []


    async def _slow_first_tick(self):
        if not _slowed:
            _slowed.append(True)
            await asyncio.sleep(1.0)
        await _tick(self)


    Leader.tick_safely = _slow_first_tick
    """
)

CONFIG = textwrap.dedent(
    f"""
    shutdown_grace_period = 5

    [notifier]
    poll_interval = {POLL_INTERVAL}

    [leader]
    interval = 1.0

    [lifeline]
    interval = 0.5

    [refresher]
    interval = {REFRESH_INTERVAL}
    max_age = {MAX_AGE}
    """
)


#: Marks a node's output in a failure message.
OUTPUT_MARK = "output of the node process"


def with_node_output(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Coroutine[Any, Any, None]]:
    """Decorate a test that takes the ``cluster`` fixture: any assertion that fails in it
    reports the output of every node it started (those of ``Cluster.until`` already do)."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> None:
        try:
            await test(*args, **kwargs)
        except AssertionError as error:
            cluster = kwargs["cluster"]
            if OUTPUT_MARK in str(error) or not isinstance(cluster, Cluster):
                raise
            raise AssertionError(f"{error}\n{cluster.tails()}") from error

    return run


class XprocNode(Node):
    """A node of :class:`Cluster`: its output, in a failure message, with its pid and status."""

    kill_timeout = 10.0

    def tail(self, lines: int = 60) -> str:
        status = "running" if self.proc.returncode is None else f"exited {self.proc.returncode}"
        shown = "\n".join(self.text().splitlines()[-lines:])
        return f"--- {self.name} (pid {self.pid}, {status}) {OUTPUT_MARK} ---\n{shown}"


@dataclass
class Entry:
    """One ledger line."""

    kind: str
    job_id: int
    pid: int
    at: float
    detail: str


@dataclass
class Cluster:
    """The test's database, its client instance and the node processes it started."""

    engine: str
    dsn: str
    prefix: str | None
    project: Path
    client: Oban
    pool: AsyncConnectionPool[Any] | None
    nodes: list[XprocNode] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.project / "ledger.log"

    @property
    def db(self) -> Path:
        return self.project / "jobs.db"

    # Nodes

    async def launch(
        self, name: str, queues: str, *, ready: bool = True, slow_election: bool = False
    ) -> XprocNode:
        """Start ``oban start --node name --queues queues`` and wait until every one of its
        queues has a producer row and, with ``ready``, until its start finished (it logged
        "running queues"). ``slow_election``: its first leader election takes 1 s longer, as
        on a busy database, which widens the time between its producer rows appearing and
        the end of its start."""
        args = ["--dsn", self.dsn, "--queues", queues, "--node", name]
        if self.prefix is not None:
            args += ["--prefix", self.prefix]
        if slow_election:
            args += ["--cron-modules", SLOW_ELECTION_MODULE]
        node = await XprocNode.start(
            name,
            *args,
            cwd=self.project,
            output=self.project / f"{name}.out",
            stdin=asyncio.subprocess.DEVNULL,
        )
        self.nodes.append(node)
        wanted = sorted(part.split(":")[0].strip() for part in queues.split(","))

        async def registered() -> bool:
            if node.proc.returncode is not None:
                raise AssertionError(f"{name} exited early\n{self.tails()}")
            return await self.producer_queues(name) == wanted

        await self.until(registered, timeout=30, message=f"{name} registered {wanted}")
        if ready:
            await self.until(
                lambda: f"node {name} running queues" in node.text(),
                timeout=30,
                message=f"{name} started",
            )
        return node

    def tails(self) -> str:
        return "\n".join(node.tail() for node in self.nodes) or "(no nodes started)"

    # Waiting

    async def until(self, check: Callable[[], Any], *, timeout: float = BOUND, message: str) -> Any:
        """``eventually`` (every 20 ms), with every node's output in the failure message."""
        try:
            return await eventually(check, timeout=timeout, interval=0.02, message=message)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.tails()}") from None

    async def timed(
        self, check: Callable[[], Any], *, since: float, timeout: float = BOUND, message: str
    ) -> tuple[Any, float]:
        """Wait for ``check`` (see :meth:`until`); return its value and the seconds elapsed
        since ``since`` (a ``time.monotonic()``), printed as the measured latency."""
        value = await self.until(check, timeout=timeout, message=message)
        elapsed = time.monotonic() - since
        print(f"[{self.engine}] {message}: {elapsed:.3f} s")
        return value, elapsed

    async def holds(
        self, check: Callable[[], Awaitable[bool]], *, seconds: float, message: str
    ) -> None:
        """Fail as soon as ``check`` is false during the next ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            if not await check():
                raise AssertionError(f"{message} no longer holds\n{self.tails()}")
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.05)

    # Reading what the nodes did

    async def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement on the test database, on a connection of its own (``%s``
        placeholders; ``?`` for SQLite is substituted)."""
        if self.pool is None:
            return await asyncio.to_thread(_sqlite_query, self.db, query.replace("%s", "?"), params)
        async with self.pool.connection() as conn:
            await conn.execute(f'SET search_path TO "{self.prefix}"')
            try:
                cur = await conn.execute(query, params)
                rows = await cur.fetchall() if cur.description else []
            finally:
                await conn.execute("RESET search_path")
        return [tuple(row) for row in rows]

    async def sqlite_many(self, query: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """``executemany`` on the SQLite file, in one transaction of its own connection."""
        assert self.pool is None, "SQLite only"
        await asyncio.to_thread(_sqlite_many, self.db, query, rows)

    async def producer_queues(self, node: str) -> list[str]:
        rows = await self.sql("SELECT queue FROM oban_producers WHERE node = %s", (node,))
        return sorted(str(row[0]) for row in rows)

    async def remote(self, node: str, queue: str) -> QueueInfo | None:
        """``node``'s ``queue`` as the client's :meth:`Oban.queues` reports it."""
        for info in await self.client.queues():
            if info.node == node and info.queue == queue:
                return info
        return None

    async def job(self, job_id: int | None) -> Job:
        assert job_id is not None
        found = await self.client.get_job(job_id)
        assert found is not None, f"job {job_id} is missing\n{self.tails()}"
        return found

    async def state(self, job_id: int | None) -> str:
        return (await self.job(job_id)).state

    def entries(self, kind: str | None = None, job_id: int | None = None) -> list[Entry]:
        if not self.ledger.exists():
            return []
        found = []
        for line in self.ledger.read_text().splitlines():
            parts = line.split(maxsplit=4)
            entry = Entry(parts[0], int(parts[1]), int(parts[2]), float(parts[3]), "")
            entry.detail = parts[4] if len(parts) > 4 else ""
            if kind in (None, entry.kind) and job_id in (None, entry.job_id):
                found.append(entry)
        return found

    def job_args(self, **args: Any) -> dict[str, Any]:
        return {"ledger": str(self.ledger), **args}


def _sqlite_query(db: Path, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, timeout=10)
    try:
        rows = conn.execute(query, params).fetchall()
        conn.commit()
        return [tuple(row) for row in rows]
    finally:
        conn.close()


def _sqlite_many(db: Path, query: str, rows: Sequence[tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        with conn:
            conn.executemany(query, rows)
    finally:
        conn.close()


@pytest.fixture
async def cluster(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """The test's database (a fresh PostgreSQL schema, or a SQLite file in ``tmp_path``), the
    project directory the nodes run in, and a client ``Oban`` on the same database (named
    "Oban" as the nodes, node "client", no queues, no leadership). Every node is killed at the
    end, then the client stopped."""
    (tmp_path / f"{MODULE}.py").write_text(WORKERS)
    (tmp_path / f"{SLOW_ELECTION_MODULE}.py").write_text(SLOW_ELECTION)
    (tmp_path / "oban.toml").write_text(CONFIG)
    options: dict[str, Any] = {
        "node": "client",
        "leadership": False,
        "refresher": {"interval": REFRESH_INTERVAL, "max_age": MAX_AGE},
        "notifier": {"poll_interval": POLL_INTERVAL},
        "shutdown_grace_period": 5.0,
    }
    pool: AsyncConnectionPool[Any] | None = None
    prefix: str | None = None
    async with contextlib.AsyncExitStack() as stack:
        # Each step's undoing is registered before the next can fail: the nodes are killed
        # first, then the client stopped, the schema dropped and the pool closed.
        if engine == "postgres":
            dsn = str(request.getfixturevalue("dsn"))
            pool = AsyncConnectionPool(dsn, min_size=1, max_size=10, open=False)
            stack.push_async_callback(pool.close)
            await pool.open(wait=True, timeout=10)
            prefix = f"x_{uuid.uuid4().hex[:12]}"
            stack.push_async_callback(drop_schema, pool, prefix)
            await schema.install(pool, prefix)
            client = Oban(pool=pool, prefix=prefix, **options)
        else:
            dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
            client = Oban(dsn=dsn, **options)
        stack.callback(_instances.pop, client.name, None)
        stack.push_async_callback(stop_all, [client], timeout=15)
        cluster = Cluster(engine, dsn, prefix, tmp_path, client, pool)
        stack.push_async_callback(kill_all, cluster.nodes)
        # The client installs the SQLite schema before any node opens the file.
        await client.queues()
        yield cluster
