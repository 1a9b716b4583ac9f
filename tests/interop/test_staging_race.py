"""The staging race of issue 12, against a real Elixir leader.

Elixir Oban stages on its leader only, with ``UPDATE oban_jobs ... FROM (SELECT id ... WHERE
state IN ('scheduled', 'retryable') ... LIMIT n)``, which locks nothing in the subquery: a row
that another transaction changed after the statement's snapshot is set to ``available`` when
the update reaches it, whatever its state is by then (PostgreSQL rechecks only ``j.id = x.id``).
A Python node that stages the same queue at the same moment, and claims what it staged, can
have a job it is running, or has finished, made ``available`` again: the job runs twice.

The test builds that cluster: an Elixir node that leads (``oban_peers``) and stages, a Python
node running the same queue, and both languages enqueueing, each second, a batch of jobs due
together at the next whole second. Every run of a job appends a row to ``exec_log`` (the
ledger), every insert a row to ``ins_log``; at the end every inserted job must be completed,
having run exactly once.

Both stagers tick every 100 ms (Elixir's ``stage_interval``, Python's ``stager.interval``):
the race needs two staging passes over the same due rows at once, and at the default 1 s,
with the two nodes' phases independent, a 20 s run hits that in some runs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema, telemetry
from tests.helpers import eventually
from tests.interop.elixir import Database, Kit
from tests.interop.support import all_completed, query, read_ledger, with_output
from tests.interop.workers import echo

QUEUE = "race"
#: How long both languages enqueue, and the jobs each enqueues per second.
FEED_SECONDS = 20
BATCH = 500
STAGE_INTERVAL = 0.1
ELIXIR_NODE = "ex-leader"
PYTHON_NODE = "py-node"
DRAIN_TIMEOUT = 60.0


async def feed_from_python(oban: Oban, pool: AsyncConnectionPool[Any], seconds: float) -> None:
    """As race_feed.exs: each second a batch due at the next whole second; log the ids."""
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        jobs = await oban.enqueue_many(
            echo({"mode": "ok", "src": "py"}, queue=QUEUE, scheduled_at=due) for _ in range(BATCH)
        )
        ids = [job.id for job in jobs]
        await query(
            pool, "INSERT INTO ins_log (job_id, src) SELECT unnest(%s::bigint[]), 'py'", ids
        )
        await asyncio.sleep((due - datetime.now(UTC)).total_seconds() + 0.01)


async def elixir_leads(pool: AsyncConnectionPool[Any]) -> bool:
    rows = await query(
        pool, "SELECT node FROM oban_peers WHERE expires_at > timezone('UTC', now())"
    )
    return rows == [(ELIXIR_NODE,)]


async def test_no_job_runs_twice_or_is_lost_with_an_elixir_leader_staging(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
    node_log: Callable[[str], Path],
) -> None:
    await schema.install(pool)
    python_staging: list[str] = []

    def staged(_name: str, meta: dict[str, Any]) -> None:
        if meta.get("staged_count"):
            ms = meta.get("duration", 0) / 1e6
            now = datetime.now(UTC).time().isoformat()
            python_staging.append(f"{now} py staged {meta['staged_count']} in {ms:.1f} ms")

    telemetry.attach("interop-staging", ["oban.stager.stage.stop"], staged)
    node = elixir_kit.node(
        f"{QUEUE}:10",
        database=database,
        env={"STAGE_INTERVAL_MS": str(int(STAGE_INTERVAL * 1000))},
        log=node_log(ELIXIR_NODE),
        name=ELIXIR_NODE,
        script="staging_node.exs",
    )
    try:
        async with node as elixir:
            with with_output(elixir.output):
                await eventually(
                    lambda: elixir_leads(pool), timeout=30, message="the Elixir node leads"
                )
                oban = await make_oban(
                    node=PYTHON_NODE,
                    queues={QUEUE: 20},
                    stager={"interval": STAGE_INTERVAL},
                ).start()
                started = time.monotonic()
                elixir_feed, _ = await asyncio.gather(
                    elixir_kit.run(
                        "race_feed.exs",
                        str(FEED_SECONDS),
                        QUEUE,
                        str(BATCH),
                        database=database,
                        timeout=FEED_SECONDS + 60,
                    ),
                    feed_from_python(oban, pool, FEED_SECONDS),
                )
                elixir_feed.check()
                fed = time.monotonic() - started
                # A job that never completes is reported from the ledger below, with the rest.
                with contextlib.suppress(AssertionError):
                    await eventually(
                        lambda: all_completed(pool),
                        timeout=DRAIN_TIMEOUT,
                        interval=0.5,
                        message="every job completed",
                    )
                assert await elixir_leads(pool), "the Elixir node lost the lead during the run"
    finally:
        telemetry.detach("interop-staging")
    elixir_staging = [line for line in elixir.output(100_000).splitlines() if " ex staged " in line]

    ledger = await read_ledger(pool)
    summary = (
        f"{ledger.summary(fed)}; staging passes that made jobs available: "
        f"{len(elixir_staging)} by the Elixir leader, {len(python_staging)} by the Python node"
    )
    print(summary)
    assert elixir_staging, f"the Elixir leader staged nothing, so nothing was tested: {summary}"
    assert ledger.duplicates == [] and ledger.unfinished == [], (
        f"{summary}\n"
        f"ran more than once (job, [[lang, attempt, time]], final state): "
        f"{ledger.duplicates[:5]}\n"
        f"did not complete (job, state, runs): {ledger.unfinished[:5]}\n"
        "staging passes around the first job that ran twice:\n  "
        + "\n  ".join(around(ledger.duplicates, elixir_staging + python_staging))
    )


def around(duplicates: list[tuple[int, list[list[str]], str]], passes: list[str]) -> list[str]:
    """The staging passes (lines that start with a UTC time) within a second of the first run
    of the first job that ran twice."""
    if not duplicates:
        return []
    first = _seconds(clock.fromisoformat(duplicates[0][1][0][2]))
    return sorted(
        line
        for line in passes
        if abs(_seconds(clock.fromisoformat(line.split(" ", 1)[0])) - first) <= 1.0
    )


def _seconds(moment: clock) -> float:
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6
