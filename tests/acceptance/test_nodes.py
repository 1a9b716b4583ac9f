"""Nodes as real processes: ``python -m oban start`` killed with SIGKILL, PostgreSQL restarted.

The PostgreSQL restart happens on a private server (the ``private_pg`` fixture), never on the
shared test server.

Each node is an ``oban start`` subprocess whose working directory holds the worker module and
an ``oban.toml`` with short cluster intervals. The workers append ``start``/``done`` lines to a
file, so an execution leaves evidence even when its process is killed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oban import Job, Oban
from tests.acceptance import nodes_harness
from tests.acceptance.nodes_harness import (
    WORKER,
    LaunchNode,
    Private,
    StartNode,
    _job,
    _log_lines,
    _producer_registered,
    _until,
)

# The harness's fixtures, by assignment (an import would read as unused, then redefined).
project = nodes_harness.project
launch_node = nodes_harness.launch_node
nodes = nodes_harness.nodes
private = nodes_harness.private


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


async def test_kill_9_mid_job_is_rescued_and_completed_once_by_the_other_node(
    make_oban: Callable[..., Oban], nodes: StartNode, project: Path, sql: Callable[..., Any]
) -> None:
    client = make_oban(name="nodes_client")
    log = project / "runs.log"

    first = await nodes("node-1")

    async def first_leads() -> bool:
        rows: list[tuple[Any, ...]] = await sql("SELECT node FROM oban_peers")
        return rows == [("node-1",)]

    await _until(first_leads, first, timeout=20, message="node-1 leads")
    job = await client.enqueue(Job(WORKER, args={"log": str(log), "sleep": 3}))

    async def executing_on_first() -> Job | None:
        found = await _job(client, job.id)
        ok = found.state == "executing" and found.attempted_by[0] == "node-1"
        return found if ok else None

    await _until(executing_on_first, first, timeout=10, message="job executing on node-1")
    await _until(
        lambda: [line[2] for line in _log_lines(log, "start", job.id)] == [str(first.pid)],
        first,
        message="the worker started in process 1",
    )

    second = await nodes("node-2")
    await _until(
        lambda: _producer_registered(sql, "node-2"), second, timeout=20, message="node-2 up"
    )

    # The leader itself dies, mid-job, without any chance to clean up.
    await first.kill()
    assert _log_lines(log, "done", job.id) == []

    async def completed() -> Job | None:
        found = await _job(client, job.id)
        return found if found.state == "completed" else None

    # Lease 1 s, lifeline every 0.5 s, producer stale after 2 s, then a 3 s run: ~7 s.
    done = await _until(completed, second, timeout=20, message="job rescued and completed")

    starts = _log_lines(log, "start", job.id)
    finishes = _log_lines(log, "done", job.id)
    assert 1 <= len(starts) <= 2, starts
    assert [line[2] for line in finishes] == [str(second.pid)], finishes
    assert done.attempted_by[0] == "node-2"
    assert done.attempt == 2
    assert done.meta.get("rescued") == 1
    assert await sql("SELECT node FROM oban_peers") == [("node-2",)]
    assert second.proc.returncode is None, second.tail()


async def test_postgres_restart_loses_no_job_and_runs_none_twice(
    private: Private, launch_node: LaunchNode, project: Path
) -> None:
    # Restarting PostgreSQL kills every connection to it: this test has a server of its own.
    client, sql = private.client, private.sql
    log = project / "runs.log"
    node = await launch_node(
        "node-r", dsn=private.server.dsn, prefix=private.prefix, queues="default:2"
    )
    await _until(lambda: _producer_registered(sql, "node-r"), node, timeout=20, message="node up")

    before = await client.enqueue_many(
        [Job(WORKER, args={"log": str(log), "sleep": 0.4}) for _ in range(6)]
    )
    await _until(
        lambda: any(_log_lines(log, "start", job.id) for job in before),
        node,
        message="jobs running before the restart",
    )

    await asyncio.to_thread(private.server.restart)  # returns once it accepts connections
    await private.pool.check()  # our own pooled connections died with the server

    after = await client.enqueue_many(
        [Job(WORKER, args={"log": str(log), "sleep": 0.1}) for _ in range(5)]
    )
    ids = [job.id for job in before + after]

    async def all_completed() -> bool:
        rows = await sql("SELECT state::text FROM oban_jobs WHERE id = ANY(%s)", (ids,))
        return len(rows) == len(ids) and all(row[0] == "completed" for row in rows)

    await _until(all_completed, node, timeout=30, message="every job completed")
    for job_id in ids:
        assert len(_log_lines(log, "start", job_id)) == 1, (job_id, log.read_text())
        assert len(_log_lines(log, "done", job_id)) == 1, (job_id, log.read_text())
    assert node.proc.returncode is None, node.tail()

    # The node is healthy, not just alive: it still shuts down cleanly.
    node.proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(node.proc.wait(), 20)
    assert code == 0, node.tail()
    assert not await _producer_registered(sql, "node-r")
