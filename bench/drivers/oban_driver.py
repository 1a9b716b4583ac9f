"""Benchmark driver for the two oban implementations: this repository's and oban-py 0.7.0.

Both expose the same public API (``Oban``, ``@worker``, ``Worker.new``/``enqueue``,
``enqueue_many``, ``oban.schema.install``), so one driver serves both: which ``oban`` it
measures is decided by the interpreter that runs it (the project's ``.venv`` for ours, the
oban-py venv the orchestrator creates under /tmp for oban-py).

One workload per process; prints one JSON line (see ``_common.py``). Tables live in the
``public`` schema of the database named in ``--dsn`` (the orchestrator gives each library its
own database). Everything is checked in ``oban_jobs`` afterwards: exact count, state, attempt.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from typing import Any

import _common
import psycopg
from _common import BenchError, Meter, Tracker

from oban import Job, Oban, schema, worker

QUEUE = "bench"
PREFIX = "public"
TRACKER = Tracker(0)


@worker(queue=QUEUE)
class NoopWorker:
    """Does nothing but count itself."""

    async def process(self, job: Job) -> None:
        TRACKER.record(job.id)


@worker(queue=QUEUE)
class LatencyWorker:
    """Records how long after the enqueue call (``args["t0"]``, perf_counter) it started."""

    async def process(self, job: Job) -> None:
        started = time.perf_counter()
        TRACKER.latencies_ms.append(1000 * (started - float(job.args["t0"])))
        TRACKER.record(job.id)


class Database:
    """A dedicated autocommit connection for truncating and checking, outside oban's pool."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def truncate(self) -> None:
        await self.conn.execute("TRUNCATE oban_jobs")

    async def states(self) -> dict[str, tuple[int, int, int]]:
        """state -> (count, min attempt, max attempt)."""
        rows = await (
            await self.conn.execute(
                "SELECT state::text, count(*), min(attempt), max(attempt)"
                " FROM oban_jobs GROUP BY state"
            )
        ).fetchall()
        return {state: (count, lo, hi) for state, count, lo, hi in rows}

    async def verify(self, name: str, expected: int, state: str, attempt: int) -> str:
        states = await self.states()
        if states != {state: (expected, attempt, attempt)}:
            raise BenchError(
                f"{name}: expected exactly {expected} jobs {state!r} with attempt {attempt}; "
                f"oban_jobs has (state: count, min attempt, max attempt) {states}"
            )
        return f"oban_jobs: {expected} {state}, attempt {attempt}"

    async def all_completed(self, expected: int) -> tuple[bool, str | None]:
        row = await (
            await self.conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'completed'),"
                " count(*) FILTER (WHERE state NOT IN ('available', 'executing', 'completed'))"
                " FROM oban_jobs"
            )
        ).fetchone()
        completed, other = (int(row[0]), int(row[1])) if row else (0, 0)
        if other:
            return False, f"some jobs did not complete: {await self.states()}"
        return completed >= expected, None


class Bench:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.pool: Any = None
        self.client: Oban | None = None
        self.db: Database | None = None

    async def __aenter__(self) -> Bench:
        self.pool = await Oban.create_pool(dsn=self.args.dsn)
        conn = await psycopg.AsyncConnection.connect(self.args.dsn, autocommit=True)
        self.db = Database(conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.db:
            await self.db.conn.close()
        if self.pool:
            await self.pool.close()

    def runner(self, concurrency: int) -> Oban:
        """A running node for queue "bench" (library defaults except the limit)."""
        queue: Any = concurrency
        if self.args.debounce_ms is not None:
            queue = {"limit": concurrency, "debounce_interval": self.args.debounce_ms / 1000}
        return Oban(pool=self.pool, prefix=PREFIX, queues={QUEUE: queue}, name="bench-runner")

    async def warm_up(self) -> None:
        """Warm the pool's connections and prepared statements, then empty the table."""
        assert self.db and self.client
        await self.db.truncate()
        for i in range(20):
            await NoopWorker.enqueue({"warmup": i})
        await self.client.enqueue_many([NoopWorker.new({"warmup": i}) for i in range(10)])
        await self.db.truncate()

    async def wait_completed(self, name: str, count: int) -> None:
        """The handlers ran ``count`` jobs, then ``count`` are completed in oban_jobs."""
        assert self.db
        await _common.wait_for_handlers(TRACKER, name, self.args.timeout)
        db = self.db
        await _common.poll_until(name, lambda: db.all_completed(count), self.args.timeout)

    # Workloads

    async def setup(self) -> dict[str, Any]:
        await schema.install(self.pool, PREFIX)
        return {"verified": "schema installed"}

    async def fill(self, count: int) -> dict[str, Any]:
        assert self.db and self.client
        await self.db.truncate()
        for start in range(0, count, 10_000):
            stop = min(count, start + 10_000)
            await self.client.enqueue_many([NoopWorker.new({"i": i}) for i in range(start, stop)])
        return {"verified": await self.db.verify("fill", count, "available", 0)}

    async def bulk(self, count: int) -> dict[str, Any]:
        assert self.db and self.client
        await self.warm_up()
        with Meter() as meter:
            jobs = [NoopWorker.new({"i": i}) for i in range(count)]
            inserted = await self.client.enqueue_many(jobs)
        if len(inserted) != count or any(job.id is None for job in inserted):
            raise BenchError(f"bulk: enqueue_many returned {len(inserted)} jobs, some without id")
        verified = await self.db.verify("bulk", count, "available", 0)
        return _common.result(meter, count, verified)

    async def single(self, count: int) -> dict[str, Any]:
        assert self.db
        await self.warm_up()
        calls: list[float] = []
        with Meter() as meter:
            for i in range(count):
                t0 = time.perf_counter()
                await NoopWorker.enqueue({"i": i})
                calls.append(1000 * (time.perf_counter() - t0))
        verified = await self.db.verify("single", count, "available", 0)
        return _common.result(meter, count, verified, latencies_ms=calls)

    async def run(self, count: int, concurrency: int) -> dict[str, Any]:
        """Run ``count`` jobs pre-inserted by the ``fill`` workload (another process)."""
        global TRACKER
        assert self.db
        await self.db.verify("run (pre-inserted)", count, "available", 0)
        TRACKER = Tracker(count)
        node = self.runner(concurrency)
        try:
            with Meter() as meter:
                await node.start()
                await self.wait_completed("run", count)
        finally:
            stop0 = time.perf_counter()
            await node.stop()
            stop_ms = 1000 * (time.perf_counter() - stop0)
        TRACKER.check("run")
        verified = await self.db.verify("run", count, "completed", 1)
        return _common.result(meter, count, verified + ", each ran once", stop_ms=stop_ms)

    async def stream(self, count: int, batch: int, concurrency: int) -> dict[str, Any]:
        global TRACKER
        assert self.db and self.client
        await self.warm_up()
        TRACKER = Tracker(count)
        node = self.runner(concurrency)
        await node.start()
        try:
            await asyncio.sleep(0.2)  # let start-up finish
            with Meter() as meter:
                for start in range(0, count, batch):
                    stop = min(count, start + batch)
                    await self.client.enqueue_many(
                        [NoopWorker.new({"i": i}) for i in range(start, stop)]
                    )
                await self.wait_completed("stream", count)
        finally:
            await node.stop()
        TRACKER.check("stream")
        verified = await self.db.verify("stream", count, "completed", 1)
        return _common.result(meter, count, verified + ", each ran once")

    async def latency(self, count: int, gap: float, concurrency: int) -> dict[str, Any]:
        global TRACKER
        assert self.db
        await self.warm_up()
        TRACKER = Tracker(count)
        node = self.runner(concurrency)
        await node.start()
        try:
            await asyncio.sleep(0.2)  # an idle node: start-up and the first empty fetch done
            with Meter() as meter:
                for _ in range(count):
                    await LatencyWorker.enqueue({"t0": time.perf_counter()})
                    await asyncio.sleep(gap)
                await self.wait_completed("latency", count)
        finally:
            await node.stop()
        TRACKER.check("latency")
        verified = await self.db.verify("latency", count, "completed", 1)
        return _common.result(meter, count, verified + ", each ran once", TRACKER.latencies_ms)

    async def raw(self, count: int, batch: int) -> dict[str, Any]:
        """The database's own cost of claiming and completing the jobs, without oban."""
        assert self.db
        await self.db.verify("raw (pre-inserted)", count, "available", 0)
        claim = (
            "UPDATE oban_jobs SET state = 'executing', attempt = attempt + 1,"
            " attempted_at = timezone('UTC', now())"
            " WHERE id IN (SELECT id FROM oban_jobs WHERE state = 'available' AND queue = %s"
            " ORDER BY priority, scheduled_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING id"
        )
        complete = (
            "UPDATE oban_jobs SET state = 'completed', completed_at = timezone('UTC', now())"
            " WHERE id = ANY(%s)"
        )
        done = 0
        async with await psycopg.AsyncConnection.connect(self.args.dsn, autocommit=True) as conn:
            with Meter() as meter:
                while True:
                    rows = await (await conn.execute(claim, (QUEUE, batch))).fetchall()
                    if not rows:
                        break
                    await conn.execute(complete, ([row[0] for row in rows],))
                    done += len(rows)
        if done != count:
            raise BenchError(f"raw: claimed {done} jobs, expected {count}")
        verified = await self.db.verify("raw", count, "completed", 1)
        return _common.result(meter, count, verified)


async def run_workload(args: Any) -> dict[str, Any]:
    async with Bench(args) as bench:
        bench.client = Oban(pool=bench.pool, prefix=PREFIX)  # client mode, named "Oban"
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
            return await bench.run(count, args.concurrency)
        if name == "stream":
            return await bench.stream(count, args.batch, args.concurrency)
        if name == "latency":
            return await bench.latency(count, args.gap_ms / 1000, args.concurrency)
        if name == "raw":
            return await bench.raw(count, args.concurrency)
    raise BenchError(f"unknown workload {name!r}")


def extra_args(parser: Any) -> None:
    parser.add_argument("--library", default="oban", help="label for the JSON line")
    parser.add_argument(
        "--debounce-ms", type=float, default=None, help="queue debounce_interval (default: own)"
    )


if __name__ == "__main__":
    import logging
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    arguments = _common.parse_args(__doc__.split("\n\n")[0], extra_args)
    try:
        version = importlib.metadata.version("oban")
    except importlib.metadata.PackageNotFoundError:  # ours from src/ via PYTHONPATH
        version = "src"
    sys.exit(
        _common.main(
            arguments.library, version, arguments.workload, lambda: run_workload(arguments)
        )
    )
