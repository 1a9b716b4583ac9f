"""Benchmark driver for pgqueuer 1.6.0, through its documented public API.

Run with the interpreter of the pgqueuer venv the orchestrator creates under /tmp. One
workload per process; prints one JSON line (see ``_common.py``). pgqueuer's tables
(``pgqueuer``, ``pgqueuer_log``, ``pgqueuer_statistics``, ...) are installed with
``Queries.install()`` in the database named in ``--dsn`` (its own database).

How the workloads map onto pgqueuer:

- enqueue: ``Queries(driver).enqueue(...)``: lists of entrypoints/payloads/priorities for a
  batch, scalars for one job. A job's payload is ``json.dumps({"i": i}).encode()`` (oban
  serializes ``{"i": i}`` to JSON itself), built inside the timed span.
- a running node: ``PgQueuer(driver)`` with one entrypoint, ``pgq.run()`` with its defaults
  (batch_size 10, dequeue_timeout 30 s, ...) except the concurrency C. ``--limit-mode``:
  ``worker`` (default) ``run(max_concurrent_tasks=C)``, the cap on the jobs this worker holds,
  like oban's per-node queue limit (pgqueuer requires C >= 2 x batch_size, so below 20 it falls
  back to the entrypoint limit); ``entrypoint``: ``@entrypoint(..., concurrency_limit=C)``, a
  cluster-wide cap enforced in the dequeue SQL; ``none``: no cap at all (diagnostic).
- the node has its own connection, and enqueues go through a second one (a producer), as in
  an application; ``--driver`` picks asyncpg (the README's default) or psycopg.

What "completed" means here: pgqueuer deletes a finished job from ``pgqueuer`` and writes a
``successful`` row to ``pgqueuer_log`` in the same statement (after its log buffer flushes).
A run is timed until the handlers ran every job AND ``pgqueuer`` is empty; it is then checked
that ``pgqueuer_log`` holds exactly N ``queued``, N ``picked`` and N ``successful`` rows, each
for N distinct job ids, nothing else, and that the successful ids are exactly the ids the
handlers saw, once each.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import time
from typing import Any

import _common
import psycopg
from _common import BenchError, Meter, Tracker
from pgqueuer import PgQueuer
from pgqueuer.models import Job
from pgqueuer.queries import Queries

ENTRYPOINT = "noop"
LATENCY_ENTRYPOINT = "latency"
TABLES = "pgqueuer, pgqueuer_log, pgqueuer_statistics"
BATCH_SIZE = 10  # PgQueuer.run's default batch_size, which the driver leaves alone


def payload(i: int) -> bytes:
    return json.dumps({"i": i}).encode()


class Connections:
    """Opens connections with the chosen client library and wraps them in pgqueuer drivers."""

    def __init__(self, dsn: str, kind: str) -> None:
        self.dsn = dsn
        self.kind = kind
        self.opened: list[Any] = []

    async def driver(self) -> Any:
        if self.kind == "asyncpg":
            import asyncpg
            from pgqueuer.db import AsyncpgDriver

            conn = await asyncpg.connect(self.dsn)
            self.opened.append(conn)
            return AsyncpgDriver(conn)
        from pgqueuer.db import PsycopgDriver

        pconn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        self.opened.append(pconn)
        return PsycopgDriver(pconn)

    async def close(self) -> None:
        for conn in self.opened:
            await conn.close()


class Database:
    """A dedicated autocommit psycopg connection for truncating and checking."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        return await (await self.conn.execute(query)).fetchall()

    async def truncate(self) -> None:
        await self.conn.execute(f"TRUNCATE {TABLES}")

    async def queue_states(self) -> dict[str, int]:
        rows = await self.rows("SELECT status::text, count(*) FROM pgqueuer GROUP BY 1")
        return {status: count for status, count in rows}

    async def log_states(self) -> dict[str, tuple[int, int]]:
        """status -> (rows, distinct job ids) in pgqueuer_log."""
        rows = await self.rows(
            "SELECT status::text, count(*), count(DISTINCT job_id) FROM pgqueuer_log GROUP BY 1"
        )
        return {status: (count, distinct) for status, count, distinct in rows}

    async def verify_queued(self, name: str, expected: int) -> str:
        queue, logged = await self.queue_states(), await self.log_states()
        if queue != {"queued": expected} or logged != {"queued": (expected, expected)}:
            raise BenchError(
                f"{name}: expected {expected} queued jobs; pgqueuer has {queue}, "
                f"pgqueuer_log has (status: rows, distinct jobs) {logged}"
            )
        return f"pgqueuer: {expected} queued"

    async def verify_completed(self, name: str, expected: int, ran: set[Any]) -> str:
        queue, logged = await self.queue_states(), await self.log_states()
        want = {status: (expected, expected) for status in ("queued", "picked", "successful")}
        if queue or logged != want:
            raise BenchError(
                f"{name}: expected an empty queue and {expected} queued, picked and successful "
                f"log rows; pgqueuer has {queue}, pgqueuer_log has {logged}"
            )
        rows = await self.rows(
            "SELECT s.job_id FROM pgqueuer_log s JOIN pgqueuer_log q"
            " ON q.job_id = s.job_id AND q.status = 'queued' WHERE s.status = 'successful'"
        )
        logged_ids = {row[0] for row in rows}
        if len(logged_ids) != expected or logged_ids != ran:
            raise BenchError(
                f"{name}: {len(logged_ids)} successful jobs were queued ones, and they are "
                f"{'not ' if logged_ids != ran else ''}the ids the handlers ran"
            )
        return f"pgqueuer empty; pgqueuer_log: {expected} picked once and successful, ran once"

    async def all_done(self) -> tuple[bool, str | None]:
        row = await (
            await self.conn.execute(
                "SELECT (SELECT count(*) FROM pgqueuer), (SELECT count(*) FROM pgqueuer_log"
                " WHERE status NOT IN ('queued', 'picked', 'successful'))"
            )
        ).fetchone()
        left, bad = (int(row[0]), int(row[1])) if row else (0, 0)
        if bad:
            return False, f"some jobs did not succeed: {await self.log_states()}"
        return left == 0, None


class Node:
    """A running PgQueuer with one entrypoint that records into ``tracker``."""

    def __init__(self, driver: Any, args: Any, entrypoint: str, tracker: Tracker) -> None:
        self.args = args
        self.pgq = PgQueuer(driver)
        self.task: asyncio.Task[None] | None = None
        self.max_tasks: int | None = None
        per_entrypoint = 0
        if args.limit_mode == "worker" and args.concurrency >= 2 * BATCH_SIZE:
            self.max_tasks = args.concurrency
            self.limit = f"run(max_concurrent_tasks={args.concurrency})"
        elif args.limit_mode in ("worker", "entrypoint"):
            per_entrypoint = args.concurrency
            self.limit = f"entrypoint concurrency_limit={args.concurrency}"
        else:
            self.limit = "no concurrency limit"

        if entrypoint == LATENCY_ENTRYPOINT:

            @self.pgq.entrypoint(LATENCY_ENTRYPOINT, concurrency_limit=per_entrypoint)
            async def latency(job: Job) -> None:
                started = time.perf_counter()
                assert job.payload is not None
                tracker.latencies_ms.append(1000 * (started - float(job.payload)))
                tracker.record(job.id)

        else:

            @self.pgq.entrypoint(ENTRYPOINT, concurrency_limit=per_entrypoint)
            async def noop(job: Job) -> None:
                tracker.record(job.id)

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.max_tasks is not None:
            kwargs["max_concurrent_tasks"] = self.max_tasks
        self.task = asyncio.create_task(self.pgq.run(**kwargs))

    async def stop(self) -> float:
        stop0 = time.perf_counter()
        self.pgq.shutdown.set()
        if self.task:
            await self.task
        return 1000 * (time.perf_counter() - stop0)


class Bench:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.conns = Connections(args.dsn, args.driver)
        self.queries: Queries | None = None
        self.db: Database | None = None

    async def __aenter__(self) -> Bench:
        self.queries = Queries(await self.conns.driver())  # the producer's connection
        self.db = Database(await psycopg.AsyncConnection.connect(self.args.dsn, autocommit=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.db:
            await self.db.conn.close()
        await self.conns.close()

    async def warm_up(self) -> None:
        assert self.db and self.queries
        await self.db.truncate()
        for i in range(20):
            await self.queries.enqueue(ENTRYPOINT, payload(i))
        await self.queries.enqueue([ENTRYPOINT] * 10, [payload(i) for i in range(10)], [0] * 10)
        await self.db.truncate()

    async def node(self, entrypoint: str, tracker: Tracker) -> Node:
        return Node(await self.conns.driver(), self.args, entrypoint, tracker)

    async def wait_completed(self, name: str, tracker: Tracker) -> None:
        assert self.db
        await _common.wait_for_handlers(tracker, name, self.args.timeout)
        await _common.poll_until(name, self.db.all_done, self.args.timeout)

    # Workloads

    async def setup(self) -> dict[str, Any]:
        assert self.queries
        await self.queries.install()
        return {"verified": "schema installed"}

    async def fill(self, count: int) -> dict[str, Any]:
        assert self.db and self.queries
        await self.db.truncate()
        for start in range(0, count, 10_000):
            size = min(count, start + 10_000) - start
            await self.queries.enqueue(
                [ENTRYPOINT] * size, [payload(start + i) for i in range(size)], [0] * size
            )
        return {"verified": await self.db.verify_queued("fill", count)}

    async def bulk(self, count: int) -> dict[str, Any]:
        assert self.db and self.queries
        await self.warm_up()
        with Meter() as meter:
            ids = await self.queries.enqueue(
                [ENTRYPOINT] * count, [payload(i) for i in range(count)], [0] * count
            )
        if len(ids) != count or len(set(ids)) != count:
            raise BenchError(f"bulk: enqueue returned {len(ids)} ids ({len(set(ids))} distinct)")
        return _common.result(meter, count, await self.db.verify_queued("bulk", count))

    async def single(self, count: int) -> dict[str, Any]:
        assert self.db and self.queries
        await self.warm_up()
        calls: list[float] = []
        with Meter() as meter:
            for i in range(count):
                t0 = time.perf_counter()
                await self.queries.enqueue(ENTRYPOINT, payload(i))
                calls.append(1000 * (time.perf_counter() - t0))
        verified = await self.db.verify_queued("single", count)
        return _common.result(meter, count, verified, latencies_ms=calls)

    async def run(self, count: int) -> dict[str, Any]:
        """Run ``count`` jobs pre-inserted by the ``fill`` workload (another process)."""
        assert self.db
        await self.db.verify_queued("run (pre-inserted)", count)
        tracker = Tracker(count)
        node = await self.node(ENTRYPOINT, tracker)
        try:
            with Meter() as meter:
                node.start()
                await self.wait_completed("run", tracker)
        finally:
            stop_ms = await node.stop()
        tracker.check("run")
        verified = await self.db.verify_completed("run", count, tracker.ids)
        return _common.result(meter, count, verified, stop_ms=stop_ms, limit=node.limit)

    async def stream(self, count: int, batch: int) -> dict[str, Any]:
        assert self.db and self.queries
        await self.warm_up()
        tracker = Tracker(count)
        node = await self.node(ENTRYPOINT, tracker)
        node.start()
        try:
            await asyncio.sleep(0.2)  # let start-up finish
            with Meter() as meter:
                for start in range(0, count, batch):
                    size = min(count, start + batch) - start
                    await self.queries.enqueue(
                        [ENTRYPOINT] * size, [payload(start + i) for i in range(size)], [0] * size
                    )
                await self.wait_completed("stream", tracker)
        finally:
            await node.stop()
        tracker.check("stream")
        verified = await self.db.verify_completed("stream", count, tracker.ids)
        return _common.result(meter, count, verified, limit=node.limit)

    async def latency(self, count: int, gap: float) -> dict[str, Any]:
        assert self.db and self.queries
        await self.warm_up()
        tracker = Tracker(count)
        node = await self.node(LATENCY_ENTRYPOINT, tracker)
        node.start()
        try:
            await asyncio.sleep(0.2)  # an idle node: start-up and the first empty fetch done
            with Meter() as meter:
                for _ in range(count):
                    await self.queries.enqueue(
                        LATENCY_ENTRYPOINT, repr(time.perf_counter()).encode()
                    )
                    await asyncio.sleep(gap)
                await self.wait_completed("latency", tracker)
        finally:
            await node.stop()
        tracker.check("latency")
        verified = await self.db.verify_completed("latency", count, tracker.ids)
        return _common.result(meter, count, verified, tracker.latencies_ms, limit=node.limit)


async def run_workload(args: Any) -> dict[str, Any]:
    async with Bench(args) as bench:
        name, count = args.workload, args.count
        if name == "setup":
            return await bench.setup()
        if name == "fill":
            return await bench.fill(count)
        if name == "bulk":
            return await bench.bulk(count)
        if name == "single":
            return await bench.single(count)
        if name == "run":
            return await bench.run(count)
        if name == "stream":
            return await bench.stream(count, args.batch)
        if name == "latency":
            return await bench.latency(count, args.gap_ms / 1000)
    raise BenchError(f"workload {name!r} is not implemented for pgqueuer")


def extra_args(parser: Any) -> None:
    parser.add_argument("--library", default="pgqueuer", help="label for the JSON line")
    parser.add_argument("--driver", choices=("asyncpg", "psycopg"), default="asyncpg")
    parser.add_argument(
        "--limit-mode",
        choices=("entrypoint", "worker", "none"),
        default="worker",
        help="concurrency as run(max_concurrent_tasks=), the entrypoint's concurrency_limit, "
        "or none",
    )


if __name__ == "__main__":
    import logging
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    arguments = _common.parse_args(__doc__.split("\n\n")[0], extra_args)
    version = importlib.metadata.version("pgqueuer")
    sys.exit(
        _common.main(
            arguments.library, version, arguments.workload, lambda: run_workload(arguments)
        )
    )
