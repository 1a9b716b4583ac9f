"""The cost of unique jobs on bulk inserts, against plain inserts, in one run.

For each engine, ``--jobs`` jobs (default 20,000) go in with ``enqueue_many`` in batches of
``--batch`` (default 1,000), three ways, each timed from building the jobs to the return of
the last batch:

1. **plain**: jobs of a worker without ``unique``, into an emptied table;
2. **unique**: the same jobs of a ``unique=True`` worker, into an emptied table: every key is
   new (the key's hash per job, the statement that reports skipped rows, the unique index);
3. **all conflicts**: the unique jobs once more: every row is skipped and answered with the
   job that holds its key (the insert, then the statement that looks up the holders).

Each is checked (a row per job, ``conflict`` false for every new job, true and naming the
holder for every duplicate). Odd repeats run unique before plain, so that neither always
comes first. Prints jobs/s, wall microseconds per job and client CPU microseconds per job
(this process's; on SQLite that includes SQLite itself), the medians of ``--repeat`` runs,
and per engine the ratio unique / plain of the cost per job (target: <= 1.5x).

PostgreSQL: a schema of its own (``bench_unique_<hex>``) in the DSN's database, installed with
``oban.schema.install`` and dropped at the end. SQLite: a new file in a temporary directory.

    .venv/bin/python bench/bench_unique.py                    # both engines
    .venv/bin/python bench/bench_unique.py --quick            # --jobs divided by 10
    .venv/bin/python bench/bench_unique.py --engine sqlite    # no server needed
    .venv/bin/python bench/bench_unique.py --jobs 50000 --batch 5000 --repeat 5

The DSN comes from ``--dsn`` or ``OBAN_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema, worker

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TARGET = 1.5
WORKLOADS = ("plain", "unique", "all conflicts")


@worker(queue="bench", name="bench_unique.Plain")
class Plain:
    def process(self, job: Job) -> None:
        return None


@worker(queue="bench", name="bench_unique.Unique", unique=True)
class Unique:
    def process(self, job: Job) -> None:
        return None


@dataclass
class Target:
    """One engine: its client, how to empty its table and count its rows."""

    name: str
    oban: Oban
    empty: Callable[[], Awaitable[None]]
    count: Callable[[], Awaitable[int]]


@dataclass
class Timing:
    seconds: float
    cpu_seconds: float


@asynccontextmanager
async def postgres(dsn: str) -> AsyncIterator[Target]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
    await pool.open(wait=True, timeout=10)
    prefix = f"bench_unique_{uuid.uuid4().hex[:8]}"
    table = sql.Identifier(prefix, "oban_jobs")
    oban = Oban(pool=pool, prefix=prefix, name="bench-unique-postgres")

    async def empty() -> None:
        async with pool.connection() as conn:
            await conn.execute(sql.SQL("TRUNCATE {}").format(table))

    async def count() -> int:
        async with pool.connection() as conn:
            cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    try:
        await schema.install(pool, prefix)
        yield Target("postgres", oban, empty, count)
    finally:
        try:
            await oban.stop()
            async with pool.connection() as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(prefix))
                await conn.execute(drop)
        finally:
            await pool.close()


@asynccontextmanager
async def sqlite(directory: Path) -> AsyncIterator[Target]:
    path = directory / "unique.db"
    oban = Oban(dsn=f"sqlite:///{path}", name="bench-unique-sqlite")

    def run(query: str) -> int:
        with closing(sqlite3.connect(path, timeout=10)) as conn, conn:
            row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    async def empty() -> None:
        await asyncio.to_thread(run, "DELETE FROM oban_jobs")

    async def count() -> int:
        return await asyncio.to_thread(run, "SELECT count(*) FROM oban_jobs")

    try:
        assert await oban.get_job(1) is None  # opens the file and installs the schema
        yield Target("sqlite", oban, empty, count)
    finally:
        await oban.stop()


async def insert(
    oban: Oban, kind: Any, jobs: int, batch: int, run: int
) -> tuple[Timing, list[Job]]:
    """Build and insert ``jobs`` jobs of ``kind`` in batches; the time and the jobs back."""
    inserted: list[Job] = []
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, jobs, batch):
        numbers = range(start, min(start + batch, jobs))
        inserted.extend(await oban.enqueue_many([kind.new({"n": n, "run": run}) for n in numbers]))
    timing = Timing(time.perf_counter() - started, time.process_time() - cpu)
    return timing, inserted


async def plain(target: Target, jobs: int, batch: int, run: int) -> Timing:
    await target.empty()
    timing, inserted = await insert(target.oban, Plain, jobs, batch, run)
    check(target, "plain", all(job.id is not None and not job.conflict for job in inserted))
    check(target, "plain rows", await target.count() == jobs)
    return timing


async def unique(target: Target, jobs: int, batch: int, run: int) -> tuple[Timing, Timing]:
    """The unique insert into an emptied table, then the same jobs again (all conflicts)."""
    await target.empty()
    fresh, inserted = await insert(target.oban, Unique, jobs, batch, run)
    ids = [job.id for job in inserted]
    check(target, "unique", not any(job.conflict for job in inserted) and None not in ids)
    check(target, "unique ids", len(set(ids)) == jobs)
    check(target, "unique rows", await target.count() == jobs)
    again, duplicates = await insert(target.oban, Unique, jobs, batch, run)
    check(target, "conflicts", all(job.conflict for job in duplicates))
    check(target, "conflict ids", [job.id for job in duplicates] == ids)
    check(target, "conflict rows", await target.count() == jobs)
    return fresh, again


def check(target: Target, what: str, ok: bool) -> None:
    if not ok:
        raise SystemExit(f"{target.name}: the {what} check failed")


async def measure(target: Target, jobs: int, batch: int, repeat: int) -> dict[str, list[Timing]]:
    # Warm up: connections, prepared statements, the first unique insert's index check.
    await plain(target, min(jobs, batch), batch, -1)
    await unique(target, min(jobs, batch), batch, -1)
    timings: dict[str, list[Timing]] = {name: [] for name in WORKLOADS}
    for run in range(repeat):
        if run % 2:
            fresh, again = await unique(target, jobs, batch, run)
            bare = await plain(target, jobs, batch, run)
        else:
            bare = await plain(target, jobs, batch, run)
            fresh, again = await unique(target, jobs, batch, run)
        for name, timing in zip(WORKLOADS, (bare, fresh, again), strict=True):
            timings[name].append(timing)
    await target.empty()
    return timings


def report(results: dict[str, dict[str, list[Timing]]], jobs: int) -> None:
    print(
        f"{'engine':<9} {'workload':<14} {'jobs/s':>9} {'us/job':>8} {'cpu us/job':>11} "
        f"{'/ plain':>8}"
    )
    ratios: dict[str, float] = {}
    for engine, timings in results.items():
        cost = {name: statistics.median(t.seconds for t in timings[name]) for name in WORKLOADS}
        for name in WORKLOADS:
            cpu = statistics.median(t.cpu_seconds for t in timings[name])
            per_job = cost[name] / jobs * 1e6
            print(
                f"{engine:<9} {name:<14} {jobs / cost[name]:>9,.0f} {per_job:>8.1f} "
                f"{cpu / jobs * 1e6:>11.1f} {cost[name] / cost['plain']:>7.2f}x"
            )
        ratios[engine] = cost["unique"] / cost["plain"]
    for engine, ratio in ratios.items():
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"{engine}: unique / plain = {ratio:.2f}x per job (target <= {TARGET}x: {verdict})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=("both", "postgres", "sqlite"), default="both")
    parser.add_argument("--dsn", default=os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per workload")
    parser.add_argument("--batch", type=int, default=1_000, help="jobs per enqueue_many")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--quick", action="store_true", help="divide --jobs by 10")
    args = parser.parse_args()
    jobs = max(1, args.jobs // 10) if args.quick else args.jobs
    engines = ("postgres", "sqlite") if args.engine == "both" else (args.engine,)
    results: dict[str, dict[str, list[Timing]]] = {}
    for engine in engines:
        if engine == "postgres":
            async with postgres(args.dsn) as target:
                results[engine] = await measure(target, jobs, args.batch, args.repeat)
        else:
            with tempfile.TemporaryDirectory(prefix="oban-bench-unique-") as tmp:
                async with sqlite(Path(tmp)) as target:
                    results[engine] = await measure(target, jobs, args.batch, args.repeat)
    print(
        f"{jobs:,} jobs per workload in batches of {args.batch:,} (enqueue_many), "
        f"median of {args.repeat} run(s)"
    )
    report(results, jobs)


if __name__ == "__main__":
    asyncio.run(main())
