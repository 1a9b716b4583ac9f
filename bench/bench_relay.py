"""The cost of awaitable results (``relay``), against plain jobs, in one run.

For each engine (``--engine``, default both):

a. **plain insert-to-start**, on an idle queue ``bench:10`` of a node in this process:
   ``--samples`` sequential ``await Stamp.enqueue({})``. The latency is the
   ``time.perf_counter()`` the worker records as ``process`` starts (its recorded value)
   minus the one taken just before the call; the job's completion is awaited, untimed,
   before the next sample.
b. **relay round trip**, on the same node: ``--samples`` sequential ``await Noop.relay({})``
   of a no-op worker, timed around the call. a and b alternate sample by sample (and which
   of the two goes first alternates too), after 20 untimed pairs. Prints p50/p95/p99 of each
   and b - a at p50 and at p99; the target is at most 2 ms at both.
c. The same two **across processes**: the waiter is a client-mode instance (no queues) in this
   process, and the jobs run in a ``python -m oban start --queues bench:10,load:50
   --cron-modules relay_workers`` node (on SQLite ``bench:10`` only). On Linux
   ``perf_counter`` is CLOCK_MONOTONIC, one clock for every process, so the node's start time
   can be subtracted here. On SQLite both sides poll (the node for new jobs every second, the
   waiter every ``poll_interval``, 0.5 s), so it takes only ``--sqlite-cross`` samples, each
   after an untimed random pause of up to a second.
d. **Many waiters at once**: for each ``--concurrent`` count (default 1,000 and 10,000),
   that many jobs of queue ``load:50`` waited for at once from this process, two ways: a
   ``Noop.relay`` per job (``asyncio.gather``), and one ``enqueue_many`` of jobs with
   ``meta.relay`` followed by one ``await_many``. On PostgreSQL the waiter is the client-mode
   instance of c and the node the ``oban start`` process; on SQLite the node runs in this
   process. Prints failures, the wall time, jobs/s, this process's CPU per job and the
   waits' row-read statements per job (the engine's ``get_jobs`` and ``get_jobs_on``,
   counted). While they run it samples the client pool (``pool.get_stats()``: its largest
   size and longest queue of requests) and this process's server connections
   (``pg_stat_activity`` rows of its ``application_name``: the pool and the relay listener).
   It also prints RSS before, after and at the peak.
e. **Plain jobs pay nothing**: ``--drain-jobs`` plain no-op jobs are inserted with one
   ``enqueue_many``, then drained by a node started after the insert (queue ``drain:20``, as
   in ``bench/run.py``'s run workload). The time runs from ``start()`` until the database
   shows them all completed. Each run is a fresh process on a fresh schema or file. The
   variants are: this tree's ``src``; with ``--baseline-src DIR``, another tree's (the
   commit before relay: ``git worktree add /tmp/oban-base <commit>``); and this tree again
   with every job enqueued with ``meta.relay`` and nobody waiting. Each runs ``--repeat``
   times, alternating, and the table shows medians.

PostgreSQL: a schema of its own (``bench_relay_<hex>``) in the DSN's database, installed with
``oban.schema.install`` and dropped at the end (one more per drain run, dropped after it).
SQLite: files in a new temporary directory, removed at the end.

    .venv/bin/python bench/bench_relay.py                          # both engines, ~4 min
    .venv/bin/python bench/bench_relay.py --quick                  # smaller counts, ~1 min
    .venv/bin/python bench/bench_relay.py --engine sqlite          # no server needed
    git worktree add /tmp/oban-base <commit before relay>
    .venv/bin/python bench/bench_relay.py --baseline-src /tmp/oban-base/src
    git worktree remove /tmp/oban-base

The DSN comes from ``--dsn`` or ``OBAN_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from relay_workers import Noop, Stamp

from oban import Oban, schema

SCRIPT = Path(__file__).resolve()
BENCH_DIR = SCRIPT.parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: The ``application_name`` of this process's client connections (pool and relay listener).
APP = "oban_bench_relay"
TARGET_MS = 2.0
WARMUP = 20
QUEUE_LIMIT = 10
LOAD_LIMIT = 50
DRAIN_LIMIT = 20
#: The two ways d waits for many jobs (see ``many``).
WAYS = ("relay", "await_many")
#: How long one relay or wait may take before the run fails (it never should).
TIMEOUT = 60.0


@dataclass
class Target:
    """One engine's database: what ``Oban(...)`` takes, and for PostgreSQL an admin pool."""

    engine: str
    dsn: str
    prefix: str
    workdir: Path
    admin: AsyncConnectionPool[Any] | None = None

    @property
    def postgres(self) -> bool:
        return self.engine == "postgres"

    def options(self, application_name: str | None = None) -> dict[str, Any]:
        if not self.postgres:
            return {"dsn": self.dsn}
        dsn = self.dsn
        if application_name is not None:
            dsn += ("&" if "?" in dsn else "?") + f"application_name={application_name}"
        return {"dsn": dsn, "prefix": self.prefix}


@dataclass
class Latency:
    """Sequential samples, in ms: plain insert-to-start and relay round trips, paired."""

    plain: list[float] = field(default_factory=list)
    relay: list[float] = field(default_factory=list)


@dataclass
class Load:
    way: str  # "relay": a Worker.relay per job; "await_many": enqueue_many, then await_many
    relays: int
    seconds: float
    cpu_seconds: float
    failed: int = 0
    first_error: str = ""
    reads: int = 0  # the waiters' row reads (engine.get_jobs and get_jobs_on calls)
    pool_max: int | None = None  # pool_max of the client pool
    pool_size: int | None = None  # its largest size seen
    waiting: int | None = None  # the longest queue of requests for a connection seen
    backends_idle: int | None = None  # this process's server connections before
    backends: int | None = None  # and the most seen while the relays ran
    rss_before: float = 0.0
    rss_after: float = 0.0
    rss_peak: float = 0.0


@dataclass
class Drain:
    variant: str
    seconds: float
    cpu_seconds: float
    jobs: int


@dataclass
class Results:
    same: Latency | None = None
    cross: Latency | None = None
    loads: list[Load] = field(default_factory=list)
    drains: list[Drain] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def postgres_schema(admin: AsyncConnectionPool[Any], tag: str) -> AsyncIterator[str]:
    """A new schema with oban installed; dropped afterwards."""
    prefix = f"bench_relay_{uuid.uuid4().hex[:8]}{tag}"
    try:
        await schema.install(admin, prefix)
        yield prefix
    finally:
        async with admin.connection() as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(prefix))
            await conn.execute(drop)


@asynccontextmanager
async def database(engine: str, dsn: str, workdir: Path) -> AsyncIterator[Target]:
    if engine == "sqlite":
        yield Target(engine, f"sqlite:///{workdir / 'relay.db'}", "public", workdir)
        return
    admin: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
    await admin.open(wait=True, timeout=10)
    try:
        async with postgres_schema(admin, "") as prefix:
            yield Target(engine, dsn, prefix, workdir, admin)
    finally:
        await admin.close()


async def backends(admin: AsyncConnectionPool[Any]) -> int:
    """This process's client connections to the server (its ``application_name``)."""
    async with admin.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


# ---------------------------------------------------------------------------------------------
# a, b, c: one job at a time
# ---------------------------------------------------------------------------------------------


async def plain_once(oban: Oban, poll: float) -> float:
    """Insert-to-start of one plain job, in ms; waits (untimed) until it completed."""
    started = time.perf_counter()
    job = await Stamp.enqueue({})
    outcome = await oban.wait_for(job, timeout=TIMEOUT, poll_interval=poll)
    if outcome.state != "completed" or not isinstance(outcome.value, float):
        raise SystemExit(f"plain job {job.id} ended {outcome.state}: {outcome.error}")
    return (outcome.value - started) * 1000


async def relay_once() -> float:
    """The round trip of one relay of a no-op job, in ms."""
    started = time.perf_counter()
    value = await Noop.relay({}, timeout=TIMEOUT)
    took = (time.perf_counter() - started) * 1000
    if value is not None:
        raise SystemExit(f"a no-op relay returned {value!r}")
    return took


async def pairs(
    oban: Oban, samples: int, plain_poll: float, warmup: int = WARMUP, gap: float = 0.0
) -> Latency:
    """``samples`` plain jobs and relays, alternating (and which goes first), after ``warmup``
    pairs; ``gap``: an untimed pause of up to that many seconds before each, so that a node
    that polls is met at a random point of its interval, not always at the same one."""
    found = Latency()
    jitter = random.Random(samples)

    async def pause() -> None:
        if gap:
            await asyncio.sleep(jitter.uniform(0, gap))

    for index in range(warmup + samples):
        await pause()
        if index % 2:
            relay = await relay_once()
            await pause()
            plain = await plain_once(oban, plain_poll)
        else:
            plain = await plain_once(oban, plain_poll)
            await pause()
            relay = await relay_once()
        if index >= warmup:
            found.plain.append(plain)
            found.relay.append(relay)
    return found


async def same_process(target: Target, samples: int) -> Latency:
    # Named "Oban" (the default), as Worker.enqueue and Worker.relay look it up.
    oban = Oban(**target.options(), queues={"bench": QUEUE_LIMIT})
    await oban.start()
    try:
        return await pairs(oban, samples, plain_poll=0.5)
    finally:
        await oban.stop()


@asynccontextmanager
async def node_process(target: Target, queues: str, client: Oban) -> AsyncIterator[None]:
    """``python -m oban start`` on the target's database, until its producers registered."""
    output = target.workdir / f"node-{target.engine}.out"
    command = [sys.executable, "-m", "oban", "start", "--dsn", target.dsn]
    if target.postgres:
        command += ["--prefix", target.prefix]
    command += ["--queues", queues, "--cron-modules", "relay_workers", "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    with output.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=target.workdir, env=env, stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 60
        while not any("bench" in node.queues for node in await client.nodes()):
            if proc.returncode is not None or time.monotonic() > deadline:
                tail = output.read_text(errors="replace")[-3000:]
                raise SystemExit(f"oban start did not come up (exit {proc.returncode}):\n{tail}")
            await asyncio.sleep(0.05)
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# ---------------------------------------------------------------------------------------------
# d: many waiters at once
# ---------------------------------------------------------------------------------------------


def status_mb(key: str) -> float:
    """A ``/proc/self/status`` size (``VmRSS``, ``VmHWM``) in MB; 0.0 where there is none."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def sample(load: Load, oban: Oban, admin: AsyncConnectionPool[Any] | None) -> None:
    """Until cancelled: the client pool every 10 ms, the server's view every 100 ms."""
    tick = 0
    while True:
        if oban.pool is not None:
            stats = oban.pool.get_stats()
            load.pool_size = max(load.pool_size or 0, stats.get("pool_size", 0))
            load.waiting = max(load.waiting or 0, stats.get("requests_waiting", 0))
        if admin is not None and tick % 10 == 0:
            load.backends = max(load.backends or 0, await backends(admin))
        load.rss_peak = max(load.rss_peak, status_mb("VmRSS"))
        tick += 1
        await asyncio.sleep(0.01)


async def many(oban: Oban, target: Target, count: int, way: str) -> Load:
    """``count`` jobs waited for at once from queue ``load``, ``way``: ``"relay"`` (``count``
    concurrent ``Worker.relay`` calls) or ``"await_many"`` (one ``enqueue_many`` of jobs with
    ``meta.relay``, then one ``await_many``). Failures are counted, not raised."""
    await Noop.relay({}, queue="load", timeout=TIMEOUT)  # the listener, the statements
    gc.collect()
    load = Load(way=way, relays=count, seconds=0.0, cpu_seconds=0.0)
    if oban.pool is not None:
        load.pool_max = oban.pool.get_stats().get("pool_max")
    if target.admin is not None:
        load.backends_idle = await backends(target.admin)
    peak_reset = reset_peak()
    load.rss_before = status_mb("VmRSS")
    engine, own = count_reads(oban, load)
    sampler = asyncio.create_task(sample(load, oban, target.admin))
    cpu, started = time.process_time(), time.perf_counter()
    if way == "relay":
        calls = (Noop.relay({"i": i}, queue="load", timeout=600) for i in range(count))
        results = await asyncio.gather(*calls, return_exceptions=True)
    else:
        jobs = [Noop.new({"i": i}, queue="load", meta={"relay": True}) for i in range(count)]
        outcomes = await oban.await_many(await oban.enqueue_many(jobs), timeout=600)
        results = [None if o.state == "completed" else RuntimeError(o) for o in outcomes]
    load.seconds = time.perf_counter() - started
    load.cpu_seconds = time.process_time() - cpu
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    for name, method in own.items():
        setattr(engine, name, method)
    failed = [result for result in results if result is not None]
    if failed:
        kinds = Counter(type(error).__name__ for error in failed)
        load.failed = len(failed)
        load.first_error = f"{dict(kinds)}; the first: {failed[0]!r}"
    del results, failed
    gc.collect()
    load.rss_after = status_mb("VmRSS")
    if peak_reset:
        load.rss_peak = max(load.rss_peak, status_mb("VmHWM"))
    await drained(oban)
    return load


def count_reads(oban: Oban, load: Load) -> tuple[Any, dict[str, Any]]:
    """Count the row reads of the waiters in ``load.reads``: the engine's ``get_jobs`` and,
    on PostgreSQL, ``get_jobs_on`` (reads on the relay listener's connection) (private; a
    diagnostic: how the waits' cost grows with their number). Returns the engine and its own
    methods, to put back."""
    engine: Any = oban._engine
    own = {
        name: getattr(engine, name) for name in ("get_jobs", "get_jobs_on") if hasattr(engine, name)
    }

    async def counted(ids: list[int]) -> Any:
        load.reads += 1
        return await own["get_jobs"](ids)

    async def counted_on(conn: Any, ids: list[int]) -> Any:
        load.reads += 1
        return await own["get_jobs_on"](conn, ids)

    engine.get_jobs = counted
    if "get_jobs_on" in own:
        engine.get_jobs_on = counted_on
    return engine, own


async def drained(oban: Oban) -> None:
    """Until queue ``load`` has no job left to run (failed waits leave their jobs running)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        page = await oban.list_jobs(queue="load", state=["available", "executing"], limit=1)
        if not page.jobs:
            return
        await asyncio.sleep(0.1)
    raise SystemExit("queue load still has jobs to run after 10 minutes")


# ---------------------------------------------------------------------------------------------
# e: plain jobs drained by a node, per source tree (each run in a process of its own)
# ---------------------------------------------------------------------------------------------


async def drain_child(args: argparse.Namespace) -> None:
    """One drain run (``--drain-child``), on whatever ``oban`` PYTHONPATH gives; prints JSON."""
    import oban as package

    options: dict[str, Any] = {"dsn": args.dsn}
    if args.engine == "postgres":
        options["prefix"] = args.prefix
    node = Oban(**options, queues={"drain": args.drain_concurrency}, name="bench-relay-drain")
    meta = {"relay": True} if args.drain_relay else {}
    jobs = args.drain_jobs
    await node.enqueue_many([Noop.new({"i": i}, queue="drain", meta=meta) for i in range(jobs)])
    completed = await completed_counter(args)
    try:
        cpu, started = time.process_time(), time.perf_counter()
        await node.start()
        while True:  # the database, not the handlers, says when the jobs are done
            if await completed() >= jobs:
                break
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu
        await node.stop()
    finally:
        await completed.close()  # type: ignore[attr-defined]
    print(json.dumps({"oban": package.__file__, "seconds": seconds, "cpu_seconds": cpu_seconds}))


async def completed_counter(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """How many jobs are completed, read on a connection of its own; ``.close()`` closes it."""
    if args.engine == "postgres":
        conn = await psycopg.AsyncConnection.connect(args.dsn, autocommit=True)
        query = sql.SQL("SELECT count(*) FROM {} WHERE state = 'completed'").format(
            sql.Identifier(args.prefix, "oban_jobs")
        )

        async def count() -> int:
            row = await (await conn.execute(query)).fetchone()
            return int(row[0]) if row else 0

        count.close = conn.close  # type: ignore[attr-defined]
        return count
    path = args.dsn.removeprefix("sqlite:///")
    lite = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)

    def read() -> int:
        row = lite.execute("SELECT count(*) FROM oban_jobs WHERE state = 'completed'").fetchone()
        return int(row[0]) if row else 0

    async def count_lite() -> int:
        return await asyncio.to_thread(read)

    async def close() -> None:
        lite.close()

    count_lite.close = close  # type: ignore[attr-defined]
    return count_lite


async def drain_once(target: Target, args: argparse.Namespace, variant: str, src: Path) -> Drain:
    relay = variant.endswith("meta.relay")
    async with contextlib.AsyncExitStack() as stack:
        if target.admin is not None:
            prefix = await stack.enter_async_context(postgres_schema(target.admin, "_drain"))
            dsn = target.dsn
        else:
            prefix = "public"
            dsn = f"sqlite:///{target.workdir / f'drain-{uuid.uuid4().hex[:8]}.db'}"
        command = [sys.executable, str(SCRIPT), "--drain-child"]
        command += ["--engine", target.engine, "--dsn", dsn, "--prefix", prefix]
        command += ["--drain-jobs", str(args.drain_jobs)]
        command += ["--drain-concurrency", str(args.drain_concurrency)]
        command += ["--drain-relay"] if relay else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
        env["PYTHONPATH"] = os.pathsep.join([str(src), str(BENCH_DIR)])
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=target.workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"drain run ({variant}) failed:\n{err.decode()[-3000:]}")
        found = json.loads(out.decode().strip().splitlines()[-1])
        if not imported_from(found["oban"], src):
            raise SystemExit(f"the {variant} run imported oban from {found['oban']}, not {src}")
        return Drain(variant, found["seconds"], found["cpu_seconds"], args.drain_jobs)


def imported_from(module_file: str, src: Path) -> bool:
    """Whether ``oban/__init__.py`` at ``module_file`` is the package in ``src``."""
    return Path(module_file).resolve().parent.parent == src.resolve()


async def drains(target: Target, args: argparse.Namespace) -> list[Drain]:
    here = BENCH_DIR.parent / "src"
    variants = [("this tree", here), ("this tree, meta.relay", here)]
    if args.baseline_src is not None:
        variants.insert(0, ("baseline", Path(args.baseline_src)))
    found = []
    for run in range(args.repeat):
        for variant, src in variants if run % 2 == 0 else variants[::-1]:
            progress(f"{target.engine}: drain run {run + 1}/{args.repeat}, {variant}")
            found.append(await drain_once(target, args, variant, src))
    return found


# ---------------------------------------------------------------------------------------------
# One engine
# ---------------------------------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


async def measure(target: Target, args: argparse.Namespace) -> Results:
    results = Results()
    progress(f"{target.engine}: a, b: {args.samples} plain jobs and relays, node in this process")
    results.same = await same_process(target, args.samples)
    cross = args.samples if target.postgres else args.sqlite_cross
    if cross:
        client = Oban(**target.options(APP))
        try:
            async with node_process(target, f"bench:{QUEUE_LIMIT},load:{LOAD_LIMIT}", client):
                progress(f"{target.engine}: c: {cross} plain jobs and relays, node in oban start")
                if target.postgres:
                    results.cross = await pairs(client, cross, plain_poll=0.01)
                else:  # the node polls for new jobs every second
                    results.cross = await pairs(client, cross, 0.01, warmup=2, gap=1.0)
                if target.postgres:
                    for count, way in product(args.concurrent, WAYS):
                        progress(f"{target.engine}: d: {count:,} jobs waited for at once, {way}")
                        results.loads.append(await many(client, target, count, way))
        finally:
            await client.stop()
    if not target.postgres:
        node = Oban(**target.options(), queues={"load": LOAD_LIMIT})
        await node.start()
        try:
            for count, way in product(args.concurrent, WAYS):
                progress(f"{target.engine}: d: {count:,} jobs waited for at once, {way}")
                results.loads.append(await many(node, target, count, way))
        finally:
            await node.stop()
    results.drains = await drains(target, args)
    return results


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report_latency(results: dict[str, Results]) -> None:
    print(f"{'engine':<9} {'node':<13} {'series':<24} {'n':>5} {'p50':>8} {'p95':>8} {'p99':>8}")
    verdicts = []
    for engine, found in results.items():
        for where, latency in (("this process", found.same), ("oban start", found.cross)):
            if latency is None:
                continue
            for name, values in (
                ("plain insert-to-start", latency.plain),
                ("relay round trip", latency.relay),
            ):
                print(
                    f"{engine:<9} {where:<13} {name:<24} {len(values):>5} "
                    f"{percentile(values, 0.50):>8.2f} {percentile(values, 0.95):>8.2f} "
                    f"{percentile(values, 0.99):>8.2f}"
                )
            p50 = percentile(latency.relay, 0.50) - percentile(latency.plain, 0.50)
            p99 = percentile(latency.relay, 0.99) - percentile(latency.plain, 0.99)
            name = "relay - plain"
            print(f"{engine:<9} {where:<13} {name:<24} {'':>5} {p50:>8.2f} {'':>8} {p99:>8.2f}")
            met = "met" if max(p50, p99) <= TARGET_MS else "NOT met"
            if engine == "sqlite" and where == "oban start":
                met = "none: both sides poll, by design"
            verdicts.append(
                f"{engine}, {where}: relay - plain = {p50:+.2f} ms at p50, {p99:+.2f} ms at p99 "
                f"(target <= {TARGET_MS:g} ms: {met})"
            )
    for verdict in verdicts:
        print(verdict)


def report_load(results: dict[str, Results]) -> None:
    print(
        f"{'engine':<9} {'node':<13} {'way':<11} {'jobs':>7} {'failed':>7} {'wall s':>7} "
        f"{'jobs/s':>9} {'cpu ms/job':>11} {'reads/job':>10} {'pool size':>9} "
        f"{'waiting':>8} {'server conns':>13} {'RSS MB before':>14} {'after':>6} {'peak':>6}"
    )
    errors = []
    for engine, found in results.items():
        for load in found.loads:
            where = "oban start" if engine == "postgres" else "this process"
            pool = "-" if load.pool_size is None else f"{load.pool_size}/{load.pool_max}"
            waiting = "-" if load.waiting is None else str(load.waiting)
            conns = "-" if load.backends is None else f"{load.backends_idle} -> {load.backends}"
            done = load.relays - load.failed
            print(
                f"{engine:<9} {where:<13} {load.way:<11} {load.relays:>7,} {load.failed:>7,} "
                f"{load.seconds:>7.2f} {done / load.seconds:>9,.0f} "
                f"{load.cpu_seconds / load.relays * 1000:>11.3f} "
                f"{load.reads / load.relays:>10.2f} {pool:>9} {waiting:>8} {conns:>13} "
                f"{load.rss_before:>14.1f} {load.rss_after:>6.1f} {load.rss_peak:>6.1f}"
            )
            if load.failed:
                errors.append(f"{engine}, {load.relays:,} at once, {load.way}: {load.first_error}")
    for error in errors:
        print(f"failed waits, {error}")


def report_drains(results: dict[str, Results], args: argparse.Namespace) -> None:
    print(f"{'engine':<9} {'variant':<22} {'jobs/s':>8} {'cpu ms/job':>11} {'ratio':>22}")
    for engine, found in results.items():
        by_variant: dict[str, list[Drain]] = {}
        for drain in found.drains:
            by_variant.setdefault(drain.variant, []).append(drain)
        rates = {
            variant: statistics.median(d.jobs / d.seconds for d in runs)
            for variant, runs in by_variant.items()
        }
        for variant, runs in by_variant.items():
            cpu = statistics.median(d.cpu_seconds / d.jobs * 1000 for d in runs)
            against = "baseline" if variant == "this tree" else "this tree"
            ratio = ""
            if variant != "baseline" and against in rates:
                ratio = f"{rates[variant] / rates[against]:.2f}x {against}"
            print(f"{engine:<9} {variant:<22} {rates[variant]:>8,.0f} {cpu:>11.3f} {ratio:>22}")
    if args.baseline_src is None:
        print("(no --baseline-src: no baseline to compare this tree with)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=("both", "postgres", "sqlite"), default="both")
    parser.add_argument("--dsn", default=os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--samples", type=int, default=1000, help="sequential jobs per series")
    parser.add_argument("--sqlite-cross", type=int, default=20, help="c's samples on SQLite")
    parser.add_argument(
        "--concurrent",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1_000, 10_000],
        help="relays at once (d), one run per count (default 1000,10000)",
    )
    parser.add_argument("--drain-jobs", type=int, default=10_000, help="jobs per drain run (e)")
    parser.add_argument("--drain-concurrency", type=int, default=DRAIN_LIMIT)
    parser.add_argument("--baseline-src", help="another tree's src/ for e (the commit before)")
    parser.add_argument("--repeat", type=int, default=3, help="drain runs per variant (median)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200 samples, 10 on SQLite across processes, 1,000 relays at once, 2,000 jobs "
        "per drain run",
    )
    # One drain run, in a process of its own (run by the parent; the prefix is its schema).
    parser.add_argument("--drain-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--drain-relay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="public", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drain_child:
        await drain_child(args)
        return
    if args.quick:
        args.samples, args.sqlite_cross = min(args.samples, 200), min(args.sqlite_cross, 10)
        args.concurrent = sorted({min(count, 1000) for count in args.concurrent})
        args.drain_jobs = min(args.drain_jobs, 2000)
    engines = ("postgres", "sqlite") if args.engine == "both" else (args.engine,)
    results: dict[str, Results] = {}
    with tempfile.TemporaryDirectory(prefix="oban-bench-relay-") as tmp:
        for engine in engines:
            async with database(engine, args.dsn, Path(tmp)) as target:
                results[engine] = await measure(target, args)
    print()
    print(
        f"a-c. One job at a time on an idle queue bench:{QUEUE_LIMIT}, plain and relay "
        f"alternating, after {WARMUP} untimed pairs; ms"
    )
    report_latency(results)
    print()
    print(
        f"d. Many jobs waited for at once, from a queue load:{LOAD_LIMIT}: a relay per job "
        "(asyncio.gather), or enqueue_many + await_many; reads: the waits' row-read statements; "
        "pool size and requests waiting for a connection, largest seen; this process's server "
        "connections, idle -> largest seen"
    )
    report_load(results)
    print()
    print(
        f"e. {args.drain_jobs:,} no-op jobs, enqueue_many, then drained by a node with queue "
        f"drain:{args.drain_concurrency}; median of {args.repeat} run(s) each"
    )
    report_drains(results, args)


if __name__ == "__main__":
    asyncio.run(main())
