"""A node's lifecycle with real ``python -m oban start`` processes (issue 13, items 1-3).

Shutdown records what finished: a sync job that outlives the grace period is waited for (up to a
second grace period) and acked, never run again; one that outlives that hard deadline is
handed back for rescue and the process exits with status 1; a second SIGTERM exits at once. A
replacement node started after a ``kill -9`` rescues the dead node's jobs within a producer
max_age of the death, not of its own start. Cancelling a running job through another process
stops it: the row is ``cancelled`` at once, a sync job's late return does not complete it, an
async job's task is cancelled (its ``finally`` runs).

Every scenario checks the database and the execution ledger the workers write (see
``nodes_harness``): ``start``/``done``/``finally`` lines with the job id, the pid, the attempt
and the time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import textwrap
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from oban import Job, Oban
from oban._supervisor import SIGNAL_COPY_WINDOW
from oban.oban import _instances
from tests.acceptance import nodes_harness
from tests.acceptance.nodes_harness import (
    ASYNC_WORKER,
    SYNC_WORKER,
    StartNode,
    _job,
    _log_lines,
    _producer_registered,
    _until,
)
from tests.processes import OBAN, Node, subprocess_env, until

# The harness's fixtures, by assignment (an import would read as unused, then redefined).
project = nodes_harness.project
launch_node = nodes_harness.launch_node
nodes = nodes_harness.nodes

Sql = Callable[..., Any]


def _configure(
    project: Path,
    *,
    grace: float = 10.0,
    max_age: float = 2.0,
    refresher: float = 0.5,
    lifeline: float = 0.5,
    leader: float = 1.0,
) -> None:
    """The nodes' oban.toml: short cluster intervals."""
    (project / "oban.toml").write_text(
        textwrap.dedent(
            f"""
            shutdown_grace_period = {grace}

            [leader]
            interval = {leader}

            [lifeline]
            interval = {lifeline}

            [refresher]
            interval = {refresher}
            max_age = {max_age}
            """
        )
    )


async def _up(sql: Sql, node: Node) -> None:
    await _until(
        lambda: _producer_registered(sql, node.name),
        node,
        timeout=20,
        message=f"{node.name} up",
    )


async def _leads(sql: Sql, node: Node) -> None:
    async def leads() -> bool:
        rows: list[tuple[Any, ...]] = await sql("SELECT node FROM oban_peers")
        return rows == [(node.name,)]

    await _until(leads, node, timeout=20, message=f"{node.name} leads")


async def _started(log: Path, job: Job, node: Node) -> None:
    """Wait until ``job``'s worker wrote its start line in ``node``'s process."""
    await _until(
        lambda: [line[2] for line in _log_lines(log, "start", job.id)] == [str(node.pid)],
        node,
        timeout=10,
        message=f"job {job.id} started in {node.name}",
    )


def _pids(log: Path, kind: str, job: Job) -> list[str]:
    return [line[2] for line in _log_lines(log, kind, job.id)]


async def _completed(client: Oban, job: Job, *nodes: Node, timeout: float = 15) -> Job:
    async def completed() -> Job | None:
        found = await _job(client, job.id)
        return found if found.state == "completed" else None

    result: Job = await _until(
        completed, *nodes, timeout=timeout, message=f"job {job.id} completed"
    )
    return result


async def _producer(sql: Sql, node: str) -> list[tuple[Any, ...]]:
    """``(expired, meta)`` of ``node``'s producer rows."""
    rows: list[tuple[Any, ...]] = await sql(
        "SELECT updated_at = '-infinity', meta FROM oban_producers WHERE node = %s", (node,)
    )
    return rows


def _explain(*nodes: Node, log: Path | None = None) -> str:
    """The nodes' output and the ledger, for an assertion's message."""
    ledger = log.read_text() if log is not None and log.exists() else ""
    return "\n".join([*(node.tail() for node in nodes), f"--- ledger ---\n{ledger}"])


async def _exit_after_sigterm(node: Node, *, timeout: float) -> tuple[int, float]:
    """SIGTERM ``node``; its exit code and the seconds it took to exit (at most ``timeout``)."""
    stop = time.monotonic()
    node.signal(signal.SIGTERM)
    code = await node.exit_code(timeout=timeout)
    return code, time.monotonic() - stop


async def _assert_left_executing(client: Oban, job: Job, log: Path, why: str) -> None:
    """``job``'s process died mid-run: its row is still ``executing`` (attempt 1), left for
    rescue, and its run never finished."""
    left = await _job(client, job.id)
    assert (left.state, left.attempt) == ("executing", 1), (left.state, why)
    assert _log_lines(log, "done", job.id) == [], why  # the process is gone, its run too


def _assert_rescued(done: Job, job: Job, first: Node, second: Node, log: Path) -> None:
    """``job`` (its row ``done``) started in ``first``, which died, and was rescued and run
    to its end by ``second`` on attempt 2."""
    why = _explain(first, second, log=log)
    assert done.attempt == 2, (job.id, done.attempt, why)
    assert done.attempted_by[0] == second.name, (job.id, done.attempted_by, why)
    assert done.meta.get("rescued") == 1, (job.id, done.meta, why)
    assert _pids(log, "start", job) == [str(first.pid), str(second.pid)], why
    assert _pids(log, "done", job) == [str(second.pid)], why


# ---------------------------------------------------------------------------------------------
# Shutdown records what finished
# ---------------------------------------------------------------------------------------------


async def test_sigterm_waits_past_the_grace_period_for_a_sync_job_and_records_it(
    make_oban: Callable[..., Oban], nodes: StartNode, project: Path, sql: Sql
) -> None:
    # The job outlives the grace period but ends before the hard deadline (2 x grace).
    grace, sleep = 1.5, 2.2
    client = make_oban(name="lifecycle_client")
    log = project / "runs.log"
    _configure(project, grace=10)  # the environment's 1.5 s wins over the file's 10 s
    first = await nodes("node-1", env={"OBAN_SHUTDOWN_GRACE_PERIOD": str(grace)})
    await _up(sql, first)

    job = await client.enqueue(Job(SYNC_WORKER, args={"log": str(log), "sleeps": [sleep]}))
    await _started(log, job, first)
    code, elapsed = await _exit_after_sigterm(first, timeout=2 * grace + 3)
    print(f"\nsync job past the grace period: exit {code} {elapsed:.2f}s after SIGTERM")

    why = _explain(first, log=log)
    assert code == 0, why
    # Past the grace period (the job had ~2.2 s left), well before the hard deadline's end.
    assert grace < elapsed < 2 * grace + 1.0, (elapsed, why)
    done = await _job(client, job.id)
    assert done.state == "completed", (done.state, why)
    assert done.attempt == 1, why
    assert done.attempted_by[0] == "node-1", why
    assert "rescued" not in done.meta, (done.meta, why)
    assert _pids(log, "start", job) == [str(first.pid)], why
    finishes = _log_lines(log, "done", job.id)
    assert [line[2] for line in finishes] == [str(first.pid)], why
    assert finishes[0][-1] == "cancelled=False", why
    assert await _producer(sql, "node-1") == [], why  # nothing left for rescue: row deleted

    # Another node, leader with a 0.5 s lifeline, never runs the recorded job again.
    second = await nodes("node-2")
    await _up(sql, second)
    await _leads(sql, second)
    await asyncio.sleep(1.5)  # three lifeline ticks
    again = await _job(client, job.id)
    why = _explain(first, second, log=log)
    assert (again.state, again.attempt, again.meta) == ("completed", 1, done.meta), why
    assert _pids(log, "start", job) == [str(first.pid)], why
    assert len(_log_lines(log, "done", job.id)) == 1, why
    assert second.proc.returncode is None, why


async def test_on_sqlite_sigterm_waits_past_the_grace_period_and_records_the_job(
    launch_node: nodes_harness.LaunchNode, project: Path
) -> None:
    """The test above on one SQLite file, the default engine: a sync job outliving the grace
    period is waited for and recorded, its producer row goes, and a second node (leader,
    lifeline every 0.5 s) never runs it again."""
    grace, sleep = 1.5, 2.2
    dsn = f"sqlite:///{project / 'jobs.db'}"
    log = project / "runs.log"
    _configure(project, grace=grace)
    client = Oban(dsn=dsn, name="lifecycle_sqlite_client")

    def producers(node: str) -> list[tuple[Any, ...]]:
        try:
            with closing(sqlite3.connect(project / "jobs.db", timeout=10)) as conn:
                return list(conn.execute("SELECT uuid FROM oban_producers WHERE node = ?", (node,)))
        except sqlite3.OperationalError:
            return []

    try:
        first = await launch_node("node-1", dsn=dsn, prefix="public")
        await _until(lambda: producers("node-1"), first, timeout=20, message="node-1 up")
        job = await client.enqueue(Job(SYNC_WORKER, args={"log": str(log), "sleeps": [sleep]}))
        await _started(log, job, first)
        code, elapsed = await _exit_after_sigterm(first, timeout=2 * grace + 3)

        why = _explain(first, log=log)
        assert code == 0, why
        assert grace < elapsed < 2 * grace + 1.0, (elapsed, why)
        done = await _job(client, job.id)
        assert (done.state, done.attempt) == ("completed", 1), (done.state, why)
        assert "rescued" not in done.meta, (done.meta, why)
        assert _pids(log, "start", job) == [str(first.pid)], why
        assert [line[2] for line in _log_lines(log, "done", job.id)] == [str(first.pid)], why
        assert producers("node-1") == [], why

        second = await launch_node("node-2", dsn=dsn, prefix="public")
        await _until(lambda: producers("node-2"), second, timeout=20, message="node-2 up")
        await asyncio.sleep(1.5)  # three lifeline ticks
        again = await _job(client, job.id)
        why = _explain(first, second, log=log)
        assert (again.state, again.attempt, again.meta) == ("completed", 1, done.meta), why
        assert _pids(log, "start", job) == [str(first.pid)], why
        assert len(_log_lines(log, "done", job.id)) == 1, why
    finally:
        await client.stop()
        _instances.pop(client.name, None)


async def test_sync_job_past_the_hard_deadline_is_handed_back_and_the_process_exits(
    make_oban: Callable[..., Oban], nodes: StartNode, project: Path, sql: Sql
) -> None:
    grace = 1.0
    client = make_oban(name="lifecycle_client")
    log = project / "runs.log"
    _configure(project, grace=grace)
    first = await nodes("node-1")
    await _up(sql, first)

    # 6 s on its first attempt (longer than 2 x grace), 0.3 s once rescued.
    job = await client.enqueue(Job(SYNC_WORKER, args={"log": str(log), "sleeps": [6, 0.3]}))
    await _started(log, job, first)
    code, elapsed = await _exit_after_sigterm(first, timeout=2 * grace + 2)
    print(f"\nsync job past the hard deadline: exit {code} {elapsed:.2f}s after SIGTERM")

    why = _explain(first, log=log)
    assert code == 1, why
    # The grace period, then a second one for the thread, then out: well before the job's 6 s.
    assert 2 * grace - 0.1 < elapsed < 2 * grace + 1.5, (elapsed, why)
    await _assert_left_executing(client, job, log, why)
    producers = await _producer(sql, "node-1")
    assert len(producers) == 1, (producers, why)
    [(expired, meta)] = producers
    assert expired, why  # handed back: rescued at once, whatever the heartbeat rules
    assert meta.get("shutdown") is True, (meta, why)

    second = await nodes("node-2")
    done = await _completed(client, job, first, second, timeout=15)
    _assert_rescued(done, job, first, second, log)


async def test_second_sigterm_exits_at_once_leaving_the_job_for_rescue(
    make_oban: Callable[..., Oban], nodes: StartNode, project: Path, sql: Sql
) -> None:
    client = make_oban(name="lifecycle_client")
    log = project / "runs.log"
    grace = 8.0
    _configure(project, grace=grace)
    first = await nodes("node-1")
    await _up(sql, first)

    job = await client.enqueue(Job(SYNC_WORKER, args={"log": str(log), "sleeps": [30, 0.3]}))
    await _started(log, job, first)
    stop = time.monotonic()
    first.signal(signal.SIGTERM)
    await _until(
        lambda: "received SIGTERM" in first.text(),
        first,
        message="the first SIGTERM handled",
    )
    await asyncio.sleep(SIGNAL_COPY_WINDOW)  # sooner, it is a copy of the first (next test)
    first.signal(signal.SIGTERM)
    code = await first.exit_code(timeout=3)
    elapsed = time.monotonic() - stop
    print(f"\nsecond SIGTERM: exit {code} {elapsed:.2f}s after the first")

    why = _explain(first, log=log)
    assert code == 1, why
    assert elapsed < 2.0 + SIGNAL_COPY_WINDOW, (elapsed, why)  # the grace period is 8 s
    assert "second SIGTERM" in first.text(), why
    await _assert_left_executing(client, job, log, why)

    # Its producer row stops heartbeating; after max_age (2 s) the other node rescues the job.
    second = await nodes("node-2")
    done = await _completed(client, job, first, second, timeout=15)
    _assert_rescued(done, job, first, second, log)


# ---------------------------------------------------------------------------------------------
# Rescue as soon as death is certain
# ---------------------------------------------------------------------------------------------


async def test_a_signal_delivered_twice_at_once_is_one_graceful_stop(
    make_oban: Callable[..., Oban], nodes: StartNode, project: Path, sql: Sql
) -> None:
    # `timeout` (and init systems that signal a process group) deliver one TERM twice: to the
    # child, then to its group. That copy must not turn a graceful stop into a forced exit.
    client = make_oban(name="lifecycle_client")
    log = project / "runs.log"
    _configure(project, grace=8.0)
    first = await nodes("node-1")
    await _up(sql, first)

    job = await client.enqueue(Job(SYNC_WORKER, args={"log": str(log), "sleeps": [1.0]}))
    await _started(log, job, first)
    first.signal(signal.SIGTERM)
    sent = time.monotonic()
    # Sent back to back, the kernel may merge the two: the copy goes once the first is handled.
    await _until(
        lambda: "received SIGTERM" in first.text(),
        first,
        interval=0.005,
        message="the first SIGTERM handled",
    )
    first.signal(signal.SIGTERM)
    gap = time.monotonic() - sent
    code = await first.exit_code(timeout=8)

    why = _explain(first, log=log)
    assert gap < SIGNAL_COPY_WINDOW, f"the copy came {gap:.3f}s later: inconclusive\n{why}"
    assert code == 0, why
    assert "second SIGTERM" not in first.text(), why
    assert "received SIGTERM again; already stopping" in first.text(), why
    done = await _job(client, job.id)
    assert (done.state, done.attempt) == ("completed", 1), why
    assert len(_log_lines(log, "done", job.id)) == 1, why


async def test_replacement_node_rescues_a_killed_nodes_jobs_within_max_age_of_the_kill(
    make_oban: Callable[..., Oban], nodes: StartNode, project: Path, sql: Sql
) -> None:
    max_age, replace_after = 4.0, 3.0
    # Before issue 13 the replacement trusted heartbeats only a max_age after its own start:
    # it rescued no sooner than replace_after + max_age (7 s) after the kill.
    bound = max_age + 1.5
    assert bound < replace_after + max_age
    client = make_oban(name="lifecycle_client")
    log = project / "runs.log"
    _configure(project, max_age=max_age, refresher=0.5, lifeline=0.5, leader=1.0)
    first = await nodes("node-a", queues="default:5")
    await _up(sql, first)
    await _leads(sql, first)  # the dead node was the leader: its lease must expire too

    jobs = await client.enqueue_many(
        [Job(SYNC_WORKER, args={"log": str(log), "sleeps": [30, 0.5]}) for _ in range(5)]
    )
    ids = [job.id for job in jobs]
    for job in jobs:
        await _started(log, job, first)

    async def states() -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await sql(
            "SELECT id, state::text, meta ? 'rescued' FROM oban_jobs WHERE id = ANY(%s)", (ids,)
        )
        return rows

    assert {row[1] for row in await states()} == {"executing"}, _explain(first, log=log)

    await first.kill()
    killed_at, killed_wall = time.monotonic(), time.time()
    [(heartbeat_age,)] = await sql(
        "SELECT extract(epoch FROM timezone('UTC', now()) - updated_at)::float "
        "FROM oban_producers WHERE node = 'node-a'"
    )
    await asyncio.sleep(replace_after)
    second = await nodes("node-b", queues="default:5")
    started_after = time.monotonic() - killed_at

    async def all_rescued() -> float | None:
        rows = await states()
        return time.monotonic() - killed_at if all(row[2] for row in rows) else None

    rescued_after: float = await _until(
        all_rescued, first, second, timeout=20, message="every job rescued"
    )
    for job in jobs:
        await _completed(client, job, first, second, timeout=10)
    completed_after = time.monotonic() - killed_at

    why = _explain(first, second, log=log)
    rerun = [
        float(line[4]) - killed_wall for job in jobs for line in _log_lines(log, "start", job.id)
    ]
    reruns = sorted(t for t in rerun if t > 0)
    print(
        f"\nkill -9 replacement: last heartbeat {heartbeat_age:.2f}s before the kill; node-b "
        f"started {started_after:.2f}s after it; every job rescued {rescued_after:.2f}s, "
        f"restarted {reruns[0]:.2f}..{reruns[-1]:.2f}s, completed {completed_after:.2f}s "
        f"after the kill (bound {bound}s; the old rule: >= {replace_after + max_age}s)"
    )
    assert rescued_after < bound, (rescued_after, why)
    assert len(reruns) == len(jobs) and reruns[-1] < bound, (reruns, why)
    for job in jobs:
        _assert_rescued(await _job(client, job.id), job, first, second, log)


# ---------------------------------------------------------------------------------------------
# Cancel means stop
# ---------------------------------------------------------------------------------------------


def _cancel_errors(found: Job) -> list[dict[str, Any]]:
    return [e for e in found.errors if "cancelled while executing" in json.dumps(e)]


async def _cancel_running(client: Oban, job: Job, node: Node, log: Path) -> Job:
    """Cancel ``job``, running on ``node``; assert its row is cancelled at once, with one
    "cancelled while executing" error, and return that row."""
    cancelled = await client.cancel_job(job)
    assert cancelled == 1, (cancelled, _explain(node, log=log))
    now = await _job(client, job.id)
    why = _explain(node, log=log)
    assert now.state == "cancelled", (now.state, why)
    assert now.cancelled_at is not None, why
    assert len(_cancel_errors(now)) == 1, (now.errors, why)
    return now


def _assert_still_cancelled(later: Job, now: Job, why: str) -> None:
    """``later`` (the row read again) is as cancelling left it (``now``)."""
    assert later.state == "cancelled", (later.state, why)
    assert later.errors == now.errors, (later.errors, why)


async def test_cancel_from_another_process_stops_running_sync_and_async_jobs(
    make_oban: Callable[..., Oban], nodes: StartNode, project: Path, sql: Sql
) -> None:
    client = make_oban(name="lifecycle_client")
    log = project / "runs.log"
    _configure(project, grace=5)
    node = await nodes("node-1", queues="default:1")
    await _up(sql, node)

    # A sync job: its thread runs on, the row is cancelled at once and stays cancelled.
    sync_job = await client.enqueue(Job(SYNC_WORKER, args={"log": str(log), "sleeps": [2]}))
    await _started(log, sync_job, node)
    now = await _cancel_running(client, sync_job, node, log)
    why = _explain(node, log=log)
    assert _log_lines(log, "done", sync_job.id) == [], why  # cancelled while it ran

    returned = await _until(
        lambda: _log_lines(log, "done", sync_job.id),
        node,
        timeout=5,
        message="the sync job's thread returned",
    )
    assert returned[0][-1] == "cancelled=True", _explain(node, log=log)  # it saw job.cancelled()
    # Its ack (a killed one) changes nothing: the row never completes, no second error.
    for _ in range(10):
        why = _explain(node, log=log)
        _assert_still_cancelled(await _job(client, sync_job.id), now, why)
        await asyncio.sleep(0.1)
    assert _pids(log, "start", sync_job) == [str(node.pid)], why

    # An async job: its task is cancelled on the node, its finally block runs, never "done".
    async_job = await client.enqueue(Job(ASYNC_WORKER, args={"log": str(log), "sleeps": [30]}))
    await _started(log, async_job, node)
    stop = time.monotonic()
    now = await _cancel_running(client, async_job, node, log)
    await _until(
        lambda: _log_lines(log, "finally", async_job.id),
        node,
        timeout=3,
        message="the async job's finally block ran",
    )
    stopped = time.monotonic() - stop
    print(f"\ncancel: the async job's finally ran {stopped:.2f}s after cancel_job")
    assert _log_lines(log, "done", async_job.id) == [], _explain(node, log=log)

    # Its slot (the queue's only one) is free: the next job runs and completes.
    quick = await client.enqueue(Job(SYNC_WORKER, args={"log": str(log), "sleeps": [0]}))
    await _completed(client, quick, node, timeout=5)
    why = _explain(node, log=log)
    _assert_still_cancelled(await _job(client, async_job.id), now, why)
    assert _log_lines(log, "done", async_job.id) == [], why
    assert _pids(log, "start", async_job) == [str(node.pid)], why

    node.signal(signal.SIGTERM)  # nothing runs: a clean, quick exit
    assert await node.exit_code(timeout=5) == 0, node.tail()


async def test_sigterm_while_the_database_does_not_answer_stops_at_once(tmp_path: Path) -> None:
    # A server that accepts connections and never answers: the start waits for it (the probe,
    # then the pool, up to pool_timeout); SIGTERM must not wait as long.
    silent: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *OBAN,
        "start",
        "--dsn",
        f"postgresql://postgres@127.0.0.1:{port}/test",
        "--queues",
        "default:1",
        cwd=tmp_path,
        env=subprocess_env({"OBAN_POOL_TIMEOUT": "30"}),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        banner = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"oban " in banner, banner
        await until(lambda: silent, timeout=10, message="the node connecting")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for writer in silent:
            writer.close()
        server.close()
    text = banner.decode() + out.decode()
    print(f"\nSIGTERM while connecting: exit {proc.returncode} {elapsed:.2f}s later")
    assert proc.returncode == 0, text
    assert elapsed < 1.5, (elapsed, text)  # the probe alone waits 3 s for an answer
    assert "stopped before the node had started" in text, text
