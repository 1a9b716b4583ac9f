"""Workflows: how soon a fan-in's child runs after its last parent, and what a workflow costs
against the same jobs without one, in one run.

For each engine, a node in this process (queue limit ``--limit``, default 50) runs:

1. **plain**: ``--parents`` no-op jobs (default 10,000) and one more, inserted together,
   without a workflow: the time from insert to the last job's end;
2. **fan-in**: the same jobs as a workflow where the one depends on all the others (the
   10,000-to-1 fan-in): the same total time, and the release latency, from the moment the
   last parent ended to the moment the child started (target: under 1 s).

Each run checks that every job completed and that the child ran once, after every parent.
Prints the medians of ``--repeat`` runs.

PostgreSQL: a schema of its own (``bench_workflow_<hex>``) in the DSN's database, installed
with ``oban.schema.install`` and dropped at the end. SQLite: a new file in a temporary
directory.

    .venv/bin/python bench/bench_workflow.py                     # both engines
    .venv/bin/python bench/bench_workflow.py --quick             # --parents divided by 10
    .venv/bin/python bench/bench_workflow.py --engine sqlite     # no server needed
    .venv/bin/python bench/bench_workflow.py --parents 20000 --repeat 3

The DSN comes from ``--dsn`` or ``OBAN_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, Workflow, schema, worker

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_SECONDS = 1.0

#: (run, name) -> (start, end) on time.monotonic()
LEDGER: dict[tuple[str, str], tuple[float, float]] = {}


@worker(queue="bench", name="bench_workflow.Step")
class Step:
    def process(self, job: Job) -> None:
        started = time.monotonic()
        LEDGER[job.args["run"], job.args["name"]] = (started, time.monotonic())


@asynccontextmanager
async def postgres(dsn: str, limit: int) -> AsyncIterator[Oban]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=10, open=False)
    await pool.open(wait=True, timeout=10)
    prefix = f"bench_workflow_{uuid.uuid4().hex[:8]}"
    oban = Oban(pool=pool, prefix=prefix, queues={"bench": limit}, name="bench-workflow-pg")
    try:
        await schema.install(pool, prefix)
        await oban.start()
        yield oban
    finally:
        try:
            await oban.stop()
            async with pool.connection() as conn:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(prefix))
                await conn.execute(drop)
        finally:
            await pool.close()


@asynccontextmanager
async def sqlite(directory: Path, limit: int) -> AsyncIterator[Oban]:
    path = directory / "workflow.db"
    oban = Oban(dsn=f"sqlite:///{path}", queues={"bench": limit}, name="bench-workflow-sqlite")
    try:
        await oban.start()
        yield oban
    finally:
        await oban.stop()


def jobs_for(run: str, parents: int) -> tuple[list[Job], Job]:
    return (
        [Step.new({"run": run, "name": f"p{n}"}) for n in range(parents)],
        Step.new({"run": run, "name": "child"}),
    )


async def drained(oban: Oban, ids: list[int], timeout: float = 600.0) -> None:
    outcomes = await oban.await_many(ids, timeout=timeout, poll_interval=0.5)
    if not all(outcome.state == "completed" for outcome in outcomes):
        states = {outcome.state for outcome in outcomes}
        raise SystemExit(f"not every job completed: {states}")


async def plain(oban: Oban, parents: int) -> float:
    run = uuid.uuid4().hex
    others, last = jobs_for(run, parents)
    started = time.monotonic()
    inserted = []
    for start in range(0, parents, 5_000):
        inserted += await oban.enqueue_many(others[start : start + 5_000])
    inserted += await oban.enqueue_many([last])
    await drained(oban, [job.id for job in inserted if job.id is not None])
    return time.monotonic() - started


async def fan_in(oban: Oban, parents: int) -> tuple[float, float]:
    """The whole run's seconds, and the release latency (last parent end -> child start)."""
    run = uuid.uuid4().hex
    others, child = jobs_for(run, parents)
    wf = Workflow()
    for job in others:
        wf.add(job.args["name"], job)
    wf.add("child", child, deps=[job.args["name"] for job in others])
    started = time.monotonic()
    await oban.enqueue_many(wf)
    status = await oban.wait_for_workflow(wf, timeout=600, poll_interval=0.5)
    total = time.monotonic() - started
    if status.counts != {"completed": parents + 1}:
        raise SystemExit(f"fan-in did not complete: {status}")
    last_parent = max(LEDGER[run, f"p{n}"][1] for n in range(parents))
    child_start = LEDGER[run, "child"][0]
    if child_start < last_parent:
        raise SystemExit("the child started before its last parent ended")
    return total, child_start - last_parent


async def measure(oban: Oban, parents: int, repeat: int) -> dict[str, list[float]]:
    await plain(oban, min(parents, 100))  # warm up
    await fan_in(oban, min(parents, 100))
    found: dict[str, list[float]] = {"plain": [], "fan-in": [], "release": []}
    for run in range(repeat):
        order = (plain, fan_in) if run % 2 == 0 else (fan_in, plain)
        for workload in order:
            if workload is plain:
                found["plain"].append(await plain(oban, parents))
            else:
                total, release = await fan_in(oban, parents)
                found["fan-in"].append(total)
                found["release"].append(release)
    return found


def report(engine: str, found: dict[str, list[float]], parents: int) -> None:
    jobs = parents + 1
    plain_s = statistics.median(found["plain"])
    fan_s = statistics.median(found["fan-in"])
    release = statistics.median(found["release"])
    print(f"{engine}: {parents:,} parents -> 1 child, median of {len(found['plain'])} runs")
    print(f"  plain jobs    {plain_s:8.2f} s  {jobs / plain_s:9,.0f} jobs/s")
    print(f"  fan-in        {fan_s:8.2f} s  {jobs / fan_s:9,.0f} jobs/s  ({fan_s / plain_s:.2f}x)")
    verdict = "ok" if release <= TARGET_SECONDS else f"OVER the {TARGET_SECONDS:g} s target"
    worst = max(found["release"])
    print(f"  release       {release * 1000:8.1f} ms (worst {worst * 1000:.1f} ms): {verdict}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--dsn", default=os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--parents", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="--parents divided by 10")
    args = parser.parse_args()
    parents = max(1, args.parents // 10) if args.quick else args.parents
    if args.engine in ("postgres", "both"):
        async with postgres(args.dsn, args.limit) as oban:
            report("postgres", await measure(oban, parents, args.repeat), parents)
    if args.engine in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="oban-bench-workflow-") as directory:
            async with sqlite(Path(directory), args.limit) as oban:
                report("sqlite", await measure(oban, parents, args.repeat), parents)


if __name__ == "__main__":
    asyncio.run(main())
