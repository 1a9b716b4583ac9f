"""Benchmark driver for the two oban implementations: this repository's and oban-py 0.7.0.

Both expose the same public API (``Oban``, ``@worker``, ``Worker.new``/``enqueue``,
``enqueue_many``, ``oban.schema.install``), so one driver serves both: which ``oban`` it
measures is decided by the interpreter that runs it (the project's ``.venv`` for ours, the
oban-py venv the orchestrator creates under /tmp for oban-py).

One workload per process; prints one JSON line (see ``_common.py``). Tables live in the
``public`` schema of the database named in ``--dsn`` (the orchestrator gives each library its
own database). Everything is checked in ``oban_jobs`` afterwards: exact count, state, attempt.

Two workloads exist for ours only (run.py never gives them to oban-py): ``fill --finished F``
first inserts F finished jobs with one ``INSERT ... SELECT FROM generate_series`` (then the
available ones, then ``ANALYZE`` and ``CHECKPOINT``), and ``run --finished F`` runs the
available jobs with those rows in the table, checking only the rows after the finished ones
(by id) and that the finished ones were left alone; ``rss`` is ``run`` with the resident set
sampled every tenth of the jobs and no per-job objects kept by the harness.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from typing import Any

import _common
import psycopg
from _common import BenchError, Meter, RssTracker, Tracker

from oban import Job, Oban, schema, worker

QUEUE = "bench"
PREFIX = "public"
TRACKER = Tracker(0)

# One statement for the finished jobs of ``fill --finished`` (see _common.FINISHED_STATES for
# the mix). Row g finishes (n - g) / n of the span before now, so ids follow time.
FINISHED_INSERT = """
INSERT INTO oban_jobs (
  state, queue, worker, args, errors, attempt, max_attempts, inserted_at, scheduled_at,
  attempted_at, completed_at, discarded_at, cancelled_at, attempted_by
)
SELECT
  r.state::oban_job_state, %(queue)s, %(worker)s, jsonb_build_object('i', r.g),
  CASE WHEN r.state = 'discarded' OR r.attempt > 1 THEN ARRAY[jsonb_build_object(
    'attempt', CASE WHEN r.state = 'discarded' THEN r.attempt ELSE r.attempt - 1 END,
    'at', to_char(r.done, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'error', 'RuntimeError: bench: a failed attempt'
  )] ELSE ARRAY[]::jsonb[] END,
  r.attempt, %(max_attempts)s,
  r.done - make_interval(secs => 0.05 + 15 * (r.attempt - 1)),
  r.done - make_interval(secs => 0.05 + 15 * (r.attempt - 1)),
  r.done - interval '2 milliseconds',
  CASE WHEN r.state = 'completed' THEN r.done END,
  CASE WHEN r.state = 'discarded' THEN r.done END,
  CASE WHEN r.state = 'cancelled' THEN r.done END,
  ARRAY['bench-earlier-node', '00000000-0000-4000-8000-000000000000']
FROM (
  SELECT
    g,
    CASE WHEN g %% 100 IN (0, 50) THEN 'discarded'
         WHEN g %% 100 IN (25, 75) THEN 'cancelled'
         ELSE 'completed' END AS state,
    CASE WHEN g %% 100 IN (0, 50) THEN %(max_attempts)s
         WHEN g %% 20 = 7 THEN 2
         ELSE 1 END AS attempt,
    timezone('UTC', now())
      - make_interval(secs => %(span)s * (%(n)s - g) / %(n)s) AS done
  FROM generate_series(1, %(n)s::bigint) AS g
) AS r
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


class Database:
    """A dedicated autocommit connection for truncating and checking, outside oban's pool."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        # The checks look only at rows with a greater id: the jobs of this workload, not the
        # finished ones that ``fill --finished`` put in front of them.
        self.after_id = 0

    async def truncate(self) -> None:
        await self.conn.execute("TRUNCATE oban_jobs")

    async def states(self, finished: bool = False) -> dict[str, tuple[int, int, int]]:
        """state -> (count, min attempt, max attempt) of the workload's rows (``id >
        after_id``), or with ``finished`` of the finished rows in front of them."""
        where = "id <= %s" if finished else "id > %s"
        rows = await (
            await self.conn.execute(
                "SELECT state::text, count(*), min(attempt), max(attempt)"
                f" FROM oban_jobs WHERE {where} GROUP BY state",
                (self.after_id,),
            )
        ).fetchall()
        return {state: (count, lo, hi) for state, count, lo, hi in rows}

    async def id_range(self) -> tuple[int, int]:
        """(min id, max id) of the workload's rows."""
        row = await (
            await self.conn.execute(
                "SELECT min(id), max(id) FROM oban_jobs WHERE id > %s", (self.after_id,)
            )
        ).fetchone()
        return (int(row[0]), int(row[1])) if row and row[0] is not None else (0, -1)

    async def skip_finished(self, name: str, finished: int) -> dict[str, tuple[int, int, int]]:
        """Before a run: find the ``finished`` rows of ``fill --finished`` (every row in a
        finished state; their ids come before the available jobs), point the checks past
        them, and return their states for the check after the run."""
        row = await (
            await self.conn.execute(
                "SELECT count(*), max(id) FROM oban_jobs"
                " WHERE state IN ('completed', 'discarded', 'cancelled')"
            )
        ).fetchone()
        count, last = (int(row[0]), int(row[1] or 0)) if row else (0, 0)
        if count != finished:
            raise BenchError(f"{name}: expected {finished} finished jobs in front, found {count}")
        self.after_id = last
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
        return f"oban_jobs: {expected} {state}, attempt {attempt}"

    async def all_completed(self, expected: int) -> tuple[bool, str | None]:
        row = await (
            await self.conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'completed'),"
                " count(*) FILTER (WHERE state NOT IN ('available', 'executing', 'completed'))"
                " FROM oban_jobs WHERE id > %s",
                (self.after_id,),
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

    async def fill(self, count: int, finished: int = 0) -> dict[str, Any]:
        """Insert ``count`` available jobs in calls of 10,000; with ``finished``, first that
        many finished jobs of the same queue and worker in one statement, and ANALYZE and
        CHECKPOINT at the end (none of it is timed by run.py)."""
        assert self.db and self.client
        await self.db.truncate()
        out: dict[str, Any] = {}
        t0 = time.perf_counter()
        if finished:
            params = {
                "queue": QUEUE,
                "worker": NoopWorker.new({}).worker,
                "max_attempts": _common.FINISHED_MAX_ATTEMPTS,
                "span": _common.FINISHED_SPAN_S,
                "n": finished,
            }
            await self.db.conn.execute(FINISHED_INSERT, params)
            before = await self.db.skip_finished("fill", finished)
            out["finished_max_id"] = self.db.after_id
            out["finished_states"] = {state: n for state, (n, _, _) in before.items()}
        for start in range(0, count, 10_000):
            stop = min(count, start + 10_000)
            await self.client.enqueue_many([NoopWorker.new({"i": i}) for i in range(start, stop)])
        if finished:
            # What an application's autovacuum would have done by now (it is off on the
            # benchmark server), and no checkpoint left owing for the timed run.
            await self.db.conn.execute("ANALYZE oban_jobs")
            try:  # superuser or pg_checkpoint only; without it the run may pay for one
                await self.db.conn.execute("CHECKPOINT")
                out["checkpoint"] = True
            except psycopg.errors.InsufficientPrivilege:
                out["checkpoint"] = False
            out["prefill_s"] = time.perf_counter() - t0
        out["verified"] = await self.db.verify("fill", count, "available", 0)
        return out

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

    async def run(self, count: int, concurrency: int, finished: int = 0) -> dict[str, Any]:
        """Run ``count`` jobs pre-inserted by the ``fill`` workload (another process), with
        ``finished`` finished jobs in front of them when ``fill`` had ``--finished``."""
        global TRACKER
        assert self.db
        extra: dict[str, Any] = {}
        if finished:
            before = await self.db.skip_finished("run", finished)
            extra = {"finished": finished, "finished_max_id": self.db.after_id}
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
        verified = await self.db.verify("run", count, "completed", 1) + ", each ran once"
        if finished:
            verified += "; " + await self.db.check_finished("run", before)
        return _common.result(meter, count, verified, stop_ms=stop_ms, **extra)

    async def rss(self, count: int, concurrency: int) -> dict[str, Any]:
        """``run`` of ``count`` pre-inserted jobs, sampling the process's current RSS every
        ``count // 10`` jobs (in the handler) to see whether it grows with the jobs run."""
        global TRACKER
        assert self.db
        await self.db.verify("rss (pre-inserted)", count, "available", 0)
        first, last = await self.db.id_range()
        if last - first + 1 != count:
            raise BenchError(f"rss: the {count} job ids are not contiguous ({first}..{last})")
        TRACKER = RssTracker(count, first, count // 10)
        node = self.runner(concurrency)
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
    raise BenchError(f"unknown workload {name!r}")


def extra_args(parser: Any) -> None:
    parser.add_argument("--library", default="oban", help="label for the JSON line")
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
