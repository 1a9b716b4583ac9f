"""Every hostile input of issue 16, replayed against a real ``python -m oban start`` process.

Each scenario starts one node (PostgreSQL schema or SQLite file of its own), feeds it a steady
flow of ordinary jobs, injects its hostile inputs amid that flow, and then asserts what a user
depends on:

- every ordinary job completed, and ran exactly once (the workers append to a ledger file,
  so a run leaves evidence whichever process made it);
- each hostile job ends in its expected final state, with its error recorded (or none, for a
  snooze or a rescue), and ran as often as it should (an unreadable row never);
- the node still heartbeats: its producer row's ``updated_at`` advances within two refresher
  intervals;
- SIGTERM stops it with exit status 0 within its shutdown grace period.

The scenarios (one node per scenario and engine, its hostile inputs side by side):

1. poison acks: an error text and a ``Cancel`` reason holding a NUL byte, a snooze of a job
   whose ``meta.snoozed`` is ``"x"``, ``Snooze(10**400)``;
2. poison rows, written with SQL: a 400-digit integer and nesting past 1,024 levels in
   ``args`` (both engines store them), and on SQLite a non-JSON ``args`` column;
3. poison rescue: an orphan (``executing``, claimed two hours ago by a producer no row knows)
   whose ``meta.rescued`` is a string, between ordinary orphans: all are rescued and run once;
4. hostile worker names: ``venv.__main__.X``, ``unittest.__main__.X``, ``os.system``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from oban.oban import _instances
from tests.helpers import drop_schema, eventually
from tests.processes import Launcher, Node, until

#: The node's settings (its oban.toml): short intervals so that a scenario takes seconds.
GRACE_PERIOD = 5.0
REFRESH_INTERVAL = 0.5
RESCUE_AFTER = 60
CONFIG = textwrap.dedent(
    f"""
    shutdown_grace_period = {GRACE_PERIOD}

    [leader]
    interval = 1.0

    [lifeline]
    interval = 0.5
    rescue_after = {RESCUE_AFTER}

    [refresher]
    interval = {REFRESH_INTERVAL}
    max_age = 2

    [stager]
    interval = 0.2
    """
)

#: Each run appends ``<kind> <id> <pid> <attempt>`` to ledger.log beside this module.
WORKERS = textwrap.dedent(
    """
    import os

    from oban import Cancel, Snooze, worker

    LEDGER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ledger.log")


    def _log(kind, job):
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{kind} {job.id} {os.getpid()} {job.attempt}\\n".encode())
        finally:
            os.close(fd)


    @worker(queue="default")
    class Ok:
        async def process(self, job):
            _log("done", job)


    @worker(queue="default")
    class RaisesNul:
        async def process(self, job):
            _log("hostile", job)
            raise ValueError("refused\\x00by the database")


    @worker(queue="default")
    class CancelsNul:
        async def process(self, job):
            _log("hostile", job)
            return Cancel("stop\\x00now")


    @worker(queue="default")
    class SnoozesOnce:
        async def process(self, job):
            _log("hostile", job)
            if job.meta.get("snoozed") == "x":
                return Snooze(1)
            return None


    @worker(queue="default")
    class SnoozesForever:
        async def process(self, job):
            _log("hostile", job)
            return Snooze(10**400)
    """
)

MODULE = "gauntlet_workers"
OK = f"{MODULE}.Ok"
ENGINES = ("postgres", "sqlite")


# ---------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------


class Database(Protocol):
    """SQL on the node's database from the test: ``%s`` placeholders, tables unprefixed."""

    engine: str
    node_args: list[str]

    async def sql(self, query: str, params: tuple[Any, ...] | None = None) -> list[Any]: ...

    def client(self, name: str) -> Oban: ...


class Postgres:
    engine = "postgres"

    def __init__(self, pool: AsyncConnectionPool[Any], dsn: str, prefix: str) -> None:
        self.pool = pool
        self.prefix = prefix
        self.node_args = ["--dsn", dsn, "--prefix", prefix]

    async def sql(self, query: str, params: tuple[Any, ...] | None = None) -> list[Any]:
        async with self.pool.connection() as conn:
            await conn.execute(f'SET search_path TO "{self.prefix}"')
            try:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []
            finally:
                await conn.execute("RESET search_path")

    def client(self, name: str) -> Oban:
        return Oban(name=name, pool=self.pool, prefix=self.prefix)


class SQLite:
    engine = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.node_args = ["--dsn", f"sqlite:///{path}"]

    def _run(self, query: str, params: tuple[Any, ...]) -> list[Any]:
        if not self.path.exists():  # the node creates it
            return []
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            with conn:
                return conn.execute(query.replace("%s", "?"), params).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):  # the node has yet to install the schema
                return []
            raise
        finally:
            conn.close()

    async def sql(self, query: str, params: tuple[Any, ...] | None = None) -> list[Any]:
        return await asyncio.to_thread(self._run, query, params or ())

    def client(self, name: str) -> Oban:
        return Oban(name=name, dsn=f"sqlite:///{self.path}")


@dataclass
class Expect:
    """What one hostile (or rescued) job must end as."""

    label: str
    job_id: int
    state: str
    #: Executions the ledger shows (an unreadable row: none).
    runs: int = 0
    #: Substrings of the one recorded error; empty: no error may be recorded.
    error: tuple[str, ...] = ()
    #: Entries the final meta holds.
    meta: dict[str, Any] = field(default_factory=dict)
    attempt: int | None = None
    #: scheduled_at centuries ahead (a bounded, not a failed, huge snooze).
    far_future: bool = False


def _json(value: Any) -> Any:
    """A JSON column's value: decoded by psycopg on PostgreSQL, text on SQLite."""
    return json.loads(value) if isinstance(value, str) else value


def _year(value: Any) -> int:
    return value.year if isinstance(value, datetime) else int(str(value)[:4])


@dataclass
class Gauntlet:
    """One running node, a client beside it, and the ledger its workers append to."""

    db: Database
    client: Oban
    node: Node
    ledger: Path
    ok_ids: list[int] = field(default_factory=list)

    @property
    def engine(self) -> str:
        return self.db.engine

    def jsonb(self, text: str) -> str:
        """``text`` as a JSON column's SQL literal (no quotes in it)."""
        assert "'" not in text
        return f"'{text}'::jsonb" if self.engine == "postgres" else f"'{text}'"

    def hours_ago(self, hours: int) -> str:
        if self.engine == "postgres":
            return f"timezone('UTC', now()) - interval '{hours} hours'"
        return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-{hours} hours')"

    def unknown_producer(self) -> str:
        """An ``attempted_by`` naming a producer no row knows (a dead or an Elixir node)."""
        if self.engine == "postgres":
            return "ARRAY['elixir@app-1', 'gone']"
        return """'["elixir@app-1", "gone"]'"""

    async def insert(self, worker: str, **columns: str) -> int:
        """A job of ``worker`` written with SQL: ``columns`` are SQL expressions."""
        values = {"state": "'available'", "queue": "'default'", "worker": f"'{worker}'"}
        values.update(columns)
        rows = await self.db.sql(
            f"INSERT INTO oban_jobs ({', '.join(values)}) "
            f"VALUES ({', '.join(values.values())}) RETURNING id"
        )
        return int(rows[0][0])

    async def flow(self, count: int) -> None:
        jobs = await self.client.enqueue_many([Job(OK, args={"n": n}) for n in range(count)])
        self.ok_ids.extend(job.id for job in jobs if job.id is not None)

    async def completed(self, ids: list[int]) -> bool:
        marks = ", ".join(["%s"] * len(ids))
        rows = await self.db.sql(
            f"SELECT count(*) FROM oban_jobs WHERE state = 'completed' AND id IN ({marks})",
            tuple(ids),
        )
        return bool(rows[0][0] == len(ids))

    async def row(self, job_id: int) -> tuple[str, list[Any], Any, int, Any]:
        """(state, errors, meta, attempt, scheduled_at) of one job."""
        rows = await self.db.sql(
            "SELECT state, errors, meta, attempt, scheduled_at FROM oban_jobs WHERE id = %s",
            (job_id,),
        )
        state, errors, meta, attempt, scheduled_at = rows[0]
        return state, _json(errors), _json(meta), attempt, scheduled_at

    def runs(self) -> Counter[int]:
        text = self.ledger.read_text() if self.ledger.exists() else ""
        return Counter(int(line.split()[1]) for line in text.splitlines())

    async def heartbeat(self) -> Any:
        rows = await self.db.sql(
            "SELECT updated_at FROM oban_producers WHERE node = %s", (self.node.name,)
        )
        return rows[0][0] if rows else None


Scenario = Callable[[Gauntlet], Awaitable[list[Expect]]]


@contextlib.asynccontextmanager
async def _database(dsn: str | None, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh schema on the PostgreSQL server at ``dsn``, or (``None``) a new SQLite file."""
    if dsn is None:
        yield SQLite(tmp_path / "jobs.db")
        return
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
    await pool.open(wait=True, timeout=10)
    prefix = f"g_{uuid.uuid4().hex[:12]}"
    try:
        await schema.install(pool, prefix)
        yield Postgres(pool, dsn, prefix)
    finally:
        await drop_schema(pool, prefix)
        await pool.close()


@contextlib.asynccontextmanager
async def gauntlet(dsn: str | None, tmp_path: Path) -> AsyncIterator[Gauntlet]:
    """A node running queue ``default`` on a fresh PostgreSQL schema (on ``dsn``) or SQLite
    file (``None``), registered, with a client beside it; the node is killed and the client
    stopped afterwards."""
    project = tmp_path / "project"
    project.mkdir()
    (project / f"{MODULE}.py").write_text(WORKERS)
    (project / "oban.toml").write_text(CONFIG)
    launcher = Launcher(project)
    async with _database(dsn, tmp_path) as db:
        client: Oban | None = None
        try:
            name = f"gauntlet-{db.engine}"
            args = [*db.node_args, "--queues", "default:5", "--node", name]
            node = await launcher.start(name, *args)
            await until(
                lambda: db.sql("SELECT 1 FROM oban_producers WHERE node = %s", (name,)),
                node,
                timeout=30,
                interval=0.05,
                message="the node registered its producer",
            )
            client = db.client(f"gauntlet-client-{uuid.uuid4().hex[:8]}")
            yield Gauntlet(db, client, node, project / "ledger.log")
        finally:
            await launcher.kill_all()
            if client is not None:
                await client.stop()
                await client._close_engine()
                _instances.pop(client.name, None)


async def _settled(g: Gauntlet, expect: Expect) -> str | None:
    """Wait for ``expect``'s state; the problem if it is not reached."""
    try:
        await eventually(
            lambda: _in_state(g, expect),
            timeout=15,
            interval=0.1,
            message=f"{expect.label} (job {expect.job_id}) {expect.state}",
        )
    except AssertionError as error:
        return str(error)
    return None


async def _in_state(g: Gauntlet, expect: Expect) -> bool:
    return (await g.row(expect.job_id))[0] == expect.state


async def _judge(g: Gauntlet, expect: Expect, runs: Counter[int]) -> list[str]:
    """What is wrong with the settled job of ``expect``."""
    _state, errors, meta, attempt, scheduled_at = await g.row(expect.job_id)
    name = f"{expect.label} (job {expect.job_id})"
    problems = []
    if runs[expect.job_id] != expect.runs:
        problems.append(f"{name} ran {runs[expect.job_id]} times, expected {expect.runs}")
    if not expect.error and errors:
        problems.append(f"{name} recorded errors {errors!r}, expected none")
    if expect.error:
        texts = [entry.get("error", "") if isinstance(entry, dict) else entry for entry in errors]
        if len(texts) != 1:
            problems.append(f"{name} recorded {len(texts)} errors, expected one: {errors!r}")
        missing = [part for part in expect.error if not any(part in text for text in texts)]
        if missing:
            problems.append(f"{name}: the recorded error lacks {missing!r}: {texts!r}")
        if any("\x00" in text for text in texts):
            problems.append(f"{name}: the recorded error holds a raw NUL byte")
    for key, value in expect.meta.items():
        if not isinstance(meta, dict) or meta.get(key) != value:
            problems.append(f"{name}: meta {meta!r} lacks {key}={value!r}")
    if expect.attempt is not None and attempt != expect.attempt:
        problems.append(f"{name}: attempt {attempt}, expected {expect.attempt}")
    if expect.far_future and _year(scheduled_at) < datetime.now(UTC).year + 300:
        problems.append(f"{name}: scheduled_at {scheduled_at!r} is not centuries ahead")
    return problems


async def _heartbeats(g: Gauntlet) -> str | None:
    """The problem if the producer row is not refreshed within two refresher intervals."""
    before = await g.heartbeat()
    if before is None:
        return "the node's producer row is gone"

    async def advanced() -> bool:
        after = await g.heartbeat()
        return after is not None and after > before

    try:
        await eventually(
            advanced,
            timeout=2 * REFRESH_INTERVAL,
            interval=0.05,
            message=f"the producer's updated_at ({before}) advanced",
        )
    except AssertionError as error:
        return str(error)
    return None


async def _stops(g: Gauntlet) -> str | None:
    """SIGTERM; the problem if the node does not exit 0 within its grace period."""
    started = time.monotonic()
    g.node.signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(g.node.proc.wait(), GRACE_PERIOD + 10)
    except TimeoutError:
        return f"the node still runs {GRACE_PERIOD + 10}s after SIGTERM"
    elapsed = time.monotonic() - started
    if code != 0:
        return f"the node exited {code} on SIGTERM"
    if elapsed > GRACE_PERIOD:
        return f"the node took {elapsed:.1f}s to stop, past its {GRACE_PERIOD}s grace period"
    return None


async def run_gauntlet(g: Gauntlet, scenario: Scenario) -> None:
    """Ordinary jobs before, amid and after ``scenario``'s hostile inputs; then every check,
    all reported together with the node's latest output."""
    await g.flow(10)
    expects = await scenario(g)
    for _ in range(5):
        await g.flow(5)
        await asyncio.sleep(0.15)

    problems = [p for expect in expects if (p := await _settled(g, expect)) is not None]
    await g.flow(5)  # the node still acks jobs that come after the hostile ones
    try:
        await eventually(
            lambda: g.completed(g.ok_ids),
            timeout=30,
            interval=0.1,
            message=f"all {len(g.ok_ids)} ordinary jobs completed",
        )
    except AssertionError as error:
        problems.append(str(error))

    runs = g.runs()
    twice = {job_id: runs[job_id] for job_id in g.ok_ids if runs[job_id] != 1}
    if twice:
        problems.append(f"ordinary jobs ran other than once (id: runs): {twice}")
    known = set(g.ok_ids) | {expect.job_id for expect in expects}
    if strangers := set(runs) - known:
        problems.append(f"the ledger shows runs of unknown jobs {sorted(strangers)}")
    for expect in expects:
        problems += await _judge(g, expect, runs)

    if g.node.proc.returncode is not None:
        problems.append(f"the node exited with {g.node.proc.returncode} while running")
    if (problem := await _heartbeats(g)) is not None:
        problems.append(problem)
    if (problem := await _stops(g)) is not None:
        problems.append(problem)
    assert not problems, "\n".join([f"[{g.engine}]", *problems, _output(g.node)])


def _output(node: Node, lines: int = 60) -> str:
    """The node's latest output, without the job start/stop events that would drown it."""
    kept = [line for line in node.text().splitlines() if '"event":"oban.job.' not in line]
    return f"--- {node.name} output ---\n" + "\n".join(kept[-lines:])


# ---------------------------------------------------------------------------------------------
# The scenarios
# ---------------------------------------------------------------------------------------------


async def poison_acks(g: Gauntlet) -> list[Expect]:
    jobs = await g.client.enqueue_many(
        [
            Job(f"{MODULE}.RaisesNul", max_attempts=1),
            Job(f"{MODULE}.CancelsNul"),
            Job(f"{MODULE}.SnoozesOnce", meta={"snoozed": "x"}),
            Job(f"{MODULE}.SnoozesForever"),
        ]
    )
    raises, cancels, snoozes, forever = (job.id for job in jobs)
    assert raises and cancels and snoozes and forever
    return [
        Expect(
            "error text with a NUL byte",
            raises,
            "discarded",
            runs=1,
            error=("ValueError", "refused\\x00by the database"),
        ),
        Expect(
            "Cancel reason with a NUL byte", cancels, "cancelled", runs=1, error=("stop\\x00now",)
        ),
        # Snoozed once (meta.snoozed counted from 0, as "x" is no count), then run again.
        Expect(
            "snooze with meta.snoozed 'x'",
            snoozes,
            "completed",
            runs=2,
            meta={"snoozed": 1},
            attempt=1,
        ),
        Expect(
            "Snooze(10**400)",
            forever,
            "scheduled",
            runs=1,
            meta={"snoozed": 1},
            attempt=0,
            far_future=True,
        ),
    ]


BIG_INTEGER = '{"n": ' + "9" * 400 + "}"
DEEP = '{"a": ' + "[" * 1100 + "]" * 1100 + "}"


async def poison_rows(g: Gauntlet) -> list[Expect]:
    unreadable = ("cannot read", "args")
    rows = {
        "400-digit integer in args": g.jsonb(BIG_INTEGER),
        "args nested 1,100 levels deep": g.jsonb(DEEP),
    }
    if g.engine == "sqlite":
        rows["args that are not JSON"] = "'not json'"
    expects = []
    for label, value in rows.items():
        job_id = await g.insert(OK, args=value)
        expects.append(Expect(label, job_id, "discarded", runs=0, error=unreadable))
        await g.flow(3)
    return expects


async def poison_rescue(g: Gauntlet) -> list[Expect]:
    orphan = {
        "state": "'executing'",
        "attempt": "1",
        "attempted_by": g.unknown_producer(),
        "attempted_at": g.hours_ago(2),
    }
    meta = {"rescued": 1}
    odd = "orphan with meta.rescued 'x'"
    expects = []
    # The odd orphan in the middle: a rescue that fails on it fails its neighbours too.
    for label in ["ordinary orphan"] * 2 + [odd] + ["ordinary orphan"] * 2:
        extra = {"meta": g.jsonb('{"rescued": "x"}')} if label == odd else {}
        job_id = await g.insert(OK, **orphan, **extra)
        # Rescued to available (meta.rescued counted from 0), then run once: attempt 2.
        expects.append(Expect(label, job_id, "completed", runs=1, meta=meta, attempt=2))
    return expects


HOSTILE_WORKERS = {
    "venv.__main__.X": "__main__ module",
    "unittest.__main__.X": "__main__ module",
    "os.system": "standard library",
}


async def worker_names(g: Gauntlet) -> list[Expect]:
    expects = []
    for name, reason in HOSTILE_WORKERS.items():
        job = await g.client.enqueue(Job(name, max_attempts=1))
        assert job.id is not None
        error = ("WorkerResolutionError", reason)
        expects.append(Expect(f"worker {name!r}", job.id, "discarded", runs=0, error=error))
        await g.flow(3)
    return expects


SCENARIOS: dict[str, Scenario] = {
    "poison-acks": poison_acks,
    "poison-rows": poison_rows,
    "poison-rescue": poison_rescue,
    "worker-names": worker_names,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("engine", ENGINES)
async def test_a_real_node_survives(
    engine: str, scenario: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # The dsn fixture fails (never skips) when PostgreSQL is unreachable; SQLite needs none.
    dsn = str(request.getfixturevalue("dsn")) if engine == "postgres" else None
    async with gauntlet(dsn, tmp_path) as g:
        await run_gauntlet(g, SCENARIOS[scenario])
