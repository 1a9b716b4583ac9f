"""The per-job cost of ``isolation="process"``, against the default thread, in one run.

Runs ``--jobs`` no-op sync jobs through each isolation on one SQLite file (so that nothing but
the isolation differs), at ``--limit`` concurrency, and prints jobs/s and the percentiles of
the execution time each ``oban.job.stop`` event reports (the worker call alone: for a process,
the round trip to a reused child), plus the first job of the process run, which starts the
children. Run: ``.venv/bin/python bench/bench_isolation.py [--jobs 2000] [--limit 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from isolation_workers import ProcessNoop, ThreadNoop

from oban import Oban, telemetry


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(worker: Any, queue: str, jobs: int, limit: int, path: Path) -> dict[str, Any]:
    durations: list[float] = []
    finished: list[float] = []
    done = asyncio.Event()

    def on_stop(_event: str, meta: dict[str, Any]) -> None:
        if meta["job"].queue == queue:
            durations.append(meta["duration"] / 1e6)
            finished.append(time.perf_counter())
            if len(finished) == jobs:
                done.set()

    telemetry.attach(f"bench-{queue}", ["oban.job.stop"], on_stop)
    try:
        async with Oban(dsn=f"sqlite:///{path}", queues={queue: limit}, name=queue) as oban:
            await oban.pause_queue(queue)
            await oban.enqueue_many([worker.new({}) for _ in range(jobs)])
            started = time.perf_counter()
            await oban.resume_queue(queue)
            await done.wait()
            elapsed = time.perf_counter() - started
    finally:
        telemetry.detach(f"bench-{queue}")
    first, steady = durations[0], durations[limit:] or durations
    warm = finished[limit - 1] if len(finished) > limit else started
    return {
        "jobs/s": jobs / elapsed,
        "warm jobs/s": (jobs - limit) / (finished[-1] - warm),
        "p50": statistics.median(steady),
        "p95": _percentile(steady, 0.95),
        "p99": _percentile(steady, 0.99),
        "first": first,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        thread = await _run(ThreadNoop, "threads", args.jobs, args.limit, Path(tmp) / "t.db")
        process = await _run(ProcessNoop, "processes", args.jobs, args.limit, Path(tmp) / "p.db")
    print(f"{args.jobs} no-op sync jobs, limit {args.limit}, SQLite file")
    print(
        f"{'isolation':<10} {'jobs/s':>8} {'warm/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'first ms':>9}"
    )
    for name, row in (("thread", thread), ("process", process)):
        print(
            f"{name:<10} {row['jobs/s']:>8.0f} {row['warm jobs/s']:>8.0f} {row['p50']:>8.3f} "
            f"{row['p95']:>8.3f} {row['p99']:>8.3f} {row['first']:>9.1f}"
        )
    print(
        "process / thread: "
        f"{process['warm jobs/s'] / thread['warm jobs/s']:.2f}x the throughput once the "
        f"children run (warm/s: after the first {args.limit} jobs), "
        f"+{process['p50'] - thread['p50']:.3f} ms per job at the median; the first job "
        "waits for its child to start"
    )


if __name__ == "__main__":
    asyncio.run(main())
