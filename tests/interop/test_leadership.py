"""One leader across a Python and an Elixir node, and a prompt handover both ways.

Both languages lead through Elixir's ``oban_peers`` row of the instance name (``"Oban"``: what
Elixir's ``inspect(Oban)`` writes and Python's default name). A leader that stops gracefully
deletes its row and sends ``{"down": "Oban"}`` on the leader channel, on which the other
language's node elects at once; without that it would wait for its next election (Python:
half the 30 s lease, Elixir's follower: up to the whole lease), so the handover bound below
tells the two apart.

Throughout, a sampler reads the unexpired rows and each Python node's ``is_leader`` every
20 ms, and the Elixir node (``scripts/peer_node.exs``) prints each change of its own
``Oban.Peer.leader?/1``, polled every 20 ms: no two nodes may say they lead at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tests.helpers import eventually
from tests.interop.conftest import Mixed
from tests.interop.elixir import Database, ElixirNode, Kit
from tests.interop.support import (
    INSTANCE,
    LeaderSampler,
    elixir_leader_spans,
    overlapping,
    peer_events,
    peer_node,
    query,
    stop_gracefully,
    utc_now,
    wait_for,
    with_output,
)

ELIXIR_NODE = "ex-peer"
PYTHON_NODE = "py-peer"
QUEUES = {"lead": 2}
#: A graceful stop hands the lead over within this (measured: well under a second). The next
#: regular election would come 15 s (Python) or up to 30 s (Elixir) later.
HANDOVER_BOUND = 5.0
#: Both nodes side by side, one leading, for this long before the handover.
STEADY = 2.0
BOOT_TIMEOUT = 90.0


async def leaders(pool: AsyncConnectionPool[Any]) -> list[str]:
    rows = await query(
        pool,
        "SELECT node FROM oban_peers WHERE name = %s AND expires_at > timezone('UTC', now())",
        INSTANCE,
    )
    return [str(row[0]) for row in rows]


def check_one_leader_at_a_time(sampler: LeaderSampler, *nodes: ElixirNode) -> None:
    problems = sampler.problems()
    assert problems == [], problems[:5]
    spans = sampler.python_spans()
    for node in nodes:
        spans[node.name] = elixir_leader_spans(node)
    assert overlapping(spans) == [], overlapping(spans)[:5]
    assert sampler.samples, "nothing was sampled"


def elixir_node(
    kit: Kit, database: Database, node_log: Callable[[str], Path], tmp_path: Path
) -> contextlib.AbstractAsyncContextManager[ElixirNode]:
    return peer_node(
        kit,
        "lead:2",
        database=database,
        name=ELIXIR_NODE,
        log=node_log(ELIXIR_NODE),
        stop_file=tmp_path / f"{ELIXIR_NODE}.stop",
    )


async def test_a_python_node_leads_promptly_when_the_elixir_leader_stops(mixed: Mixed) -> None:
    elixir_kit, database, pool, make_oban, node_log, tmp_path = mixed.parts()
    sampler = LeaderSampler(pool)
    async with (
        elixir_node(elixir_kit, database, node_log, tmp_path) as elixir,
        sampler.running(),
    ):
        with with_output(elixir.output):
            await eventually(
                lambda: peer_events(elixir, "leader=true"),
                timeout=BOOT_TIMEOUT,
                message="the Elixir node leads",
            )
            assert await leaders(pool) == [ELIXIR_NODE]

            python = await make_oban(name=INSTANCE, node=PYTHON_NODE, queues=QUEUES).start()
            sampler.watch(python)
            await asyncio.sleep(STEADY)  # side by side, sampled
            assert not python.is_leader, "the Python node took the lead from a live leader"
            assert await leaders(pool) == [ELIXIR_NODE]

            requested = utc_now()
            stopping = asyncio.create_task(
                stop_gracefully(elixir, tmp_path / f"{ELIXIR_NODE}.stop", timeout=30)
            )
            took = await wait_for(
                lambda: python.is_leader,
                timeout=60,
                message="the Python node leads after the Elixir leader stopped",
            )
            await stopping
            assert await leaders(pool) == [PYTHON_NODE]

    stopped_at = peer_events(elixir, "stopped")[0][0]
    print(
        f"Elixir -> Python handover: the Python node led {took:.3f}s after the Elixir "
        f"leader was asked to stop; the Elixir node had stopped its Oban "
        f"{(stopped_at - requested).total_seconds():.3f}s after the request"
    )
    assert took < HANDOVER_BOUND, f"the handover took {took:.3f}s"
    with with_output(elixir.output):
        check_one_leader_at_a_time(sampler, elixir)


async def test_an_elixir_node_leads_promptly_when_the_python_leader_stops(mixed: Mixed) -> None:
    elixir_kit, database, pool, make_oban, node_log, tmp_path = mixed.parts()
    sampler = LeaderSampler(pool)
    python = await make_oban(name=INSTANCE, node=PYTHON_NODE, queues=QUEUES).start()
    sampler.watch(python)
    assert python.is_leader, "the Python node, alone, did not lead"
    async with (
        elixir_node(elixir_kit, database, node_log, tmp_path) as elixir,
        sampler.running(),
    ):
        with with_output(elixir.output):
            await eventually(
                lambda: peer_events(elixir, "up"), timeout=BOOT_TIMEOUT, message="Elixir up"
            )
            await asyncio.sleep(STEADY)  # side by side, sampled
            assert python.is_leader and await leaders(pool) == [PYTHON_NODE]
            assert peer_events(elixir, "leader=true") == [], "the Elixir node took the lead"

            requested = utc_now()
            await python.stop()
            stopped = (utc_now() - requested).total_seconds()
            elected = await eventually(
                lambda: peer_events(elixir, "leader=true"),
                timeout=60,
                message="the Elixir node leads after the Python leader stopped",
            )
            in_table = await wait_for(
                lambda: _leads(pool, ELIXIR_NODE), timeout=10, message="its row"
            )
            took = (elected[0][0] - requested).total_seconds()
            assert await leaders(pool) == [ELIXIR_NODE]
            assert elixir.running

    print(
        f"Python -> Elixir handover: the Elixir node said it led {took:.3f}s after the Python "
        f"leader's stop() was called (stop() returned after {stopped:.3f}s; its row was in "
        f"the table {in_table:.3f}s after that was seen)"
    )
    assert took < HANDOVER_BOUND, f"the handover took {took:.3f}s"
    with with_output(elixir.output):
        check_one_leader_at_a_time(sampler, elixir)


async def _leads(pool: AsyncConnectionPool[Any], node: str) -> bool:
    return await leaders(pool) == [node]
