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


def _queue_lines(node: ElixirNode, queue: str) -> list[str]:
    """What ``queue_node.exs`` printed for ``queue``: "paused=B limit=N cooldown=MS" lines."""
    text = node.log.read_text(errors="replace") if node.log.exists() else ""
    prefix = f"queue {queue} "
    return [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]


def _midwives(node: ElixirNode) -> list[str]:
    text = node.log.read_text(errors="replace") if node.log.exists() else ""
    return [line for line in text.splitlines() if line.startswith("midwife ")]


async def _ran(pool: AsyncConnectionPool[Any], ids: list[int]) -> list[tuple[int, str]]:
    rows = await query(
        pool, "SELECT job_id, lang FROM exec_log WHERE job_id = ANY(%s) ORDER BY job_id", ids
    )
    return [(int(job_id), str(lang)) for job_id, lang in rows]


async def test_a_python_start_queue_runs_the_queue_on_an_elixir_node_with_its_debounce_in_ms(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
    node_log: Callable[[str], Path],
) -> None:
    """``debounce_interval`` is seconds in Python's API; Elixir's producer takes the same thing
    as ``dispatch_cooldown``, whole milliseconds. Elixir's Midwife turns every key of a start
    signal into an existing atom: an unknown key crashes it, restarting every queue of the
    node, and the queue never starts."""
    await schema.install(pool)
    client = make_oban(name="Oban", node="py-client")  # no queues: it only signals

    async with elixir_kit.node(
        "exq:1", database=database, log=node_log("ex-node"), script="queue_node.exs"
    ) as node:
        with with_output(node.output):
            await eventually(
                lambda: _queue_lines(node, "exq"), timeout=60, message="Elixir node up"
            )
            await client.start_queue(queue="from_py", limit=2, debounce_interval=0.25)
            await client.start_queue(queue="from_py_plain", limit=3, node="ex-node")
            await eventually(
                lambda: _queue_lines(node, "from_py") == ["paused=false limit=2 cooldown=250"],
                timeout=10,
                message="from_py started with a 250 ms cooldown",
            )
            await eventually(
                lambda: _queue_lines(node, "from_py_plain") == ["paused=false limit=3 cooldown=5"],
                timeout=10,
                message="from_py_plain started with Elixir's default cooldown",
            )
            jobs = await client.enqueue_many(
                echo({"mode": "ok"}, queue=queue)
                for queue in ("from_py", "from_py_plain")
                for _ in range(5)
            )
            ids = [job.id for job in jobs if job.id is not None]
            done = await wait_until_final(pool, *ids, timeout=30, message="jobs ran")
            assert set(done.values()) == {"completed"}
            assert await _ran(pool, ids) == [(job_id, "ex") for job_id in sorted(ids)]
            assert len(_midwives(node)) == 1, "the Elixir node's Midwife crashed and restarted"
            assert _queue_lines(node, "exq") == ["paused=false limit=1 cooldown=5"]


async def test_an_elixir_start_queue_runs_the_queue_on_a_python_node(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
) -> None:
    """Elixir's ``Oban.start_queue/2`` sends the options it was given, ``local_only`` and
    ``refresh_interval`` (an Elixir producer's heartbeat, ms) included; a Python node starts
    the queue all the same. And a cooldown sent as ``dispatch_cooldown`` (what a Python node
    sends, in ms) spaces a Python queue's fetches by that many milliseconds."""
    await schema.install(pool)
    py = await make_oban(name="Oban", node="py-node", queues={"pyq": 1}).start()
    client = make_oban(name="Oban", node="py-client")

    for args in (
        ("from_ex", "2", "local_only=false", "refresh_interval=30000"),
        ("from_ex_paused", "1", "paused=true", "node=py-node"),
    ):
        result = (await elixir_kit.run("start_queue.exs", *args, database=database)).check()
        assert "sent start" in result.output, result.output
    await eventually(
        lambda: py.check_queue("from_ex") is not None and py.check_queue("from_ex_paused"),
        timeout=10,
        message="both queues started on the Python node",
    )
    started, paused = py.check_queue("from_ex"), py.check_queue("from_ex_paused")
    assert started is not None and (started.limit, started.paused) == (2, False)
    assert paused is not None and (paused.limit, paused.paused) == (1, True)

    jobs = await client.enqueue_many(echo({"mode": "ok"}, queue="from_ex") for _ in range(5))
    ids = [job.id for job in jobs if job.id is not None]
    done = await wait_until_final(pool, *ids, timeout=30, message="jobs ran on the Python node")
    assert set(done.values()) == {"completed"}
    assert await _ran(pool, ids) == [(job_id, "py") for job_id in sorted(ids)]

    await client.start_queue(queue="spaced", limit=2, debounce_interval=0.25, node="py-node")
    await eventually(lambda: py.check_queue("spaced"), timeout=10, message="spaced started")
    # While a job runs, a Python queue fetches at most every debounce_interval (jittered by
    # +-25%): a long job holds one slot, and six short ones come one fetch at a time.
    long = await client.enqueue(echo({"mode": "sleep", "ms": 4000}, queue="spaced"))
    await eventually(
        lambda: long.id in info.running if (info := py.check_queue("spaced")) else False,
        timeout=10,
        message="the long job runs",
    )
    short = await client.enqueue_many(echo({"mode": "ok"}, queue="spaced") for _ in range(6))
    ids = [job.id for job in short if job.id is not None]
    await wait_until_final(pool, *ids, timeout=30, message="the short jobs ran")
    rows = await query(
        pool,
        "SELECT extract(epoch FROM max(at) - min(at))::float FROM exec_log WHERE job_id = ANY(%s)",
        ids,
    )
    # Six fetches, each at least 0.75 * 0.25 s after the one before: 0.94 s, less generous
    # slack for when each run logs itself. Milliseconds read as seconds would never finish,
    # and as microseconds the six take some 0.03 s.
    lower = 5 * 0.25 * 0.75 - 0.3
    await client.cancel_job(long)  # no need to wait for it
    print(f"six short jobs behind a 0.25 s debounce ran over {rows[0][0]:.3f}s")
    assert rows[0][0] >= lower, f"6 runs spanned only {rows[0][0]:.3f}s"
