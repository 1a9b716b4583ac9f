"""Harness shared by the benchmark drivers: standard library only, Python 3.11+.

Every driver runs ONE workload per process and prints ONE JSON line on stdout (progress and
errors go to stderr). The orchestrator, ``bench/run.py``, runs the drivers with each library's
own interpreter and collects those lines.

The JSON object always has ``library``, ``version``, ``python`` and ``workload``; on success
also ``jobs``, ``seconds``, ``jobs_per_s``, ``cpu_ms_per_job``, ``rss_start_mb``, ``rss_mb``,
``verified`` (what the driver checked in the database) and, for the workloads that time
individual jobs or calls, ``latency_ms`` (``p50``, ``p90``, ``p99``, ``max``); the ``rss``
workload adds ``rss`` (the resident set sampled every N jobs, see ``RssTracker``); on failure
``error`` (and the process exits with status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

POLL_SECONDS = 0.01

# Workload names shared by every driver (``raw`` is the claim+complete baseline and ``rss`` the
# memory-growth run: the two oban drivers only).
WORKLOADS = ("setup", "fill", "bulk", "single", "run", "stream", "latency", "raw", "rss")

# The finished jobs that ``fill --finished N`` inserts before the available ones (both oban
# drivers). Row g of N (1..N, in id order): g % 100 in (0, 50) discarded after max_attempts
# attempts with one error, g % 100 in (25, 75) cancelled after one attempt, every other row
# completed, after one attempt or, when g % 20 = 7, after a retry (attempt 2, one error).
# The finishing time of row g is (N - g) / N hours ago: the oldest first, the newest now.
FINISHED_STATES = ("completed", "discarded", "cancelled")
FINISHED_MAX_ATTEMPTS = 20
FINISHED_SPAN_S = 3600.0


class BenchError(Exception):
    """A workload did not end in the expected state; the message says what was found."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Peak resident set size of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_status_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB: ``VmRSS`` and ``VmHWM`` of
    ``/proc/self/status`` (Linux). ``ru_maxrss`` is only the peak, so it cannot show growth."""
    rss = hwm = 0.0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {}
    if len(samples_ms) == 1:
        (only,) = samples_ms
        return {"p50": only, "p90": only, "p99": only, "max": only}
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98], "max": max(samples_ms)}


class Meter:
    """Wall time (``perf_counter``) and process CPU time (``process_time``, all threads)."""

    def __enter__(self) -> Meter:
        self.rss_start = rss_mb()
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.cpu0


class Tracker:
    """Counts executions inside the job handlers: how many, of which distinct job ids."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.calls = 0
        self.ids: set[Any] = set()
        self.latencies_ms: list[float] = []
        self.done = asyncio.Event()
        if target <= 0:
            self.done.set()

    def record(self, job_id: Any) -> None:
        self.calls += 1
        self.ids.add(job_id)
        if self.calls >= self.target:
            self.done.set()

    def check(self, name: str) -> None:
        if self.calls != self.target or len(self.ids) != self.target:
            raise BenchError(
                f"{name}: expected {self.target} executions of distinct jobs, the handlers saw "
                f"{self.calls} executions of {len(self.ids)} distinct jobs"
            )


class RssTracker(Tracker):
    """A Tracker for long runs that keeps no per-job objects, so that the harness itself does
    not grow with the number of jobs: the ``target`` job ids must be the contiguous range
    ``first_id .. first_id + target - 1`` (checked before the run), and one preallocated byte
    per job marks it as run. Every ``every`` executions it samples ``VmRSS``/``VmHWM`` inside
    the handler, that is with the node at full speed."""

    def __init__(self, target: int, first_id: int, every: int) -> None:
        super().__init__(target)
        self.first_id = first_id
        self.every = max(1, every)
        self.seen = bytearray(target)
        self.stray = 0  # executions of an id outside the range, or of an id already run
        self.samples: list[tuple[int, float, float]] = []  # about 10 entries
        self.before = vm_status_mb()

    def record(self, job_id: Any) -> None:
        self.calls += 1
        slot = int(job_id) - self.first_id
        if 0 <= slot < self.target and not self.seen[slot]:
            self.seen[slot] = 1
        else:
            self.stray += 1
        if self.calls % self.every == 0:
            self.samples.append((self.calls, *vm_status_mb()))
        if self.calls >= self.target:
            self.done.set()

    def check(self, name: str) -> None:
        distinct = self.seen.count(1)
        if self.calls != self.target or distinct != self.target or self.stray:
            raise BenchError(
                f"{name}: expected {self.target} executions of distinct jobs, the handlers saw "
                f"{self.calls} executions of {distinct} distinct jobs of the range "
                f"({self.stray} outside it or repeated)"
            )

    def report(self) -> dict[str, Any]:
        """``rss`` of the JSON line: MB before the node started, then [jobs, RSS, peak]."""
        return {
            "every": self.every,
            "before_mb": self.before[0],
            "samples": [list(sample) for sample in self.samples],
        }


async def wait_for_handlers(tracker: Tracker, name: str, timeout: float) -> None:
    try:
        await asyncio.wait_for(tracker.done.wait(), timeout)
    except TimeoutError:  # asyncio.TimeoutError is the builtin since 3.11
        raise BenchError(
            f"{name}: the handlers ran {tracker.calls} of {tracker.target} jobs within {timeout:g}s"
        ) from None


async def poll_until(
    name: str,
    check: Callable[[], Awaitable[tuple[bool, str | None]]],
    timeout: float,
) -> None:
    """Call ``check`` every 10 ms until it returns (True, _); (False, "reason") aborts."""
    deadline = time.perf_counter() + timeout
    while True:
        done, problem = await check()
        if done:
            return
        if problem is not None:
            raise BenchError(f"{name}: {problem}")
        if time.perf_counter() > deadline:
            raise BenchError(f"{name}: not finished in the database within {timeout:g}s")
        await asyncio.sleep(POLL_SECONDS)


def result(
    meter: Meter,
    jobs: int,
    verified: str,
    latencies_ms: list[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    seconds = meter.seconds
    out: dict[str, Any] = {
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds if seconds > 0 else None,
        "cpu_ms_per_job": 1000 * meter.cpu_seconds / jobs if jobs else None,
        "rss_start_mb": meter.rss_start,
        "rss_mb": rss_mb(),
        "verified": verified,
    }
    if latencies_ms:
        out["latency_ms"] = percentiles(latencies_ms)
    out.update(extra)
    return out


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--dsn",
        required=True,
        help="this library's database: a postgresql:// URL, or sqlite:////abs/path.db for SQLite",
    )
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--count", type=int, default=0, help="jobs")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100, help="jobs per enqueue call (stream)")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="pause between enqueues")
    parser.add_argument("--timeout", type=float, default=300.0)
    if extra:
        extra(parser)
    return parser.parse_args()


def main(
    library: str,
    version: str,
    workload: str,
    run: Callable[[], Awaitable[dict[str, Any]]],
) -> int:
    """Run one workload, print its JSON line, return the exit status."""
    head = {
        "library": library,
        "version": version,
        "python": platform.python_version(),
        "workload": workload,
    }
    try:
        body = asyncio.run(run())
    except BenchError as error:
        print(json.dumps({**head, "error": str(error)}), flush=True)
        return 1
    except Exception as error:  # a crash in a library is reported, not hidden
        print(json.dumps({**head, "error": f"{type(error).__name__}: {error}"}), flush=True)
        raise
    print(json.dumps({**head, **body}), flush=True)
    return 0
