"""Benchmark driver for this repository's oban on its embedded SQLite engine.

The same workloads as ``oban_driver.py`` (bulk, single, run, stream, latency, plus ``setup``,
``fill`` and ``raw``, a stdlib sqlite3 claim-and-complete loop without oban), with
``Oban(dsn="sqlite:////abs/path/jobs.db", ...)`` instead of a PostgreSQL pool. Everything
happens in this one process: the library, its aiosqlite connection and SQLite itself (a
library, not a server), so the CPU column includes the database's own work.

The database is a file, and every workload run gets a new one (``run.py`` names it under a
temporary directory): ``setup``, ``fill``, ``bulk``, ``single``, ``stream`` and ``latency``
refuse a file that already exists; ``run``, ``rss`` and ``raw`` expect the file a ``fill``
process just wrote. The engine creates the schema on first use and opens the file with
``journal_mode=WAL``, ``synchronous=NORMAL`` and a busy timeout; the driver changes none of
that.

One Oban instance per workload, named "Oban" so that ``Worker.enqueue`` uses it: a client
(no queues) for ``fill``, ``bulk`` and ``single``; a node with queue "bench" for ``run``,
``rss``, ``stream`` and ``latency``, which also does the enqueues of ``stream`` and ``latency``. The
engine wakes only the producers of the instance that inserted: a second instance on the same
file would notice the jobs by polling (about 1 s), not at once.

Checks use a separate connection of the standard library's ``sqlite3`` module on the same
file: exactly N rows in ``oban_jobs``, all ``available`` with attempt 0 after an enqueue or
``fill``, all ``completed`` with attempt 1 after a run, and the handlers ran N distinct jobs
once each.

As in ``oban_driver.py``, ``fill --finished F`` first inserts F finished jobs (one recursive-CTE
``INSERT ... SELECT`` on the stdlib connection; no ``ANALYZE``, since the engine never runs
one), ``run --finished F`` leaves them out of its checks (they come first by id) and checks
that they were left alone, and ``rss`` is ``run`` sampling the resident set every tenth of
the jobs.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import _common
from _common import BenchError, Meter, RssTracker, Tracker

from oban import Job, Oban, worker

QUEUE = "bench"
DSN_PREFIX = "sqlite:///"
TRACKER = Tracker(0)

# One statement for the finished jobs of ``fill --finished`` (see _common.FINISHED_STATES for
# the mix). Row g finishes (n - g) / n of the span before now (as a Julian day), so ids follow
# time. Timestamps are in the engine's format, '%Y-%m-%d %H:%M:%f' in UTC.
FINISHED_INSERT = """
WITH RECURSIVE
  s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n),
  r AS (
    SELECT
      g,
      CASE WHEN g % 100 IN (0, 50) THEN 'discarded'
           WHEN g % 100 IN (25, 75) THEN 'cancelled'
           ELSE 'completed' END AS state,
      CASE WHEN g % 100 IN (0, 50) THEN :max_attempts
           WHEN g % 20 = 7 THEN 2
           ELSE 1 END AS attempt,
      julianday('now') - (:span * (:n - g) / :n) / 86400.0 AS done
    FROM s
  )
INSERT INTO oban_jobs (
  state, queue, worker, args, errors, attempt, max_attempts, inserted_at, scheduled_at,
  attempted_at, completed_at, discarded_at, cancelled_at, attempted_by
)
SELECT
  r.state, :queue, :worker, json_object('i', r.g),
  CASE WHEN r.state = 'discarded' OR r.attempt > 1 THEN json_array(json_object(
    'attempt', CASE WHEN r.state = 'discarded' THEN r.attempt ELSE r.attempt - 1 END,
    'at', strftime('%Y-%m-%dT%H:%M:%fZ', r.done),
    'error', 'RuntimeError: bench: a failed attempt'
  )) ELSE '[]' END,
  r.attempt, :max_attempts,
  strftime('%Y-%m-%d %H:%M:%f', r.done - (0.05 + 15 * (r.attempt - 1)) / 86400.0),
  strftime('%Y-%m-%d %H:%M:%f', r.done - (0.05 + 15 * (r.attempt - 1)) / 86400.0),
  strftime('%Y-%m-%d %H:%M:%f', r.done - 0.002 / 86400.0),
  CASE WHEN r.state = 'completed' THEN strftime('%Y-%m-%d %H:%M:%f', r.done) END,
  CASE WHEN r.state = 'discarded' THEN strftime('%Y-%m-%d %H:%M:%f', r.done) END,
  CASE WHEN r.state = 'cancelled' THEN strftime('%Y-%m-%d %H:%M:%f', r.done) END,
  json_array('bench-earlier-node', '00000000-0000-4000-8000-000000000000')
FROM r
"""


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


def database_path(dsn: str) -> Path:
    """The absolute file of ``sqlite:////abs/path.db`` (the form the engine documents)."""
    if not dsn.startswith(DSN_PREFIX):
        raise BenchError(f"--dsn must be sqlite:////absolute/path.db, got {dsn!r}")
    path = Path(dsn.removeprefix(DSN_PREFIX))
    if not path.is_absolute():
        raise BenchError(f"--dsn must name an absolute path (sqlite:////...), got {dsn!r}")
    return path


class Database:
    """A stdlib ``sqlite3`` connection on the same file, outside oban, for checks and for
    emptying the table after the warm-up. Autocommit, so it never holds a read transaction
    open; its calls run in a thread so the event loop (the node) keeps going meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        # The checks look only at rows with a greater id: the jobs of this workload, not the
        # finished ones that ``fill --finished`` put in front of them.
        self.after_id = 0

    def _connect(self) -> sqlite3.Connection:
        if self.conn is None:
            if not self.path.exists():
                raise BenchError(f"{self.path} does not exist")
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
        return self.conn

    async def rows(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(lambda: self._connect().execute(query, params).fetchall())

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def delete_all(self) -> None:
        await self.rows("DELETE FROM oban_jobs")

    async def states(self, finished: bool = False) -> dict[str, tuple[int, int, int]]:
        """state -> (count, min attempt, max attempt) of the workload's rows (``id >
        after_id``), or with ``finished`` of the finished rows in front of them."""
        where = "id <= ?" if finished else "id > ?"
        rows = await self.rows(
            "SELECT state, count(*), min(attempt), max(attempt) FROM oban_jobs"
            f" WHERE {where} GROUP BY state",
            (self.after_id,),
        )
        return {state: (count, lo, hi) for state, count, lo, hi in rows}

    async def id_range(self) -> tuple[int, int]:
        """(min id, max id) of the workload's rows."""
        ((first, last),) = await self.rows(
            "SELECT min(id), max(id) FROM oban_jobs WHERE id > ?", (self.after_id,)
        )
        return (int(first), int(last)) if first is not None else (0, -1)

    async def skip_finished(self, name: str, finished: int) -> dict[str, tuple[int, int, int]]:
        """Before a run: find the ``finished`` rows of ``fill --finished`` (every row in a
        finished state; their ids come before the available jobs), point the checks past
        them, and return their states for the check after the run."""
        ((count, last),) = await self.rows(
            "SELECT count(*), max(id) FROM oban_jobs"
            " WHERE state IN ('completed', 'discarded', 'cancelled')"
        )
        if count != finished:
            raise BenchError(f"{name}: expected {finished} finished jobs in front, found {count}")
        self.after_id = int(last or 0)
        before = await self.states(finished=True)
        if sum(n for n, _, _ in before.values()) != finished:
            raise BenchError(f"{name}: rows other than finished ones in front: {before}")
        return before

    async def check_finished(self, name: str, before: dict[str, tuple[int, int, int]]) -> str:
        after = await self.states(finished=True)
        if after != before:
            raise BenchError(f"{name}: the finished jobs changed from {before} to {after}")
        counts = ", ".join(f"{n} {state}" for state, (n, _, _) in sorted(after.items()))
        return f"the {sum(n for n, _, _ in after.values())} finished jobs untouched ({counts})"

    async def verify(self, name: str, expected: int, state: str, attempt: int) -> str:
        states = await self.states()
        if states != {state: (expected, attempt, attempt)}:
            raise BenchError(
                f"{name}: expected exactly {expected} jobs {state!r} with attempt {attempt}; "
                f"oban_jobs has (state: count, min attempt, max attempt) {states}"
            )
        return f"oban_jobs (sqlite3): {expected} {state}, attempt {attempt}"

    async def all_completed(self, expected: int) -> tuple[bool, str | None]:
        ((completed, other),) = await self.rows(
            "SELECT count(*) FILTER (WHERE state = 'completed'),"
            " count(*) FILTER (WHERE state NOT IN ('available', 'executing', 'completed'))"
            " FROM oban_jobs WHERE id > ?",
            (self.after_id,),
        )
        if other:
            return False, f"some jobs did not complete: {await self.states()}"
        return completed >= expected, None

    async def settings(self) -> dict[str, Any]:
        """What the file says about itself (journal_mode is stored in a WAL file's header)."""
        ((journal_mode,),) = await self.rows("PRAGMA journal_mode")
        ((page_size,),) = await self.rows("PRAGMA page_size")
        tables = await self.rows(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'oban_%'"
        )
        return {
            "journal_mode": journal_mode,
            "page_size": page_size,
            "tables": sorted(name for (name,) in tables),
            "sqlite_version": sqlite3.sqlite_version,
        }


class Bench:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.dsn: str = args.dsn
        self.path = database_path(args.dsn)
        self.db = Database(self.path)

    def fresh(self, name: str) -> None:
        if self.path.exists():
            raise BenchError(f"{name}: {self.path} already exists; every run needs a new file")
        if not self.path.parent.is_dir():
            raise BenchError(f"{name}: directory {self.path.parent} does not exist")

    def client(self) -> Oban:
        """A client-mode instance (no queues), named "Oban" for ``Worker.enqueue``. Used as
        ``async with``: its start does nothing, its stop closes the connection."""
        return Oban(dsn=self.dsn)

    def node(self, concurrency: int) -> Oban:
        """A node running queue "bench" (library defaults except the limit), named "Oban"
        so that it also serves the enqueue calls."""
        queue: Any = concurrency
        if self.args.debounce_ms is not None:
            queue = {"limit": concurrency, "debounce_interval": self.args.debounce_ms / 1000}
        return Oban(dsn=self.dsn, queues={QUEUE: queue})

    async def warm_up(self, oban: Oban) -> None:
        """Create the schema and warm the connection and statement cache, then empty the
        table (the warm-up jobs are deleted before a node is started)."""
        for i in range(20):
            await NoopWorker.enqueue({"warmup": i})
        await oban.enqueue_many([NoopWorker.new({"warmup": i}) for i in range(10)])
        await self.db.delete_all()

    async def wait_completed(self, name: str, count: int) -> None:
        """The handlers ran ``count`` jobs, then ``count`` are completed in the file."""
        await _common.wait_for_handlers(TRACKER, name, self.args.timeout)
        db = self.db
        await _common.poll_until(name, lambda: db.all_completed(count), self.args.timeout)

    # Workloads

    async def setup(self) -> dict[str, Any]:
        """Start and stop a node on a new file: the engine creates the schema."""
        self.fresh("setup")
        oban = self.node(1)
        await oban.start()
        await oban.stop()
        settings = await self.db.settings()
        if "oban_jobs" not in settings["tables"] or settings["journal_mode"] != "wal":
            raise BenchError(f"setup: unexpected file after start: {settings}")
        return {"verified": "schema created on start", "sqlite": settings}

    async def fill(self, count: int, finished: int = 0) -> dict[str, Any]:
        """Insert ``count`` available jobs in calls of 10,000 on a new file; with
        ``finished``, first that many finished jobs of the same queue and worker in one
        statement (none of it is timed by run.py)."""
        self.fresh("fill")
        out: dict[str, Any] = {}
        async with self.client() as oban:
            if finished:
                t0 = time.perf_counter()
                # The first insert creates the schema; that job is deleted again.
                job = await NoopWorker.enqueue({"schema": True})
                await self.db.delete_all()
                params = {
                    "queue": QUEUE,
                    "worker": job.worker,
                    "max_attempts": _common.FINISHED_MAX_ATTEMPTS,
                    "span": _common.FINISHED_SPAN_S,
                    "n": finished,
                }
                await self.db.rows(FINISHED_INSERT, params)
                before = await self.db.skip_finished("fill", finished)
                out["finished_max_id"] = self.db.after_id
                out["finished_states"] = {state: n for state, (n, _, _) in before.items()}
            for start in range(0, count, 10_000):
                stop = min(count, start + 10_000)
                await oban.enqueue_many([NoopWorker.new({"i": i}) for i in range(start, stop)])
            if finished:
                out["prefill_s"] = time.perf_counter() - t0
        out["verified"] = await self.db.verify("fill", count, "available", 0)
        return out

    async def bulk(self, count: int) -> dict[str, Any]:
        self.fresh("bulk")
        async with self.client() as oban:
            await self.warm_up(oban)
            with Meter() as meter:
                jobs = [NoopWorker.new({"i": i}) for i in range(count)]
                inserted = await oban.enqueue_many(jobs)
        if len(inserted) != count or any(job.id is None for job in inserted):
            raise BenchError(f"bulk: enqueue_many returned {len(inserted)} jobs, some without id")
        verified = await self.db.verify("bulk", count, "available", 0)
        return _common.result(meter, count, verified)

    async def single(self, count: int) -> dict[str, Any]:
        self.fresh("single")
        calls: list[float] = []
        async with self.client() as oban:
            await self.warm_up(oban)
            with Meter() as meter:
                for i in range(count):
                    t0 = time.perf_counter()
                    await NoopWorker.enqueue({"i": i})
                    calls.append(1000 * (time.perf_counter() - t0))
        verified = await self.db.verify("single", count, "available", 0)
        return _common.result(meter, count, verified, latencies_ms=calls)

    async def run(self, count: int, concurrency: int, finished: int = 0) -> dict[str, Any]:
        """Run ``count`` jobs pre-inserted into this file by a ``fill`` process, with
        ``finished`` finished jobs in front of them when ``fill`` had ``--finished``."""
        global TRACKER
        extra: dict[str, Any] = {}
        if finished:
            before = await self.db.skip_finished("run", finished)
            extra = {"finished": finished, "finished_max_id": self.db.after_id}
        await self.db.verify("run (pre-inserted)", count, "available", 0)
        TRACKER = Tracker(count)
        node = self.node(concurrency)
        try:
            with Meter() as meter:
                await node.start()
                await self.wait_completed("run", count)
        finally:
            stop0 = time.perf_counter()
            await node.stop()
            stop_ms = 1000 * (time.perf_counter() - stop0)
        TRACKER.check("run")
        verified = await self.db.verify("run", count, "completed", 1) + ", each ran once"
        if finished:
            verified += "; " + await self.db.check_finished("run", before)
        return _common.result(meter, count, verified, stop_ms=stop_ms, **extra)

    async def rss(self, count: int, concurrency: int) -> dict[str, Any]:
        """``run`` of ``count`` pre-inserted jobs, sampling the process's current RSS every
        ``count // 10`` jobs (in the handler) to see whether it grows with the jobs run."""
        global TRACKER
        await self.db.verify("rss (pre-inserted)", count, "available", 0)
        first, last = await self.db.id_range()
        if last - first + 1 != count:
            raise BenchError(f"rss: the {count} job ids are not contiguous ({first}..{last})")
        TRACKER = RssTracker(count, first, count // 10)
        node = self.node(concurrency)
        try:
            with Meter() as meter:
                await node.start()
                await self.wait_completed("rss", count)
        finally:
            await node.stop()
        TRACKER.check("rss")
        verified = await self.db.verify("rss", count, "completed", 1)
        return _common.result(meter, count, verified + ", each ran once", rss=TRACKER.report())

    async def stream(self, count: int, batch: int, concurrency: int) -> dict[str, Any]:
        global TRACKER
        self.fresh("stream")
        node = self.node(concurrency)
        try:
            await self.warm_up(node)  # before start: no warm-up job is run
            TRACKER = Tracker(count)
            await node.start()
            await asyncio.sleep(0.2)  # let start-up finish
            with Meter() as meter:
                for start in range(0, count, batch):
                    stop = min(count, start + batch)
                    await node.enqueue_many([NoopWorker.new({"i": i}) for i in range(start, stop)])
                await self.wait_completed("stream", count)
        finally:
            await node.stop()
        TRACKER.check("stream")
        verified = await self.db.verify("stream", count, "completed", 1)
        return _common.result(meter, count, verified + ", each ran once")

    async def latency(self, count: int, gap: float, concurrency: int) -> dict[str, Any]:
        global TRACKER
        self.fresh("latency")
        node = self.node(concurrency)
        try:
            await self.warm_up(node)
            TRACKER = Tracker(count)
            await node.start()
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
        """The file's own cost of claiming and completing the jobs, without oban: one stdlib
        sqlite3 connection (autocommit, synchronous=NORMAL as the engine sets it), two
        statements per batch of ``batch`` jobs, until no job is left."""
        await self.db.verify("raw (pre-inserted)", count, "available", 0)
        claim = (
            "UPDATE oban_jobs SET state = 'executing', attempt = attempt + 1,"
            " attempted_at = strftime('%Y-%m-%d %H:%M:%f', 'now')"
            " WHERE id IN (SELECT id FROM oban_jobs WHERE state = 'available' AND queue = ?"
            " ORDER BY priority, scheduled_at, id LIMIT ?)"
            " RETURNING id"
        )
        complete = (
            "UPDATE oban_jobs SET state = 'completed',"
            " completed_at = strftime('%Y-%m-%d %H:%M:%f', 'now')"
            " WHERE id IN (SELECT value FROM json_each(?))"
        )

        def loop() -> int:
            done = 0
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            try:
                conn.execute("PRAGMA synchronous = NORMAL")
                while True:
                    ids = [row[0] for row in conn.execute(claim, (QUEUE, batch)).fetchall()]
                    if not ids:
                        return done
                    conn.execute(complete, (json.dumps(ids),))
                    done += len(ids)
            finally:
                conn.close()

        with Meter() as meter:
            done = loop()  # on the loop's thread: nothing else runs in this process
        if done != count:
            raise BenchError(f"raw: claimed {done} jobs, expected {count}")
        verified = await self.db.verify("raw", count, "completed", 1)
        return _common.result(meter, count, verified)


async def run_workload(args: Any) -> dict[str, Any]:
    bench = Bench(args)
    name, count = args.workload, args.count
    try:
        if name == "setup":
            return await bench.setup()
        if name == "fill":
            return await bench.fill(count, args.finished)
        if name == "bulk":
            return await bench.bulk(count)
        if name == "single":
            return await bench.single(count)
        if name == "run":
            return await bench.run(count, args.concurrency, args.finished)
        if name == "rss":
            return await bench.rss(count, args.concurrency)
        if name == "stream":
            return await bench.stream(count, args.batch, args.concurrency)
        if name == "latency":
            return await bench.latency(count, args.gap_ms / 1000, args.concurrency)
        if name == "raw":
            return await bench.raw(count, args.concurrency)
    finally:
        bench.db.close()
    raise BenchError(f"workload {name!r} is not implemented for the SQLite driver")


def extra_args(parser: Any) -> None:
    parser.add_argument("--library", default="ours-sqlite", help="label for the JSON line")
    parser.add_argument(
        "--debounce-ms", type=float, default=None, help="queue debounce_interval (default: own)"
    )
    parser.add_argument(
        "--finished",
        type=int,
        default=0,
        help="fill: first insert this many finished jobs; run: expect them and skip them",
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
