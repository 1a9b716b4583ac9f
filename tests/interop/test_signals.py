"""Queue signals cross the language boundary: an Elixir node's ``Oban.pause_queue/2``,
``resume_queue/2``, ``scale_queue/2`` and ``cancel_job/2`` act on a Python node's queues and
jobs, and a Python node's act on an Elixir node's (which prints its queue state:
``scripts/signal_node.exs``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema
from tests.helpers import eventually
from tests.interop.elixir import Database, ElixirNode, Kit
from tests.interop.support import query, states, wait_until_final, with_output
from tests.interop.workers import echo

STATE_LINE = re.compile(r"^queue (\S+) paused=(\w+) limit=(\d+) running=\[([\d, ]*)\]$")


def _queue_states(node: ElixirNode) -> list[tuple[str, bool, int, list[int]]]:
    """Every state the Elixir node printed for its queues, oldest first."""
    text = node.log.read_text(errors="replace") if node.log.exists() else ""
    found = []
    for line in text.splitlines():
        if match := STATE_LINE.match(line.strip()):
            queue, paused, limit, running = match.groups()
            ids = [int(i) for i in running.replace(" ", "").split(",") if i]
            found.append((queue, paused == "true", int(limit), ids))
    return found


def _last_state(node: ElixirNode, queue: str) -> tuple[bool, int, list[int]] | None:
    states = [(p, limit, r) for q, p, limit, r in _queue_states(node) if q == queue]
    return states[-1] if states else None


async def _signal(kit: Kit, database: Database, *args: str, node: str | None = None) -> None:
    env = {"TARGET_NODE": node} if node else None
    result = (await kit.run("signal.exs", *args, database=database, env=env)).check()
    assert "sent" in result.output, result.output


async def test_an_elixir_node_pauses_resumes_scales_and_cancels_on_a_python_node(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
) -> None:
    await schema.install(pool)
    py = make_oban(name="Oban", node="py-node", queues={"pyq": 2, "pyother": 1})
    await py.start()

    def info(queue: str) -> Any:
        found = py.check_queue(queue)
        assert found is not None
        return found

    await _signal(elixir_kit, database, "pause", "pyq")
    await eventually(lambda: info("pyq").paused, timeout=5, message="pyq paused by Elixir")
    assert not info("pyother").paused
    held = await py.enqueue(echo({"mode": "ok"}, queue="pyq"))
    assert held.id is not None

    # Addressed to another node (ident "Oban.elsewhere"): this node ignores it.
    await _signal(elixir_kit, database, "scale", "pyq", "9", node="elsewhere")
    # Addressed to this node (ident "Oban.py-node").
    await _signal(elixir_kit, database, "scale", "pyq", "7", node="py-node")
    await eventually(lambda: info("pyq").limit == 7, timeout=5, message="pyq scaled by Elixir")
    assert await states(pool, held.id) == {held.id: "available"}  # still paused

    await _signal(elixir_kit, database, "resume", "pyq")
    await wait_until_final(pool, held.id, timeout=10, message="held job ran after resume")
    assert not info("pyq").paused and info("pyq").limit == 7

    sleeper = await py.enqueue(echo({"mode": "sleep", "ms": 30_000}, queue="pyq"))
    assert sleeper.id is not None
    await eventually(lambda: sleeper.id in info("pyq").running, timeout=5, message="running")
    await _signal(elixir_kit, database, "cancel", str(sleeper.id))
    await eventually(
        lambda: sleeper.id not in info("pyq").running, timeout=5, message="job stopped"
    )
    assert await states(pool, sleeper.id) == {sleeper.id: "cancelled"}


async def test_a_python_node_pauses_resumes_scales_and_cancels_on_an_elixir_node(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
    node_log: Callable[[str], Path],
) -> None:
    await schema.install(pool)
    client = make_oban(name="Oban", node="py-client")  # no queues: it only signals

    async with elixir_kit.node(
        "exq:4,exother:1",
        database=database,
        log=node_log("ex-node"),
        script="signal_node.exs",
    ) as node:
        with with_output(node.output):
            await eventually(
                lambda: _last_state(node, "exq") == (False, 4, []),
                timeout=60,
                message="Elixir node up",
            )
            await client.pause_queue("exq")
            await eventually(
                lambda: _last_state(node, "exq") == (True, 4, []), timeout=5, message="paused"
            )
            assert _last_state(node, "exother") == (False, 1, [])
            held = await client.enqueue(echo({"mode": "ok"}, queue="exq"))
            assert held.id is not None

            await client.scale_queue(queue="exq", limit=9, node="elsewhere")
            await client.scale_queue(queue="exq", limit=6, node="ex-node")
            await eventually(
                lambda: _last_state(node, "exq") == (True, 6, []), timeout=5, message="scaled"
            )
            await asyncio.sleep(0.5)  # a paused Elixir queue must not run it: nothing to await
            assert await states(pool, held.id) == {held.id: "available"}

            await client.resume_queue("exq")
            await wait_until_final(pool, held.id, timeout=10, message="held job ran")
            assert _last_state(node, "exq") in [(False, 6, []), (False, 6, [held.id])]

            sleeper = await client.enqueue(echo({"mode": "sleep", "ms": 30_000}, queue="exq"))
            assert sleeper.id is not None
            await eventually(
                lambda: _last_state(node, "exq") == (False, 6, [sleeper.id]),
                timeout=5,
                message="sleeper running on the Elixir node",
            )
            assert await client.cancel_job(sleeper) == 1
            await eventually(
                lambda: _last_state(node, "exq") == (False, 6, []),
                timeout=5,
                message="Elixir killed the cancelled job",
            )
    assert await states(pool, sleeper.id) == {sleeper.id: "cancelled"}
    ran = await query(pool, "SELECT lang FROM exec_log WHERE job_id = %s", held.id)
    assert ran == [("ex",)]
