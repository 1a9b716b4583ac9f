"""Throughput and latency benchmark for oban against a real PostgreSQL.

Run with ``make bench`` (or ``.venv/bin/python bench/run.py``; ``--help`` lists the flags,
``--quick`` divides every count by 10). Uses OBAN_BENCH_DSN (default
postgresql://postgres@127.0.0.1:5432/test) and its own PostgreSQL schema, ``oban_bench``,
which is dropped and re-created at the start. ``oban_jobs`` is truncated between workloads.

Workloads:

1. bulk enqueue: N jobs in one ``enqueue_many`` call.
2. single enqueue: N sequential ``Worker.enqueue`` calls.
3. run N pre-inserted no-op jobs, at each ``--concurrency``, timed from ``start()`` until the
   database shows every job completed; compared with a raw psycopg claim/complete loop
   (``LIMIT`` = the same concurrency) measured in the same run.
4. enqueue while running: N jobs as ``enqueue_many`` batches into a running queue.
5. insert-to-start latency on an idle node, one job at a time with a short gap.

Every workload is verified in the database (exact count, expected state, one attempt each)
and the script exits non-zero if anything is off.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema, worker

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
QUEUE = "bench"
POLL_SECONDS = 0.01


class BenchError(Exception):
    """A workload did not end in the expected database state."""


# Workers and the bookkeeping they feed


class Tracker:
    """Counts executions in the workers so the harness knows when to look at the database."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, target: int) -> None:
        self.target = target
        self.calls = 0
        self.ids: set[int] = set()
        self.latencies: list[float] = []
        self.done = asyncio.Event()
        if target == 0:
            self.done.set()

    def record(self, job_id: int | None) -> None:
        self.calls += 1
        if job_id is not None:
            self.ids.add(job_id)
        if self.calls >= self.target:
            self.done.set()


TRACKER = Tracker()


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
        TRACKER.latencies.append(started - float(job.args["t0"]))
        TRACKER.record(job.id)


# Results


@dataclass
class Result:
    name: str
    jobs: int
    seconds: float
    cpu_seconds: float
    rss_mb: float
    latencies_ms: list[float] = field(default_factory=list)
    ratio: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float("inf")

    @property
    def cpu_ms_per_job(self) -> float:
        return 1000 * self.cpu_seconds / self.jobs if self.jobs else 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the process's peak so far, not per workload.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Meter:
    """Wall time (perf_counter) and process CPU time (process_time) of one measured span."""

    def __enter__(self) -> Meter:
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.cpu0

    def result(self, name: str, jobs: int, **extra: Any) -> Result:
        return Result(name, jobs, self.seconds, self.cpu_seconds, peak_rss_mb(), **extra)


def report(result: Result) -> None:
    line = (
        f"  {result.name}: {result.jobs} jobs in {result.seconds:.3f}s = {result.rate:,.0f} jobs/s,"
        f" CPU {result.cpu_ms_per_job:.3f} ms/job, peak RSS {result.rss_mb:.1f} MB"
    )
    if result.latencies_ms:
        line += (
            f"\n    latency ms: p50 {result.percentile(50):.2f}  p90 {result.percentile(90):.2f}"
            f"  p99 {result.percentile(99):.2f}  max {max(result.latencies_ms):.2f}"
        )
    if result.ratio is not None:
        line += f"\n    ratio to raw baseline: {result.ratio:.2f}"
    if result.note:
        line += f"\n    {result.note}"
    print(line, flush=True)


def print_table(results: list[Result]) -> None:
    header = ["workload", "jobs", "seconds", "jobs/s", "CPU ms/job", "p50/p99 ms", "ratio"]
    header.append("RSS MB")
    rows = [
        [
            r.name,
            str(r.jobs),
            f"{r.seconds:.3f}",
            f"{r.rate:,.0f}",
            f"{r.cpu_ms_per_job:.3f}",
            f"{r.percentile(50):.2f}/{r.percentile(99):.2f}" if r.latencies_ms else "",
            f"{r.ratio:.2f}" if r.ratio is not None else "",
            f"{r.rss_mb:.1f}",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join(cells) + " |"

    print(fmt(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(fmt(row))


# Database helpers (a dedicated autocommit connection, outside oban's pool)


class Database:
    def __init__(self, conn: psycopg.AsyncConnection[Any], prefix: str) -> None:
        self.conn = conn
        self.prefix = prefix
        self.jobs = sql.SQL("{}.oban_jobs").format(sql.Identifier(prefix))

    async def truncate(self) -> None:
        await self.conn.execute(sql.SQL("TRUNCATE {}").format(self.jobs))

    async def progress(self) -> tuple[int, int]:
        """(completed jobs, jobs in a state other than available/executing/completed)."""
        query = sql.SQL(
            "SELECT count(*) FILTER (WHERE state = 'completed'),"
            " count(*) FILTER (WHERE state NOT IN ('available', 'executing', 'completed'))"
            " FROM {}"
        ).format(self.jobs)
        row = await (await self.conn.execute(query)).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def states(self) -> dict[str, tuple[int, int, int]]:
        """state -> (count, min attempt, max attempt)."""
        query = sql.SQL(
            "SELECT state::text, count(*), min(attempt), max(attempt) FROM {} GROUP BY state"
        ).format(self.jobs)
        rows = await (await self.conn.execute(query)).fetchall()
        return {state: (count, lo, hi) for state, count, lo, hi in rows}

    async def verify(self, name: str, expected: int, state: str, attempt: int) -> None:
        """Every job is in ``state`` with ``attempt``, and there are exactly ``expected``."""
        states = await self.states()
        if states != {state: (expected, attempt, attempt)}:
            raise BenchError(
                f"{name}: expected exactly {expected} jobs {state} with attempt {attempt}, "
                f"database has (state: count, min attempt, max attempt) {states}"
            )

    async def wait_completed(self, name: str, expected: int, timeout: float) -> None:
        """Poll every 10 ms until ``expected`` jobs are completed in the database.

        Fails at once when a job lands in another final or retry state (a worker failed).
        """
        deadline = time.perf_counter() + timeout
        while True:
            completed, failed = await self.progress()
            if completed >= expected:
                return
            if failed or time.perf_counter() > deadline:
                reason = "some jobs did not complete" if failed else f"timeout ({timeout:.0f}s)"
                raise BenchError(f"{name}: {reason}: {await self.states()}")
            await asyncio.sleep(POLL_SECONDS)


async def wait_run(db: Database, name: str, expected: int, timeout: float) -> None:
    """Wait for the workers to have run ``expected`` jobs, then for their acks in the db."""
    try:
        await asyncio.wait_for(TRACKER.done.wait(), timeout)
    except TimeoutError:
        raise BenchError(
            f"{name}: workers ran {TRACKER.calls} of {expected} jobs within {timeout:.0f}s; "
            f"database: {await db.states()}"
        ) from None
    await db.wait_completed(name, expected, timeout)


def check_executions(name: str, expected: int) -> None:
    if TRACKER.calls != expected or len(TRACKER.ids) != expected:
        raise BenchError(
            f"{name}: expected {expected} executions of distinct jobs, workers saw "
            f"{TRACKER.calls} executions of {len(TRACKER.ids)} distinct jobs"
        )


# Workloads


@dataclass
class Context:
    pool: AsyncConnectionPool[Any]
    prefix: str
    client: Oban
    db: Database
    timeout: float
    debounce: float | None  # seconds; None: the runtime's default


async def preinsert(ctx: Context, count: int) -> None:
    await ctx.db.truncate()
    for start in range(0, count, 10_000):
        batch = [NoopWorker.new({"i": i}) for i in range(start, min(count, start + 10_000))]
        await ctx.client.enqueue_many(batch)
    await ctx.db.verify("pre-insert", count, "available", 0)


async def bench_bulk_enqueue(ctx: Context, count: int) -> Result:
    await ctx.db.truncate()
    with Meter() as meter:
        jobs = [NoopWorker.new({"i": i}) for i in range(count)]
        inserted = await ctx.client.enqueue_many(jobs)
    if len(inserted) != count or any(job.id is None for job in inserted):
        raise BenchError(f"bulk enqueue returned {len(inserted)} jobs, some without ids")
    await ctx.db.verify("bulk enqueue", count, "available", 0)
    return meter.result("bulk enqueue (1 call)", count, note="includes building the Job objects")


async def bench_single_enqueue(ctx: Context, count: int) -> Result:
    await ctx.db.truncate()
    calls: list[float] = []
    with Meter() as meter:
        for i in range(count):
            t0 = time.perf_counter()
            await NoopWorker.enqueue({"i": i})
            calls.append(1000 * (time.perf_counter() - t0))
    await ctx.db.verify("single enqueue", count, "available", 0)
    return meter.result(
        "single enqueue", count, latencies_ms=calls, note="p50/p99: one enqueue call"
    )


async def bench_raw(ctx: Context, count: int, batch: int) -> Result:
    """The database's own cost of claiming and completing the jobs, without oban."""
    await preinsert(ctx, count)
    jobs = ctx.db.jobs
    claim = sql.SQL(
        "UPDATE {jobs} SET state = 'executing', attempt = attempt + 1,"
        " attempted_at = timezone('UTC', now())"
        " WHERE id IN (SELECT id FROM {jobs} WHERE state = 'available' AND queue = %s"
        " ORDER BY priority, scheduled_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING id"
    ).format(jobs=jobs)
    complete = sql.SQL(
        "UPDATE {jobs} SET state = 'completed', completed_at = timezone('UTC', now())"
        " WHERE id = ANY(%s)"
    ).format(jobs=jobs)
    done = 0
    async with await psycopg.AsyncConnection.connect(ctx.pool.conninfo, autocommit=True) as conn:
        with Meter() as meter:
            while True:
                rows = await (await conn.execute(claim, (QUEUE, batch))).fetchall()
                if not rows:
                    break
                await conn.execute(complete, ([row[0] for row in rows],))
                done += len(rows)
    if done != count:
        raise BenchError(f"raw baseline claimed {done} jobs, expected {count}")
    await ctx.db.verify(f"raw baseline (batch {batch})", count, "completed", 1)
    return meter.result(f"raw psycopg claim+complete, batch {batch}", count)


def runner(ctx: Context, concurrency: int) -> Oban:
    """A running instance for queue "bench"; registered under its own name, not "Oban"."""
    queue: int | dict[str, Any] = concurrency
    if ctx.debounce is not None:
        queue = {"limit": concurrency, "debounce_interval": ctx.debounce}
    return Oban(pool=ctx.pool, prefix=ctx.prefix, queues={QUEUE: queue}, name="bench-runner")


async def bench_run(ctx: Context, count: int, concurrency: int, raw: Result | None) -> Result:
    name = f"run no-op jobs, concurrency {concurrency}"
    await preinsert(ctx, count)
    TRACKER.reset(count)
    oban = runner(ctx, concurrency)
    try:
        with Meter() as meter:
            await oban.start()
            await wait_run(ctx.db, name, count, ctx.timeout)
    finally:
        stop0 = time.perf_counter()
        await oban.stop()
        stop_ms = 1000 * (time.perf_counter() - stop0)
    check_executions(name, count)
    await ctx.db.verify(name, count, "completed", 1)
    result = meter.result(name, count, note=f"stop() took {stop_ms:.0f} ms")
    result.ratio = result.rate / raw.rate if raw else None
    return result


async def bench_enqueue_while_running(
    ctx: Context, count: int, batch: int, concurrency: int
) -> Result:
    name = f"enqueue {count // batch}x{batch} while running, c={concurrency}"
    await ctx.db.truncate()
    TRACKER.reset(count)
    oban = runner(ctx, concurrency)
    await oban.start()
    try:
        with Meter() as meter:
            for start in range(0, count, batch):
                stop = min(count, start + batch)
                await oban.enqueue_many([NoopWorker.new({"i": i}) for i in range(start, stop)])
            await wait_run(ctx.db, name, count, ctx.timeout)
    finally:
        await oban.stop()
    check_executions(name, count)
    await ctx.db.verify(name, count, "completed", 1)
    return meter.result(name, count)


async def bench_latency(ctx: Context, count: int, gap: float, concurrency: int) -> Result:
    name = f"insert-to-start latency, c={concurrency}"
    await ctx.db.truncate()
    TRACKER.reset(count)
    oban = runner(ctx, concurrency)
    await oban.start()
    try:
        await asyncio.sleep(0.2)  # let the first (empty) fetch pass: measure an idle node
        with Meter() as meter:
            for _ in range(count):
                t0 = time.perf_counter()
                await LatencyWorker.enqueue({"t0": t0})
                await asyncio.sleep(gap)
            await wait_run(ctx.db, name, count, ctx.timeout)
    finally:
        await oban.stop()
    check_executions(name, count)
    await ctx.db.verify(name, count, "completed", 1)
    latencies = [1000 * seconds for seconds in TRACKER.latencies]
    return meter.result(
        name,
        count,
        latencies_ms=latencies,
        note=f"jobs/s is bound by the {1000 * gap:.0f} ms gap between enqueues",
    )


# Setup and main


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="divide every count by 10")
    parser.add_argument("--bulk", type=int, default=10_000, help="jobs in one enqueue_many")
    parser.add_argument("--single", type=int, default=2_000, help="sequential enqueue calls")
    parser.add_argument("--run", type=int, default=10_000, help="pre-inserted jobs to run")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[20, 100],
        help="queue limits for the run workload (and raw baseline batch sizes)",
    )
    parser.add_argument("--stream", type=int, default=5_000, help="jobs enqueued while running")
    parser.add_argument("--stream-batch", type=int, default=100, help="jobs per enqueue_many")
    parser.add_argument("--stream-concurrency", type=int, default=20)
    parser.add_argument("--latency", type=int, default=200, help="jobs for the latency test")
    parser.add_argument("--latency-gap-ms", type=float, default=10.0)
    parser.add_argument("--latency-concurrency", type=int, default=10)
    parser.add_argument(
        "--debounce-ms",
        type=float,
        default=None,
        help="queue debounce_interval for every running workload (default: the runtime's)",
    )
    parser.add_argument("--prefix", default="oban_bench", help="PostgreSQL schema to use")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-workload timeout (s)")
    args = parser.parse_args(argv)
    if args.quick:
        for name in ("bulk", "single", "run", "stream", "latency"):
            setattr(args, name, max(1, getattr(args, name) // 10))
    return args


async def setup(dsn: str, prefix: str) -> tuple[AsyncConnectionPool[Any], Database, str]:
    pool = await Oban.create_pool(dsn=dsn)
    ident = sql.Identifier(prefix)
    async with pool.connection() as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        row = await (await conn.execute("SHOW server_version")).fetchone()
    await schema.install(pool, prefix)
    monitor = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    return pool, Database(monitor, prefix), str(row[0] if row else "?")


async def main(args: argparse.Namespace) -> int:
    dsn = os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN)
    pool, db, server = await setup(dsn, args.prefix)
    client = Oban(pool=pool, prefix=args.prefix)  # client mode, registered as "Oban"
    debounce = None if args.debounce_ms is None else args.debounce_ms / 1000
    ctx = Context(
        pool=pool,
        prefix=args.prefix,
        client=client,
        db=db,
        timeout=args.timeout,
        debounce=debounce,
    )

    print(f"oban benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"  CPU: {cpu_model()}, nproc {os.cpu_count()}")
    print(f"  Python {platform.python_version()}, PostgreSQL {server}, schema {args.prefix!r}")
    mode = "quick run (counts / 10)" if args.quick else "full run"
    if debounce is not None:
        mode += f", queue debounce_interval {args.debounce_ms:g} ms"
    print(f"  {mode}", flush=True)

    results: list[Result] = []

    async def step(title: str, work: Callable[[], Awaitable[Result]]) -> Result:
        print(f"\n{title}", flush=True)
        result = await work()
        report(result)
        results.append(result)
        return result

    try:
        # Warm up the pool's connections and psycopg's prepared statements; not measured.
        await preinsert(ctx, 100)
        for i in range(20):
            await NoopWorker.enqueue({"warmup": i})

        await step("1. bulk enqueue", lambda: bench_bulk_enqueue(ctx, args.bulk))
        await step("2. single enqueue", lambda: bench_single_enqueue(ctx, args.single))
        for concurrency in args.concurrency:
            raw = await step(
                f"baseline: raw psycopg, batch {concurrency}",
                lambda c=concurrency: bench_raw(ctx, args.run, c),
            )
            await step(
                f"3. run pre-inserted jobs, concurrency {concurrency}",
                lambda c=concurrency, r=raw: bench_run(ctx, args.run, c, r),
            )
        await step(
            "4. enqueue while running",
            lambda: bench_enqueue_while_running(
                ctx, args.stream, args.stream_batch, args.stream_concurrency
            ),
        )
        await step(
            "5. insert-to-start latency (idle node)",
            lambda: bench_latency(
                ctx, args.latency, args.latency_gap_ms / 1000, args.latency_concurrency
            ),
        )
    except BenchError as error:
        print(f"\nERROR: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        await db.conn.close()
        await pool.close()

    print("\nratio = oban run jobs/s / raw psycopg jobs/s with LIMIT = the same concurrency")
    print("RSS MB = the process's peak resident set so far (ru_maxrss)\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main(parse_args())))
