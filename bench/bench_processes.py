"""CPU-bound jobs: ``oban start --processes 1`` against ``--processes N``, in one run.

A CPU-bound ``def process`` holds the GIL, so one ``oban start`` drains a CPU-bound queue on
one core however high its limit. ``--processes N`` runs N node processes under a supervisor.
This benchmark times the same queue drained by each, back to back:

1. a worker module in a temporary directory: ``Spin`` runs a pure-Python loop calibrated to
   ``--work-ms`` (default 30 ms) on this machine;
2. for each process count (``--processes 1,2``; ``--repeat R`` alternates them R times): a
   fresh database (PostgreSQL: database ``oban_bench_processes`` dropped and re-created next
   to the DSN's, schema installed with ``oban install``; SQLite: a new file), then
   ``python -m oban start --queues cpu:LIMIT --processes N``; once its N nodes have registered
   their producers, ``--jobs`` jobs (default 200) are enqueued in one call and the time runs
   until the database shows them all completed; then SIGTERM, and the supervisor must exit 0;
3. just before each run, the raw baseline: the same loops in that many plain processes (no
   oban, no database), the machine's own ceiling at that moment (it has other work too);
4. prints jobs/s, the run time of one job (p50/p90/p99 from ``attempted_at`` to
   ``completed_at``), the CPU the nodes used while draining (``cores used``, from
   ``/proc``), how the jobs spread over the nodes, the ratio of each count's jobs/s to the
   first count's (medians with ``--repeat``), the raw baseline's ratio, and oban's share of
   it.

    .venv/bin/python bench/bench_processes.py                    # PostgreSQL, 1 vs 2
    .venv/bin/python bench/bench_processes.py --engine sqlite    # no server needed
    .venv/bin/python bench/bench_processes.py --processes 1,2,4 --repeat 3
    make bench-processes BENCH_ARGS="--engine sqlite"

The DSN comes from ``--dsn`` or ``OBAN_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``); its role must be allowed to CREATE DATABASE.
The DSN's own database is never written to.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from oban import Job, Oban
from oban.oban import _instances

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DATABASE = "oban_bench_processes"
QUEUE = "cpu"
WORKER = "bench_cpu_workers.Spin"
#: How often the run polls the database for its progress.
POLL_SECONDS = 0.02

WORKERS = textwrap.dedent(
    """
    from oban import worker


    def spin(n):
        total = 0
        for i in range(n):
            total += i * i % 7
        return total


    @worker(queue="cpu")
    class Spin:
        def process(self, job):
            spin(job.args["n"])
    """
)


def spin(n: int) -> int:  # the worker's loop, for calibration
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calibrate(work_ms: float) -> int:
    """Loop iterations that take about ``work_ms`` here (best of a few tries)."""
    n = 100_000
    best = min(_timed(n) for _ in range(5))
    return max(1, int(n * work_ms / 1000 / best))


def _timed(n: int) -> float:
    start = time.perf_counter()
    spin(n)
    return time.perf_counter() - start


def with_database(dsn: str, name: str) -> str:
    """``dsn`` as a ``postgresql://`` URL pointing at database ``name``."""
    params = conninfo_to_dict(dsn)
    user = quote(str(params.get("user") or os.environ.get("PGUSER") or "postgres"), safe="")
    password = params.get("password")
    auth = user + (f":{quote(str(password), safe='')}" if password else "")
    host = str(params.get("host") or "127.0.0.1")
    host = f"[{host}]" if ":" in host else host
    return f"postgresql://{auth}@{host}:{params.get('port') or 5432}/{quote(name, safe='')}"


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    processes: int
    jobs: int
    seconds: float
    run_ms: list[float]
    per_node: dict[str, int]
    exit_code: int
    cpu_seconds: float | None  # CPU time the node processes used while draining (Linux)

    @property
    def cores(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds / self.seconds

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


class Database:
    """Where a run's jobs live: its DSN, a fresh start, and the queries the run needs."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.engine = args.engine
        self.admin_dsn = args.dsn
        self.workdir = workdir
        self.runs = 0
        self.dsn = ""
        self._sqlite: sqlite3.Connection | None = None
        self._postgres: psycopg.Connection[Any] | None = None

    def fresh(self) -> str:
        self.close()
        self.runs += 1
        if self.engine == "sqlite":
            self.dsn = f"sqlite:///{self.workdir / f'run-{self.runs}.db'}"
            return self.dsn
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            name = sql.Identifier(DATABASE)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        self.dsn = with_database(self.admin_dsn, DATABASE)
        subprocess.run(
            [sys.executable, "-m", "oban", "install", "--dsn", self.dsn],
            check=True,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
        )
        return self.dsn

    def query(self, postgres: str, sqlite: str) -> list[tuple[Any, ...]]:
        """Run one of the two statements on a connection kept for the run (a connection per
        poll would cost the 2-core box a server process fork every few milliseconds)."""
        if self.engine == "sqlite":
            path = self.dsn.removeprefix("sqlite:///")
            if not Path(path).exists():
                return []
            if self._sqlite is None:
                self._sqlite = sqlite3.connect(path, timeout=10, isolation_level=None)
            try:
                return self._sqlite.execute(sqlite).fetchall()
            except sqlite3.OperationalError as error:
                if "no such table" in str(error):
                    return []
                raise
        if self._postgres is None:
            self._postgres = psycopg.connect(self.dsn, autocommit=True)
        return self._postgres.execute(postgres).fetchall()  # type: ignore[arg-type]

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._postgres is not None:
            self._postgres.close()
            self._postgres = None

    def producers(self) -> int:
        rows = self.query(
            f"SELECT count(DISTINCT node) FROM oban_producers WHERE queue = '{QUEUE}'",
            f"SELECT count(DISTINCT node) FROM oban_producers WHERE queue = '{QUEUE}'",
        )
        return int(rows[0][0]) if rows else 0

    def completed(self) -> int:
        rows = self.query(
            "SELECT count(*) FROM oban_jobs WHERE state = 'completed'",
            "SELECT count(*) FROM oban_jobs WHERE state = 'completed'",
        )
        return int(rows[0][0]) if rows else 0

    def run_ms(self) -> list[float]:
        rows = self.query(
            "SELECT extract(epoch FROM completed_at - attempted_at) * 1000 FROM oban_jobs",
            "SELECT (julianday(completed_at) - julianday(attempted_at)) * 86400000.0 "
            "FROM oban_jobs",
        )
        return [float(row[0]) for row in rows]

    def per_node(self) -> dict[str, int]:
        rows = self.query(
            "SELECT attempted_by[1], count(*) FROM oban_jobs GROUP BY 1 ORDER BY 1",
            "SELECT json_extract(attempted_by, '$[0]'), count(*) FROM oban_jobs "
            "GROUP BY 1 ORDER BY 1",
        )
        return {str(node): int(count) for node, count in rows}


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]):
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise SystemExit(f"oban start exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_SECONDS)


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None (not Linux, gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (the supervisor's node processes)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds the processes ``pids`` used so far, or None."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is None:
            return None
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK") if pids else None


async def enqueue(dsn: str, jobs: int, n: int) -> None:
    client = Oban(dsn=dsn, name="bench_processes_client")
    try:
        await client.enqueue_many(
            [Job(WORKER, queue=QUEUE, args={"n": n, "i": i}) for i in range(jobs)]
        )
    finally:
        await client.stop()
        _instances.pop(client.name, None)


def run_once(args: argparse.Namespace, db: Database, processes: int, n: int) -> Result:
    dsn = db.fresh()
    output = db.workdir / f"run-{db.runs}-p{processes}.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    command = [
        *(sys.executable, "-m", "oban", "start", "--dsn", dsn),
        *("--queues", f"{QUEUE}:{args.limit}", "--processes", str(processes)),
        *("--log-level", "WARNING"),
    ]
    with output.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=db.workdir, env=env, stdout=sink, stderr=sink)
    try:
        wait_for(lambda: db.producers() == processes, 60, f"{processes} nodes", proc)
        nodes = [proc.pid] if processes == 1 else children(proc.pid)
        cpu_before = cpu_seconds(nodes)
        start = time.perf_counter()
        asyncio.run(enqueue(dsn, args.jobs, n))
        wait_for(lambda: db.completed() == args.jobs, 600, "every job completed", proc)
        seconds = time.perf_counter() - start
        cpu_after = cpu_seconds(nodes)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        raise SystemExit(f"oban start exited with {code}:\n{output.read_text()[-3000:]}")
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    result = Result(processes, args.jobs, seconds, db.run_ms(), db.per_node(), code, cpu)
    db.close()
    return result


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def plural(count: int) -> str:
    return f"{count} process" + ("es" if count != 1 else "")


def raw_jobs_per_s(count: int, jobs: int, n: int) -> float:
    """The machine's own ceiling: the same ``jobs`` loops in ``count`` plain processes (a warm
    process pool, no oban, no database)."""
    with ProcessPoolExecutor(max_workers=count) as pool:
        list(pool.map(spin, [1] * count))  # start the workers before the clock
        start = time.perf_counter()
        list(pool.map(spin, [n] * jobs, chunksize=1))
        return jobs / (time.perf_counter() - start)


def report(results: list[Result], counts: list[int], raw: dict[int, list[float]]) -> None:
    print()
    print(
        "| processes | jobs | seconds | jobs/s | job ms p50 | p90 | p99 | cores used "
        "| jobs per node |",
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        spread = " ".join(str(count) for count in r.per_node.values())
        cores = "?" if r.cores is None else f"{r.cores:.2f}"
        print(
            f"| {r.processes} | {r.jobs} | {r.seconds:.2f} | {r.jobs_per_s:.1f} "
            f"| {percentile(r.run_ms, 0.5):.1f} | {percentile(r.run_ms, 0.9):.1f} "
            f"| {percentile(r.run_ms, 0.99):.1f} | {cores} | {spread} |"
        )
    medians = {
        count: statistics.median(r.jobs_per_s for r in results if r.processes == count)
        for count in counts
    }
    raw_medians = {count: statistics.median(raw[count]) for count in counts}
    base, raw_base = medians[counts[0]], raw_medians[counts[0]]
    note = " (medians)" if len(results) > len(counts) else ""
    print()
    print(
        "Raw baseline, the same loops in plain processes (no oban, no database), jobs/s: "
        + ", ".join(f"{plural(count)} {raw_medians[count]:.1f}" for count in counts)
        + note
    )
    print()
    for count in counts[1:]:
        ours = medians[count] / base
        ceiling = raw_medians[count] / raw_base
        print(
            f"--processes {count} / --processes {counts[0]}: {medians[count]:.1f} / {base:.1f} "
            f"jobs/s = {ours:.2f}x{note}; raw {count} / {counts[0]} processes: {ceiling:.2f}x; "
            f"oban's share of the raw speed-up: {ours / ceiling:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--dsn", default=os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--processes", default="1,2", help="process counts, first = baseline")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--work-ms", type=float, default=30.0, help="CPU time of one job")
    parser.add_argument(
        "--limit",
        type=int,
        default=1,
        help="queue limit of each process (default 1: two CPU-bound threads in one process "
        "fight over the GIL; --limit 2 shows what that costs)",
    )
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    counts = [int(part) for part in args.processes.split(",")]

    n = calibrate(args.work_ms)
    print(
        f"{args.jobs} CPU-bound jobs of ~{args.work_ms:g} ms ({n:,} loop iterations), "
        f"queue {QUEUE}:{args.limit} per process, {args.engine}, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f} before",
        flush=True,
    )
    results = []
    raw: dict[int, list[float]] = {count: [] for count in counts}
    with tempfile.TemporaryDirectory(prefix="oban-bench-processes-") as tmp:
        workdir = Path(tmp)
        (workdir / "bench_cpu_workers.py").write_text(WORKERS)
        db = Database(args, workdir)
        for _ in range(args.repeat):
            for count in counts:
                raw[count].append(raw_jobs_per_s(count, args.jobs, n))
                result = run_once(args, db, count, n)
                print(
                    f"  --processes {count}: {result.seconds:.2f} s, "
                    f"{result.jobs_per_s:.1f} jobs/s (raw, {plural(count)}: "
                    f"{raw[count][-1]:.1f} jobs/s)",
                    flush=True,
                )
                results.append(result)
    report(results, counts, raw)


if __name__ == "__main__":
    main()
