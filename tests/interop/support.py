"""Helpers of the interop tests: SQL on the test's database, reading ``inspect.exs`` output,
the execution ledger, and leadership: ``peer_node.exs`` nodes (graceful stop, their log) and a
sampler of who leads."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from oban import Oban
from tests.helpers import eventually
from tests.interop.elixir import Database, ElixirNode, Kit

FINAL_STATES = ("completed", "discarded", "cancelled")


async def query(pool: AsyncConnectionPool[Any], statement: str, *params: Any) -> list[Any]:
    """The rows of one statement (no rows for a statement that returns none)."""
    async with pool.connection() as conn:
        # Bytes: psycopg's types take only literal strings, and these are the tests' own SQL.
        cur = await conn.execute(statement.encode(), params or None)
        return await cur.fetchall() if cur.description else []


async def states(pool: AsyncConnectionPool[Any], *ids: int) -> dict[int, str]:
    """Job id -> state, for ``ids`` (every job when none are given)."""
    rows = await query(
        pool,
        "SELECT id, state::text FROM oban_jobs WHERE cardinality(%s::bigint[]) = 0 "
        "OR id = ANY(%s::bigint[])",
        list(ids),
        list(ids),
    )
    return {int(job_id): str(state) for job_id, state in rows}


async def wait_until_final(
    pool: AsyncConnectionPool[Any], *ids: int, timeout: float, message: str
) -> dict[int, str]:
    """Wait until every job of ``ids`` (or every job) has a final state; return the states."""

    async def done() -> dict[int, str] | None:
        found = await states(pool, *ids)
        if not found or (ids and len(found) != len(ids)):
            return None
        return found if all(state in FINAL_STATES for state in found.values()) else None

    result: dict[int, str] = await eventually(done, timeout=timeout, interval=0.2, message=message)
    return result


@contextlib.contextmanager
def with_output(*sources: Callable[[], str]) -> Iterator[None]:
    """Append the nodes' output to an assertion that fails inside the block."""
    try:
        yield
    except AssertionError as error:
        details = "\n".join(source() for source in sources)
        raise AssertionError(f"{error}\n{details}") from None


_JOB_LINE = re.compile(r"^(\d+) (\S+) q=(\S+) (\w+) att=(\d+)/(\d+) ")


@dataclass
class InspectedJob:
    """One job as ``inspect.exs`` printed it, loaded as an ``%Oban.Job{}`` by Elixir."""

    id: int
    worker: str
    queue: str
    state: str
    attempt: int
    max_attempts: int
    line: str
    errors: str | None = None
    recorded: str | None = None


def parse_inspect(output: str) -> dict[int, InspectedJob]:
    """Job id -> what ``inspect.exs`` said about it (Mix's warnings are skipped)."""
    jobs: dict[int, InspectedJob] = {}
    current: InspectedJob | None = None
    for line in output.splitlines():
        match = _JOB_LINE.match(line)
        if match:
            job_id, worker, queue, state, attempt, max_attempts = match.groups()
            current = InspectedJob(
                int(job_id), worker, queue, state, int(attempt), int(max_attempts), line
            )
            jobs[current.id] = current
        elif current is not None and line.startswith("    errors="):
            current.errors = line.strip()
        elif current is not None and line.startswith("    meta.return -> "):
            current.recorded = line.removeprefix("    meta.return -> ")
        else:
            current = None
    return jobs


# The execution ledger (exec_log: every run of a MyApp.Echo job; ins_log: every inserted id).


@dataclass
class Ledger:
    """What the run left: inserts, runs, and the jobs that ran twice or never finished."""

    inserted: dict[str, int]
    runs: dict[str, int]
    duplicates: list[tuple[int, list[list[str]], str]]
    unfinished: list[tuple[int, str | None, int]]

    def summary(self, seconds: float) -> str:
        return (
            f"fed for {seconds:.1f}s: inserted {self.inserted}, runs {self.runs}; "
            f"{len(self.duplicates)} jobs ran more than once, {len(self.unfinished)} did not "
            "complete"
        )


async def all_completed(pool: AsyncConnectionPool[Any]) -> bool:
    """Whether every job of ins_log is completed."""
    rows = await query(
        pool,
        "SELECT count(*) FROM ins_log i LEFT JOIN oban_jobs j ON j.id = i.job_id "
        "WHERE j.state IS DISTINCT FROM 'completed'",
    )
    return bool(rows[0][0] == 0)


async def read_ledger(pool: AsyncConnectionPool[Any]) -> Ledger:
    inserted = await query(pool, "SELECT src, count(*) FROM ins_log GROUP BY src ORDER BY src")
    runs = await query(pool, "SELECT lang, count(*) FROM exec_log GROUP BY lang ORDER BY lang")
    duplicates = await query(
        pool,
        "SELECT e.job_id, array_agg(ARRAY[e.lang, e.attempt::text, e.at::time::text] "
        "ORDER BY e.at), j.state::text || ' at attempt ' || j.attempt "
        "FROM exec_log e LEFT JOIN oban_jobs j ON j.id = e.job_id "
        "GROUP BY e.job_id, j.state, j.attempt HAVING count(*) > 1 ORDER BY e.job_id",
    )
    unfinished = await query(
        pool,
        "SELECT i.job_id, j.state::text, "
        "(SELECT count(*) FROM exec_log e WHERE e.job_id = i.job_id)::int "
        "FROM ins_log i LEFT JOIN oban_jobs j ON j.id = i.job_id "
        "WHERE j.state IS DISTINCT FROM 'completed' ORDER BY i.job_id",
    )
    return Ledger(dict(inserted), dict(runs), duplicates, unfinished)


# Leadership: peer_node.exs prints "<UTC time> ex <event>" lines; the sampler reads oban_peers
# and the Python nodes' is_leader.

#: The instance name both languages use: Elixir's ``inspect(Oban)``, Python's default.
INSTANCE = "Oban"
_PEER_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+Z) ex (.*)$")
_FOREVER = datetime.max.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def peer_lines(node: ElixirNode) -> list[tuple[datetime, str]]:
    """The timed lines a ``peer_node.exs`` node printed so far: (UTC time, event)."""
    text = node.log.read_text(errors="replace") if node.log.exists() else ""
    found = []
    for line in text.splitlines():
        if match := _PEER_LINE.match(line.strip()):
            found.append((datetime.fromisoformat(match[1]), match[2]))
    return found


def peer_events(node: ElixirNode, prefix: str) -> list[tuple[datetime, str]]:
    """The lines of ``node`` whose event starts with ``prefix`` (``"leader=true"``, ...)."""
    return [(at, text) for at, text in peer_lines(node) if text.startswith(prefix)]


def elixir_leader_spans(node: ElixirNode) -> list[tuple[datetime, datetime]]:
    """When the node believed it led, by its own polls of ``Oban.Peer.leader?/1``: from the
    reply that first said true to the last reply that still did (open-ended while it leads)."""
    spans: list[tuple[datetime, datetime]] = []
    start: datetime | None = None
    for at, text in peer_lines(node):
        if text == "leader=true":
            start = at
        elif start is not None and text.startswith(("leader=false", "stopping")):
            fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
            last = fields.get("last_true") or ""
            spans.append((start, datetime.fromisoformat(last) if last else start))
            start = None
    if start is not None:
        spans.append((start, _FOREVER))
    return spans


def peer_node(
    kit: Kit,
    queues: str,
    *,
    database: Database,
    name: str,
    log: Path,
    stop_file: Path,
    env: Mapping[str, str] | None = None,
) -> contextlib.AbstractAsyncContextManager[ElixirNode]:
    """A ``peer_node.exs`` Elixir node for the block (see :meth:`Kit.node`): it prints timed
    lines (:func:`peer_lines`) and stops its Oban gracefully once ``stop_file`` exists
    (:func:`stop_gracefully`); ``env`` adds environment variables."""
    return kit.node(
        queues,
        database=database,
        env={"STOP_FILE": str(stop_file), **(env or {})},
        log=log,
        name=name,
        script="peer_node.exs",
    )


async def stop_gracefully(node: ElixirNode, stop_file: Path, *, timeout: float) -> None:
    """Ask a ``peer_node.exs`` node to stop its Oban as an application would (queues drain,
    the leader deletes its row and notifies ``down``) and wait for the script to end."""
    await asyncio.to_thread(stop_file.touch)
    try:
        await asyncio.wait_for(node.proc.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"{node.name} did not stop within {timeout}s") from None
    assert node.proc.returncode == 0, f"{node.name} exited with {node.proc.returncode}"
    assert peer_events(node, "stopped"), f"{node.name} ended without stopping Oban"


@dataclass
class Sample:
    """One look at who leads: the Python nodes' ``is_leader`` just before and just after
    reading the unexpired ``oban_peers`` rows of the instance name."""

    at: datetime
    before: dict[str, bool]
    rows: list[str]
    after: dict[str, bool]
    after_at: datetime


@dataclass
class LeaderSampler:
    """Samples leadership every ``interval`` seconds while running (see :meth:`running`)."""

    pool: AsyncConnectionPool[Any]
    interval: float = 0.02
    nodes: dict[str, Oban] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def watch(self, oban: Oban) -> None:
        self.nodes[oban.node] = oban

    async def sample(self) -> Sample:
        at = utc_now()
        before = {name: oban.is_leader for name, oban in self.nodes.items()}
        rows = await query(
            self.pool,
            "SELECT node FROM oban_peers WHERE name = %s AND expires_at > timezone('UTC', now())",
            INSTANCE,
        )
        after = {name: oban.is_leader for name, oban in self.nodes.items()}
        found = Sample(at, before, [str(row[0]) for row in rows], after, utc_now())
        self.samples.append(found)
        return found

    @contextlib.asynccontextmanager
    async def running(self) -> Any:
        async def loop() -> None:
            while True:
                await self.sample()
                await asyncio.sleep(self.interval)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def python_spans(self) -> dict[str, list[tuple[datetime, datetime]]]:
        """Per Python node, when it said it led: runs of samples that said so."""
        points: dict[str, list[tuple[datetime, bool]]] = {}
        for s in self.samples:
            for name, leading in s.before.items():
                points.setdefault(name, []).append((s.at, leading))
            for name, leading in s.after.items():
                points.setdefault(name, []).append((s.after_at, leading))
        spans: dict[str, list[tuple[datetime, datetime]]] = {}
        for name, seen in points.items():
            start: datetime | None = None
            last: datetime | None = None
            for at, leading in seen:
                if leading:
                    start = start or at
                    last = at
                elif start is not None and last is not None:
                    spans.setdefault(name, []).append((start, last))
                    start = None
            if start is not None and last is not None:
                spans.setdefault(name, []).append((start, last))
        return spans

    def problems(self) -> list[str]:
        """Samples that show more than one leader, or a Python node that says it leads
        while the table names another."""
        found = []
        for s in self.samples:
            if len(s.rows) > 1:
                found.append(f"{s.at.time()} two unexpired rows: {s.rows}")
            for name in s.before:
                if s.before[name] and s.after.get(name) and s.rows != [name]:
                    found.append(f"{s.at.time()} {name} says it leads, oban_peers: {s.rows}")
        return found


def overlapping(spans: dict[str, list[tuple[datetime, datetime]]]) -> list[str]:
    """Pairs of spans of different nodes that overlap: two nodes that led at once."""
    flat = sorted((start, end, name) for name, found in spans.items() for start, end in found)
    clashes = []
    for i, (start, end, name) in enumerate(flat):
        for other_start, other_end, other in flat[i + 1 :]:
            if other_start > end:
                break
            if other != name:
                clashes.append(
                    f"{name} led {start.time()}..{end.time()} and {other} led "
                    f"{other_start.time()}..{other_end.time()}"
                )
    return clashes


async def wait_for(check: Callable[[], Any], *, timeout: float, message: str) -> float:
    """Poll ``check`` every 10 ms until it holds; return the seconds that took."""
    started = time.monotonic()
    await eventually(check, timeout=timeout, interval=0.01, message=message)
    return time.monotonic() - started
