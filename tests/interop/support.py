"""Helpers of the interop tests: SQL on the test's database, reading ``inspect.exs`` output."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tests.helpers import eventually

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
