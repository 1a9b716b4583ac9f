"""What a dashboard asks of a large table: ``list_jobs`` and ``count_jobs`` on a million jobs.

For each engine the table is seeded with ``--rows`` jobs (default 1,000,000) by one
``INSERT ... SELECT`` (``generate_series`` on PostgreSQL, a recursive CTE on SQLite), spread
like a production table: mostly completed, the rest available, scheduled, retryable,
discarded, cancelled and executing; ten queues and ten workers with a skew; args with an
account id, an e-mail address, a kind and a number; a tag and a meta source. Then ``ANALYZE``.

Each operation runs once to warm up and ``--repeat`` times (default 5); the table shows the
median in milliseconds, the rows it returned, and marks with ``!`` every median above 200 ms.
The times are those of the public call (``await oban.list_jobs(...)``), so they include
turning the rows into ``Job`` objects. PostgreSQL is measured twice: right after the seed and
``ANALYZE`` (column ``postgres``: like a table that autovacuum has not reached yet, its
visibility map empty, so index-only scans still read the heap), then after ``VACUUM (ANALYZE)``
(column ``pg+vacuum``: the steady state of a table autovacuum keeps up with).

PostgreSQL: a schema of its own (``bench_query_<hex>``) in the DSN's database, installed with
``oban.schema.install`` and dropped at the end (``--keep`` leaves it for ``EXPLAIN``).
SQLite: a new file in a temporary directory, removed at the end (``--keep`` leaves it).

    .venv/bin/python bench/bench_query.py                    # both engines, 1,000,000 rows
    .venv/bin/python bench/bench_query.py --quick            # 100,000 rows
    .venv/bin/python bench/bench_query.py --engine sqlite    # no server needed
    .venv/bin/python bench/bench_query.py --rows 250000 --repeat 9 --keep

The DSN comes from ``--dsn`` or ``OBAN_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from oban import JobCounts, JobPage, Oban, schema

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SLOW_MS = 200.0

#: (state, per mille of the rows)
STATES = [
    ("completed", 780),
    ("available", 60),
    ("scheduled", 60),
    ("discarded", 40),
    ("cancelled", 30),
    ("retryable", 20),
    ("executing", 10),
]
#: (queue, per cent of the rows)
QUEUES = [
    ("default", 30),
    ("mailers", 20),
    ("webhooks", 15),
    ("media", 10),
    ("reports", 8),
    ("billing", 6),
    ("search", 4),
    ("exports", 3),
    ("imports", 2),
    ("alerts", 2),
]
WORKERS = [
    "MyApp.Workers.SendEmail",
    "MyApp.Workers.DeliverWebhook",
    "MyApp.Workers.ResizeImage",
    "MyApp.Workers.BuildReport",
    "MyApp.Workers.ChargeCard",
    "MyApp.Workers.IndexDocument",
    "MyApp.Workers.ExportCsv",
    "MyApp.Workers.ImportCsv",
    "MyApp.Workers.SendAlert",
    "MyApp.Workers.Cleanup",
]
KINDS = ["welcome", "digest", "reset", "receipt"]
ACCOUNTS = 5_000


def _buckets(pairs: list[tuple[str, int]], hashed: str) -> str:
    """A CASE that maps ``hashed`` (0 to the sum of the weights - 1) to a name, by weight."""
    edge, arms = 0, []
    for name, weight in pairs[:-1]:
        edge += weight
        arms.append(f"WHEN {hashed} < {edge} THEN '{name}'")
    return f"CASE {' '.join(arms)} ELSE '{pairs[-1][0]}' END"


# Multiplicative hashes of g modulo primes above any --rows, so that the columns are spread,
# reproducible and independent of each other and of the args (which follow g modulo small
# numbers).
STATE_SQL = _buckets(STATES, "((g * 2654435761) % 10000019 % 1000)")
QUEUE_SQL = _buckets(QUEUES, "((g * 40503) % 10000079 % 100)")
WORKER_SQL = "CASE (g * 48271) % 10000103 % 10 " + " ".join(
    f"WHEN {i} THEN '{w}'" for i, w in enumerate(WORKERS)
)
WORKER_SQL += " END"
KIND_SQL = "CASE g % 4 " + " ".join(f"WHEN {i} THEN '{k}'" for i, k in enumerate(KINDS)) + " END"

# psycopg takes % for its placeholders: the fragments' modulo operators are doubled.
_PG = {
    name: text.replace("%", "%%")
    for name, text in {
        "state": STATE_SQL,
        "queue": QUEUE_SQL,
        "worker": WORKER_SQL,
        "kind": KIND_SQL,
    }.items()
}

POSTGRES_SEED = f"""
INSERT INTO oban_jobs (state, queue, worker, args, meta, tags, attempt,
  inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at)
SELECT s.state::oban_job_state, s.queue, s.worker, s.args, s.meta, s.tags, s.attempt,
  s.at, s.at, s.done, CASE WHEN s.state = 'completed' THEN s.done END,
  CASE WHEN s.state = 'discarded' THEN s.done END,
  CASE WHEN s.state = 'cancelled' THEN s.done END
FROM (
  SELECT {_PG["state"]} AS state, {_PG["queue"]} AS queue, {_PG["worker"]} AS worker,
    jsonb_build_object('account_id', g %% {ACCOUNTS}, 'email', 'user' || g || '@example.com',
                       'kind', {_PG["kind"]}, 'n', g %% 7) AS args,
    jsonb_build_object('source', CASE WHEN g %% 10 = 0 THEN 'cron' ELSE 'api' END) AS meta,
    ARRAY['tenant-' || (g %% 20)] AS tags,
    1 AS attempt,
    timezone('UTC', now()) - make_interval(secs => (%(rows)s - g)::double precision) AS at,
    timezone('UTC', now()) - make_interval(secs => (%(rows)s - g)::double precision - 1) AS done
  FROM generate_series(1::bigint, %(rows)s::bigint) AS g
) AS s
"""

SQLITE_SEED = f"""
WITH RECURSIVE series(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM series WHERE g < :rows),
s AS (
  SELECT {STATE_SQL} AS state, {QUEUE_SQL} AS queue, {WORKER_SQL} AS worker,
    json_object('account_id', g % {ACCOUNTS}, 'email', 'user' || g || '@example.com',
                'kind', {KIND_SQL}, 'n', g % 7) AS args,
    json_object('source', CASE WHEN g % 10 = 0 THEN 'cron' ELSE 'api' END) AS meta,
    json_array('tenant-' || (g % 20)) AS tags,
    strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (:rows - g) || ' seconds') AS at,
    strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (:rows - g - 1) || ' seconds') AS done
  FROM series
)
INSERT INTO oban_jobs (state, queue, worker, args, meta, tags, attempt,
  inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at)
SELECT state, queue, worker, args, meta, tags, 1, at, at, done,
  CASE WHEN state = 'completed' THEN done END,
  CASE WHEN state = 'discarded' THEN done END,
  CASE WHEN state = 'cancelled' THEN done END
FROM s
"""


@dataclass
class Target:
    """One engine's client on a seeded table."""

    name: str
    oban: Oban
    seed_seconds: float
    first_id: int
    last_id: int
    #: PostgreSQL: VACUUM the table (sets the visibility map, as autovacuum would).
    vacuum: Callable[[], Awaitable[None]] | None = None


Result = JobPage | JobCounts
Operation = tuple[str, Callable[[Oban], Awaitable[Result]]]


def operations(target: Target, rows: int) -> list[Operation]:
    """What a dashboard does, by name."""
    deep = str(target.first_id + (target.last_id - target.first_id) // 10)
    email = f"user{target.first_id + rows // 2}@"  # one row
    account = {"account_id": 4242 % ACCOUNTS}  # rows / 5,000
    return [
        ("list: first page", lambda o: o.list_jobs()),
        ("list: deep page (90% down)", lambda o: o.list_jobs(after=deep)),
        ("list: state=available", lambda o: o.list_jobs(state="available")),
        ("list: state=discarded, deep", lambda o: o.list_jobs(state="discarded", after=deep)),
        ("list: queue+state (billing, retryable)", lambda o: _queue_state(o)),
        ("list: worker", lambda o: o.list_jobs(worker=WORKERS[4])),
        ("list: args @> {account_id} (0.02%)", lambda o: o.list_jobs(args=account)),
        ("list: args @> {kind} (25%)", lambda o: o.list_jobs(args={"kind": "reset"})),
        ("list: args+state", lambda o: o.list_jobs(args=account, state="available")),
        ("list: search, one match", lambda o: o.list_jobs(search=email)),
        ("list: search, every row matches", lambda o: o.list_jobs(search="example.com")),
        ("count: by state", lambda o: o.count_jobs(("state",))),
        ("count: by (state, queue)", lambda o: o.count_jobs(("state", "queue"))),
        ("count: by queue, state=available", lambda o: o.count_jobs(("queue",), state="available")),
    ]


def _queue_state(oban: Oban) -> Awaitable[JobPage]:
    return oban.list_jobs(queue="billing", state="retryable")


def _size(result: Result) -> str:
    if isinstance(result, JobPage):
        return f"{len(result.jobs)} jobs"
    estimated = f", {len(result.estimated)} estimated" if result.estimated else ""
    return f"{len(result)} groups{estimated}"


async def measure(target: Target, rows: int, repeat: int) -> dict[str, tuple[float, str]]:
    """Each operation's median milliseconds and what it returned."""
    results: dict[str, tuple[float, str]] = {}
    for name, call in operations(target, rows):
        result = await call(target.oban)  # warm-up: connection, caches, the plan
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            result = await call(target.oban)
            times.append((time.perf_counter() - started) * 1000)
        results[name] = (statistics.median(times), _size(result))
        print(f"  {target.name:<8} {name:<42} {results[name][0]:>9.1f} ms", flush=True)
    return results


@asynccontextmanager
async def postgres(dsn: str, rows: int, keep: bool) -> AsyncIterator[Target]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=10, open=False)
    await pool.open(wait=True, timeout=10)
    prefix = f"bench_query_{uuid.uuid4().hex[:8]}"
    oban = Oban(pool=pool, prefix=prefix, name="bench-query-postgres")
    try:
        await schema.install(pool, prefix)
        started = time.perf_counter()
        async with pool.connection() as conn:
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(prefix)))
            await conn.execute(POSTGRES_SEED.encode(), {"rows": rows})
            await conn.execute("ANALYZE oban_jobs")
            cur = await conn.execute("SELECT min(id), max(id) FROM oban_jobs")
            first, last = await cur.fetchone() or (0, 0)
            await conn.execute("RESET search_path")
            await conn.commit()
        seeded = time.perf_counter() - started

        async def vacuum() -> None:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                table = sql.Identifier(prefix, "oban_jobs")
                await conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))

        yield Target("postgres", oban, seeded, int(first), int(last), vacuum)
    finally:
        try:
            await oban.stop()
            if keep:
                print(f"kept the PostgreSQL schema {prefix}")
            else:
                async with pool.connection() as conn:
                    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                    await conn.execute(drop.format(sql.Identifier(prefix)))
        finally:
            await pool.close()


@asynccontextmanager
async def sqlite(directory: Path, rows: int) -> AsyncIterator[Target]:
    path = directory / "query.db"
    oban = Oban(dsn=f"sqlite:///{path}", name="bench-query-sqlite")

    def seed() -> tuple[int, int]:
        with closing(sqlite3.connect(path, timeout=10)) as conn:
            with conn:
                conn.execute(SQLITE_SEED, {"rows": rows})
            conn.execute("ANALYZE")
            first, last = conn.execute("SELECT min(id), max(id) FROM oban_jobs").fetchone()
        return int(first), int(last)

    try:
        assert await oban.get_job(1) is None  # opens the file and installs the schema
        started = time.perf_counter()
        first, last = await asyncio.to_thread(seed)
        seeded = time.perf_counter() - started
        await oban.stop()  # a fresh connection reads the new statistics
        oban = Oban(dsn=f"sqlite:///{path}", name="bench-query-sqlite")
        yield Target("sqlite", oban, seeded, first, last)
    finally:
        await oban.stop()


def report(results: dict[str, dict[str, tuple[float, str]]]) -> None:
    engines = list(results)
    names = list(next(iter(results.values())))
    header = f"{'operation':<40}" + "".join(f" {e + ' ms':>16}" for e in engines) + "  returned"
    print(header)
    print("-" * (len(header) + 20))
    for name in names:
        cells, sizes = "", []
        for engine in engines:
            ms, size = results[engine][name]
            cells += f" {ms:>15.1f}{'!' if ms > SLOW_MS else ' '}"
            if size not in sizes:
                sizes.append(size)
        print(f"{name:<40}{cells}  {' / '.join(sizes)}")
    print(f"! = median above {SLOW_MS:.0f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=("both", "postgres", "sqlite"), default="both")
    parser.add_argument("--dsn", default=os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="jobs in the table (at most 10,000,000)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per operation (median)")
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument(
        "--keep", action="store_true", help="keep the schema and the SQLite file (paths printed)"
    )
    args = parser.parse_args()
    rows = 100_000 if args.quick else args.rows
    if not 1_000 <= rows <= 10_000_000:
        parser.error("--rows must be from 1,000 to 10,000,000")
    engines = ("postgres", "sqlite") if args.engine == "both" else (args.engine,)
    results: dict[str, dict[str, tuple[float, str]]] = {}
    seeded: dict[str, float] = {}
    for engine in engines:
        print(f"seeding {rows:,} jobs on {engine} ...", flush=True)
        if engine == "postgres":
            async with postgres(args.dsn, rows, args.keep) as target:
                seeded[engine] = target.seed_seconds
                results[engine] = await measure(target, rows, args.repeat)
                assert target.vacuum is not None
                print("VACUUM (ANALYZE) ...", flush=True)
                await target.vacuum()
                target.name = "pg+vacuum"
                results[target.name] = await measure(target, rows, args.repeat)
            continue
        directory = Path(tempfile.mkdtemp(prefix="oban-bench-query-"))
        try:
            async with sqlite(directory, rows) as target:
                seeded[engine] = target.seed_seconds
                results[engine] = await measure(target, rows, args.repeat)
        finally:
            if args.keep:
                print(f"kept the SQLite file {directory / 'query.db'}")
            else:
                shutil.rmtree(directory, ignore_errors=True)
    print()
    print(
        f"{rows:,} jobs; median of {args.repeat} runs after one warm-up; seeding took "
        + ", ".join(f"{e} {s:.1f} s" for e, s in seeded.items())
    )
    report(results)


if __name__ == "__main__":
    asyncio.run(main())
