"""The 60 s mixed run of issue 12: Python and Elixir nodes on one database, jobs flowing both
ways, the lead handed from Elixir to Python and back while they flow; no job lost, none run
twice.

For ``FEED_SECONDS`` both languages enqueue ``MyApp.Echo`` jobs at ``RATE`` jobs/s each (a
Python client in this process, ``scripts/mixed_feed.exs``): two in three into the queue
``shared``, which nodes of both languages run, one in three into the language's own queue
(``py_own``, ``ex_own``), which only that language's nodes run; every other job is scheduled
0.2 to 2.5 s ahead, so the leader's staging moves it. The nodes:

* phase 1: Elixir node ``ex-1`` leads, Python node ``py-1`` beside it;
* at ``HANDOVERS[0]`` s ``ex-1`` stops gracefully: ``py-1`` leads; a fresh ``ex-2`` starts;
* at ``HANDOVERS[1]`` s ``py-1`` stops gracefully: ``ex-2`` leads; a fresh ``py-2`` starts.

Staging, pruning and rescue run on the leader only, so they move with it: each phase's leader
must stage, and must prune the batch of two-day-old completed jobs put in at the phase's
start; nothing may be rescued (every stop is graceful). A sampler checks that no two nodes
say they lead at once. At the end every inserted job (``ins_log``) is completed and ran
exactly once (``exec_log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Oban, telemetry
from tests.helpers import eventually
from tests.interop.conftest import Mixed
from tests.interop.elixir import ElixirNode
from tests.interop.support import (
    INSTANCE,
    LeaderSampler,
    all_completed,
    elixir_leader_spans,
    overlapping,
    peer_events,
    peer_node,
    query,
    read_ledger,
    stop_gracefully,
    utc_now,
    wait_for,
)
from tests.interop.workers import echo

SHARED, PY_OWN, EX_OWN = "shared", "py_own", "ex_own"
FEED_SECONDS = 60
#: Jobs per second each language enqueues (the nodes of both drain it on 2 cores).
RATE = 60
#: How long each job sleeps, so that stops find jobs running.
SLEEP_MS = 20
#: Seconds into the feed at which the Elixir leader, then the Python leader, stops.
HANDOVERS = (20.0, 40.0)
#: Two-day-old completed jobs put in at each phase's start for its leader to prune.
FILLER = 100
#: Pruner and Lifeline intervals of both languages' nodes, seconds.
PLUGIN_INTERVAL = 2.0
HANDOVER_BOUND = 5.0
BOOT_TIMEOUT = 90.0
DRAIN_TIMEOUT = 90.0
#: Slack for "this happened while that node led" (staging passes are stamped at their end).
SLACK = timedelta(seconds=1)

T = TypeVar("T")
ELIXIR_QUEUES = f"{SHARED}:10,{EX_OWN}:5"
PYTHON_QUEUES = {SHARED: 10, PY_OWN: 5}


async def feed_from_python(client: Oban, pool: AsyncConnectionPool[Any], seconds: float) -> int:
    """As mixed_feed.exs: every 100 ms a tenth of RATE, logged in ins_log."""
    per_tick = RATE // 10
    started = time.monotonic()
    total = 0
    for tick in range(int(seconds * 10)):
        await asyncio.sleep(max(0.0, started + tick / 10 - time.monotonic()))
        now = utc_now()
        jobs = []
        for i in range(1, per_tick + 1):
            seq = tick * per_tick + i
            queue = PY_OWN if seq % 3 == 0 else SHARED
            args = {"mode": "sleep", "ms": SLEEP_MS, "src": "py"}
            if seq % 2 == 0:
                due = now + timedelta(seconds=random.uniform(0.2, 2.5))
                jobs.append(echo(args, queue=queue, scheduled_at=due))
            else:
                jobs.append(echo(args, queue=queue))
        inserted = await client.enqueue_many(jobs)
        ids = [job.id for job in inserted]
        await query(
            pool, "INSERT INTO ins_log (job_id, src) SELECT unnest(%s::bigint[]), 'py'", ids
        )
        total += len(ids)
    return total


async def insert_filler(pool: AsyncConnectionPool[Any]) -> list[int]:
    """FILLER completed jobs finished two days ago: the leader's pruner deletes them."""
    rows = await query(
        pool,
        "INSERT INTO oban_jobs (state, queue, worker, args, attempt, max_attempts, "
        "inserted_at, scheduled_at, attempted_at, completed_at) "
        "SELECT 'completed', 'filler', 'MyApp.Echo', '{}', 1, 3, t, t, t, t "
        "FROM generate_series(1, %s), "
        "(SELECT timezone('UTC', now()) - interval '2 days' AS t) AS old RETURNING id",
        FILLER,
    )
    return [int(row[0]) for row in rows]


async def pruned(pool: AsyncConnectionPool[Any], ids: list[int]) -> bool:
    rows = await query(pool, "SELECT count(*) FROM oban_jobs WHERE id = ANY(%s)", ids)
    return bool(rows[0][0] == 0)


async def leader_row(pool: AsyncConnectionPool[Any]) -> list[str]:
    rows = await query(
        pool,
        "SELECT node FROM oban_peers WHERE name = %s AND expires_at > timezone('UTC', now())",
        INSTANCE,
    )
    return [str(row[0]) for row in rows]


class PythonEvents:
    """Telemetry of this process's Python nodes: staging, pruning and rescue passes, stamped
    with the time they ended (only the leader runs them)."""

    def __init__(self) -> None:
        self.staged: list[tuple[datetime, int]] = []
        self.pruned: list[tuple[datetime, int]] = []
        self.rescues: list[tuple[datetime, int]] = []

    def __call__(self, name: str, meta: dict[str, Any]) -> None:
        at = utc_now()
        if name == "oban.stager.stage.stop":
            self.staged.append((at, int(meta.get("staged_count", 0))))
        elif name == "oban.pruner.prune.stop":
            self.pruned.append((at, int(meta.get("pruned_count", 0))))
        elif name == "oban.lifeline.rescue.stop":
            count = int(meta.get("rescued_count", 0)) + int(meta.get("discarded_count", 0))
            self.rescues.append((at, count))


def counted(node: ElixirNode, event: str) -> list[tuple[datetime, int]]:
    """A peer_node.exs node's "staged N" / "pruned N" / "rescued N" lines."""
    return [(at, int(text.split()[1])) for at, text in peer_events(node, f"{event} ")]


@pytest.mark.timeout(360)
async def test_a_mixed_cluster_runs_every_job_once_across_two_handovers(mixed: Mixed) -> None:
    elixir_kit, database, pool, make_oban, node_log, tmp_path = mixed.parts()
    events = PythonEvents()
    telemetry.attach(
        "interop-mixed-run",
        ["oban.stager.stage.stop", "oban.pruner.prune.stop", "oban.lifeline.rescue.stop"],
        events,
    )
    sampler = LeaderSampler(pool, interval=0.05)
    nodes: dict[str, ElixirNode] = {}

    def python_node(name: str) -> Oban:
        # Each node with a pool of its own, as in a process of its own.
        return make_oban(
            name=INSTANCE,
            node=name,
            queues=PYTHON_QUEUES,
            pool=None,
            dsn=database.dsn,
            pruner={"interval": PLUGIN_INTERVAL},
            lifeline={"interval": PLUGIN_INTERVAL},
        )

    async def elixir_node(stack: contextlib.AsyncExitStack, name: str) -> ElixirNode:
        node = await stack.enter_async_context(
            peer_node(
                elixir_kit,
                ELIXIR_QUEUES,
                database=database,
                name=name,
                log=node_log(name),
                stop_file=tmp_path / f"{name}.stop",
                env={"PLUGIN_INTERVAL_MS": str(int(PLUGIN_INTERVAL * 1000))},
            )
        )
        nodes[name] = node
        await eventually(
            lambda: peer_events(node, "up"), timeout=BOOT_TIMEOUT, message=f"{name} up"
        )
        return node

    def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        background.append(task)
        return task

    def output() -> str:
        return "\n".join(node.output(40) for node in nodes.values())

    fillers: list[list[int]] = []
    handovers: list[float] = []
    background: list[asyncio.Task[Any]] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            ex1 = await elixir_node(stack, "ex-1")
            await eventually(
                lambda: peer_events(ex1, "leader=true"), timeout=30, message="ex-1 leads"
            )
            py1 = await python_node("py-1").start()
            assert not py1.is_leader
            sampler.watch(py1)
            await stack.enter_async_context(sampler.running())
            client = make_oban(name=INSTANCE, node="py-feeder")  # no queues: it only inserts

            fillers.append(await insert_filler(pool))
            started = time.monotonic()
            elixir_feed = spawn(
                elixir_kit.run(
                    "mixed_feed.exs",
                    str(FEED_SECONDS),
                    str(RATE),
                    SHARED,
                    EX_OWN,
                    str(SLEEP_MS),
                    database=database,
                    timeout=FEED_SECONDS + 90,
                )
            )
            python_feed = spawn(feed_from_python(client, pool, FEED_SECONDS))

            # Phase 1 -> 2: the Elixir leader stops; the Python node takes over.
            await eventually(
                lambda: pruned(pool, fillers[0]), timeout=HANDOVERS[0], message="ex-1 pruned"
            )
            await asyncio.sleep(max(0.0, started + HANDOVERS[0] - time.monotonic()))
            first_at = utc_now()
            stopping = spawn(stop_gracefully(ex1, tmp_path / "ex-1.stop", timeout=60))
            handovers.append(
                await wait_for(lambda: py1.is_leader, timeout=60, message="py-1 leads")
            )
            await stopping
            assert await leader_row(pool) == ["py-1"]
            fillers.append(await insert_filler(pool))
            ex2 = await elixir_node(stack, "ex-2")

            # Phase 2 -> 3: the Python leader stops; the new Elixir node takes over.
            await eventually(
                lambda: pruned(pool, fillers[1]),
                timeout=max(1.0, started + HANDOVERS[1] - time.monotonic()),
                message="py-1 pruned",
            )
            await asyncio.sleep(max(0.0, started + HANDOVERS[1] - time.monotonic()))
            assert py1.is_leader and not peer_events(ex2, "leader=true")
            second_at = utc_now()
            await py1.stop()
            second_done = utc_now()
            elected = await eventually(
                lambda: peer_events(ex2, "leader=true"), timeout=60, message="ex-2 leads"
            )
            handovers.append((elected[0][0] - second_at).total_seconds())
            await wait_for(lambda: _is(pool, "ex-2"), timeout=10, message="ex-2's row")
            fillers.append(await insert_filler(pool))
            py2 = await python_node("py-2").start()
            sampler.watch(py2)

            python_total = await python_feed
            elixir_said = (await elixir_feed).check().lines("mixed_feed inserted")
            fed = time.monotonic() - started
            drain_started = time.monotonic()
            with contextlib.suppress(AssertionError):  # the ledger below says what is missing
                await eventually(
                    lambda: all_completed(pool),
                    timeout=DRAIN_TIMEOUT,
                    interval=0.5,
                    message="every job completed",
                )
            drained = time.monotonic() - drain_started
            await eventually(lambda: pruned(pool, fillers[2]), timeout=30, message="ex-2 pruned")
            assert not py2.is_leader and await leader_row(pool) == ["ex-2"]
            assert ex2.running, "ex-2 stopped"
    except AssertionError as error:
        raise AssertionError(f"{error}\n{output()}") from None
    finally:
        telemetry.detach("interop-mixed-run")
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    ledger = await read_ledger(pool)
    by_queue = dict(
        ((str(lang), str(queue)), int(count))
        for lang, queue, count in await query(
            pool, "SELECT lang, queue, count(*) FROM exec_log GROUP BY lang, queue"
        )
    )
    ex1_staged, ex2_staged = counted(ex1, "staged"), counted(ex2, "staged")
    summary = (
        f"{ledger.summary(fed)}; runs by (language, queue) {dict(sorted(by_queue.items()))}; "
        f"handovers: Elixir -> Python {handovers[0]:.3f}s, Python -> Elixir "
        f"{handovers[1]:.3f}s; staging passes: ex-1 {len(ex1_staged)} "
        f"({sum(n for _, n in ex1_staged)} jobs), Python {len(events.staged)} "
        f"({sum(n for _, n in events.staged)} jobs), ex-2 {len(ex2_staged)} "
        f"({sum(n for _, n in ex2_staged)} jobs); pruned: ex-1 "
        f"{sum(n for _, n in counted(ex1, 'pruned'))}, Python "
        f"{sum(n for _, n in events.pruned)}, ex-2 {sum(n for _, n in counted(ex2, 'pruned'))}; "
        f"Python rescue passes {len(events.rescues)} (rescued "
        f"{sum(n for _, n in events.rescues)}), Elixir rescues "
        f"{len(counted(ex1, 'rescued') + counted(ex2, 'rescued'))}; "
        f"drained {drained:.1f}s after the feed; {elixir_said}"
    )
    print(summary)

    assert ledger.duplicates == [] and ledger.unfinished == [], (
        f"{summary}\nran more than once (job, [[lang, attempt, time]], final state): "
        f"{ledger.duplicates[:5]}\ndid not complete (job, state, runs): {ledger.unfinished[:5]}"
    )
    total = sum(ledger.inserted.values())
    assert sum(ledger.runs.values()) == total, summary
    assert python_total == FEED_SECONDS * RATE, summary
    assert ledger.inserted == {"ex": FEED_SECONDS * RATE, "py": FEED_SECONDS * RATE}, summary
    # Both languages ran the shared queue; each own queue ran on its language only.
    assert by_queue.get(("py", SHARED), 0) > 0 and by_queue.get(("ex", SHARED), 0) > 0, summary
    assert ("ex", PY_OWN) not in by_queue and ("py", EX_OWN) not in by_queue, summary

    assert all(took < HANDOVER_BOUND for took in handovers), summary
    problems = sampler.problems()
    assert problems == [], problems[:5]
    spans = sampler.python_spans()
    spans.update({name: elixir_leader_spans(node) for name, node in nodes.items()})
    assert overlapping(spans) == [], overlapping(spans)[:5]

    # Staging, pruning and rescue ran on whichever node led, and moved with the lead.
    py_led = min(start for start, _ in spans["py-1"])
    ex2_led = elected[0][0]
    stray = {
        "ex-1 after it stopped leading": [at for at, _ in ex1_staged if at > first_at + SLACK],
        "Python while it did not lead": [
            at for at, _ in events.staged if not py_led - SLACK <= at <= second_done + SLACK
        ],
        "ex-2 before it led": [at for at, _ in ex2_staged if at < ex2_led - SLACK],
    }
    assert all(found == [] for found in stray.values()), f"staging passes by {stray}\n{summary}"
    assert ex1_staged and events.staged and ex2_staged, f"a leader did not stage: {summary}"
    assert sum(n for _, n in counted(ex1, "pruned")) == FILLER, summary
    assert sum(n for _, n in events.pruned) == FILLER, summary
    assert sum(n for _, n in counted(ex2, "pruned")) == FILLER, summary
    assert events.rescues and sum(n for _, n in events.rescues) == 0, summary
    assert counted(ex1, "rescued") == [] and counted(ex2, "rescued") == [], summary


async def _is(pool: AsyncConnectionPool[Any], node: str) -> bool:
    return await leader_row(pool) == [node]
