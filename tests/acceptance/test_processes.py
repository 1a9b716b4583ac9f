"""``oban start --processes N``: N node processes under one supervisor, as real processes.

The supervisor is a ``python -m oban start --processes 2`` subprocess in the harness's project
directory (its worker module and an ``oban.toml`` with short cluster intervals: leader lease
1 s, lifeline every 0.5 s, producers stale after 2 s, grace period 10 s). The children share
its output file; the supervisor logs ``process I (node NAME, pid P) started`` for each, which
is how the tests find them. The workers append ``start``/``done`` lines to a ledger, so an
execution leaves evidence even when its process is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from oban import Job, Oban
from oban._supervisor import SIGNAL_COPY_WINDOW
from oban.errors import UnknownOptionError
from oban.oban import _instances
from tests.acceptance import nodes_harness
from tests.acceptance.nodes_harness import WORKER, _job, _log_lines, _until
from tests.helpers import run_command
from tests.processes import OBAN, Launcher, Node, subprocess_env

project = nodes_harness.project

_STARTED = re.compile(r"process (\d+) \(node (\S+), pid (\d+)\) started")

Supervise = Callable[..., Awaitable[Node]]


def _children(supervisor: Node) -> list[tuple[int, str, int]]:
    """(index, node, pid) of every child the supervisor started, in order."""
    return [
        (int(index), node, int(pid)) for index, node, pid in _STARTED.findall(supervisor.text())
    ]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def supervise(project: Path) -> AsyncIterator[Supervise]:
    """``await supervise("--dsn", ..., "--processes", "2")`` starts ``oban start`` with these
    arguments; every supervisor and every child it started is killed at the end."""
    launcher = Launcher(project)

    async def start(*args: str, env: Mapping[str, str] | None = None) -> Node:
        index = len(launcher.nodes)
        return await launcher.start(
            f"supervisor {index}", *args, output=f"supervisor-{index}.out", env=env
        )

    try:
        yield start
    finally:
        for node in launcher.nodes:
            await node.kill()
            for _index, _name, pid in _children(node):
                if _alive(pid):
                    _kill(pid)


@pytest.fixture
def supervise_pg(dsn: str, prefix: str, supervise: Supervise) -> Supervise:
    """``supervise`` on the test's schema of the shared server (killed before it is dropped)."""

    async def start(*args: str, env: Mapping[str, str] | None = None) -> Node:
        return await supervise("--dsn", dsn, "--prefix", prefix, *args, env=env)

    return start


async def _producers(sql: Callable[..., Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, Any]] = await sql("SELECT node, uuid FROM oban_producers ORDER BY node")
    return [(node, str(uuid)) for node, uuid in rows]


async def _both_up(sql: Callable[..., Any], supervisor: Node) -> list[tuple[str, str]]:
    async def up() -> list[tuple[str, str]] | None:
        rows = await _producers(sql)
        return rows if sorted(node for node, _ in rows) == ["sup-1", "sup-2"] else None

    result: list[tuple[str, str]] = await _until(
        up, supervisor, timeout=20, message="both nodes registered"
    )
    return result


async def _two_processes(
    supervise_pg: Supervise, sql: Callable[..., Any], queues: str
) -> tuple[Node, list[tuple[str, str]]]:
    """Start ``oban start --queues QUEUES --node sup --processes 2`` on the test's schema; wait
    until both nodes registered and return the supervisor and their producer rows."""
    supervisor = await supervise_pg("--queues", queues, "--node", "sup", "--processes", "2")
    return supervisor, await _both_up(sql, supervisor)


async def _completed(client: Oban, job_id: int | None, supervisor: Node, timeout: float) -> Job:
    async def done() -> Job | None:
        found = await _job(client, job_id)
        return found if found.state == "completed" else None

    result: Job = await _until(done, supervisor, timeout=timeout, message=f"job {job_id} done")
    return result


def _ran_each_once(log: Path, jobs: list[Job]) -> set[int]:
    """Assert that the ledger shows every job started and done exactly once; return the pids
    of the processes that ran them."""
    for job in jobs:
        assert len(_log_lines(log, "start", job.id)) == 1, log.read_text()
        assert len(_log_lines(log, "done", job.id)) == 1, log.read_text()
    return {int(line[2]) for job in jobs for line in _log_lines(log, "done", job.id)}


async def _kill_a_running_child(supervisor: Node, log: Path, jobs: list[Job]) -> tuple[int, str]:
    """Once each child runs one of ``jobs``, SIGKILL the child running the first; wait until
    the supervisor restarted it. Returns the killed pid and the child's node name."""

    def both_running() -> bool:
        pids = {line[2] for job in jobs for line in _log_lines(log, "start", job.id)}
        return len(pids) == 2

    await _until(both_running, supervisor, timeout=10, message="one job running in each child")
    killed = int(_log_lines(log, "start", jobs[0].id)[0][2])
    (index, node) = next((i, n) for i, n, pid in _children(supervisor) if pid == killed)
    os.kill(killed, signal.SIGKILL)

    def restarted() -> int | None:
        again = [pid for i, _n, pid in _children(supervisor)[2:] if i == index]
        return again[0] if again else None

    new_pid = await _until(restarted, supervisor, timeout=10, message="the child restarted")
    assert new_pid != killed
    assert f"pid {killed}) was killed by SIGKILL" in supervisor.text(), supervisor.tail()
    return killed, node


async def _assert_rescued_and_run_once(
    client: Oban, supervisor: Node, log: Path, jobs: list[Job], killed: int
) -> None:
    """The killed child's job (the first) was rescued and ran to its end once, on attempt 2,
    elsewhere; the other job ran once."""
    victim, survivor = jobs
    # Producer stale after 2 s, lifeline every 0.5 s, then a 3 s run.
    rescued = await _completed(client, victim.id, supervisor, timeout=25)
    assert rescued.attempt == 2 and rescued.meta.get("rescued") == 1, rescued
    starts = _log_lines(log, "start", victim.id)
    finishes = _log_lines(log, "done", victim.id)
    assert (starts[0][2], starts[0][3]) == (str(killed), "1"), starts
    assert len(finishes) == 1, finishes  # the killed attempt never finished; the rescue did
    assert finishes[0][2] != str(killed) and finishes[0][3] == "2", finishes
    await _completed(client, survivor.id, supervisor, timeout=5)
    assert len(_log_lines(log, "start", survivor.id)) == 1
    assert len(_log_lines(log, "done", survivor.id)) == 1


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


async def test_two_processes_run_two_nodes_that_share_the_jobs_and_stop_cleanly(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    supervise_pg: Supervise,
    project: Path,
) -> None:
    client = make_oban(name="procs_client")
    log = project / "runs.log"
    supervisor, _ = await _two_processes(supervise_pg, sql, "default:2")
    children = _children(supervisor)
    assert [(index, node) for index, node, _pid in children] == [(1, "sup-1"), (2, "sup-2")]
    pids = {pid for _index, _node, pid in children}
    assert supervisor.pid not in pids

    jobs = await client.enqueue_many(
        [Job(WORKER, args={"log": str(log), "sleep": 0.2}) for _ in range(20)]
    )

    async def all_completed() -> bool:
        ids = [job.id for job in jobs]
        rows = await sql("SELECT state::text FROM oban_jobs WHERE id = ANY(%s)", (ids,))
        return len(rows) == 20 and all(row[0] == "completed" for row in rows)

    await _until(all_completed, supervisor, timeout=20, message="every job completed")
    ran_in = _ran_each_once(log, jobs)
    assert ran_in == pids, "both nodes run jobs"
    nodes = await sql("SELECT DISTINCT attempted_by[1] FROM oban_jobs ORDER BY 1")
    assert nodes == [("sup-1",), ("sup-2",)]

    supervisor.signal(signal.SIGTERM)
    # A copy of that TERM right after it (as `timeout` sends one) is no second request.
    await _until(
        lambda: "received SIGTERM, stopping" in supervisor.text(),
        supervisor,
        interval=0.005,
        message="the first SIGTERM handled",
    )
    supervisor.signal(signal.SIGTERM)
    assert await supervisor.exit_code(timeout=10) == 0, supervisor.tail()
    assert "a copy of the first" in supervisor.text(), supervisor.tail()
    assert not [pid for pid in pids if _alive(pid)]
    assert supervisor.text().count("exited with status 0") == 2, supervisor.tail()
    assert await _producers(sql) == []
    assert "Traceback" not in supervisor.text(), supervisor.tail(200)


async def test_a_killed_child_is_restarted_and_its_job_rescued_and_run_once(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    supervise_pg: Supervise,
    project: Path,
) -> None:
    client = make_oban(name="procs_client")
    log = project / "runs.log"
    supervisor, before = await _two_processes(supervise_pg, sql, "default:1")

    jobs = await client.enqueue_many(
        [Job(WORKER, args={"log": str(log), "sleep": 3}) for _ in range(2)]
    )
    killed, node = await _kill_a_running_child(supervisor, log, jobs)

    async def new_producer_row() -> bool:
        return any(n == node and (n, u) not in before for n, u in await _producers(sql))

    await _until(new_producer_row, supervisor, timeout=10, message="a new producer row")
    await _assert_rescued_and_run_once(client, supervisor, log, jobs, killed)

    supervisor.signal(signal.SIGTERM)
    assert await supervisor.exit_code(timeout=10) == 0, supervisor.tail()


async def test_a_second_signal_kills_every_child_at_once(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    supervise_pg: Supervise,
    project: Path,
) -> None:
    client = make_oban(name="procs_client")
    log = project / "runs.log"
    supervisor, _ = await _two_processes(supervise_pg, sql, "default:1")
    pids = [pid for _index, _node, pid in _children(supervisor)]
    # A sync job longer than the grace period: the graceful stop would wait 2 x 10 s.
    job = await client.enqueue(Job(WORKER, args={"log": str(log), "sleep": 30}))
    await _until(
        lambda: _log_lines(log, "start", job.id), supervisor, timeout=10, message="job started"
    )

    supervisor.signal(signal.SIGTERM)
    await _until(
        lambda: supervisor.text().count("shutting down gracefully") == 2,
        supervisor,
        timeout=5,
        message="both children stopping",
    )
    await asyncio.sleep(SIGNAL_COPY_WINDOW)  # sooner, it would count as a copy of the first
    supervisor.signal(signal.SIGINT)

    assert await supervisor.exit_code(timeout=3) == 1, supervisor.tail()
    assert "second SIGINT: killing every node process" in supervisor.text()
    assert [pid for pid in pids if _alive(pid)] == []
    assert _log_lines(log, "done", job.id) == []


async def test_children_stop_when_the_supervisor_is_killed(
    sql: Callable[..., Any], supervise_pg: Supervise
) -> None:
    supervisor, _ = await _two_processes(supervise_pg, sql, "default:1")
    pids = [pid for _index, _node, pid in _children(supervisor)]

    await supervisor.kill()  # SIGKILL: no chance to stop its children

    await _until(
        lambda: not any(_alive(pid) for pid in pids),
        supervisor,
        timeout=10,
        message="the orphaned children stopped",
    )
    assert supervisor.text().count("the supervisor (pid") == 2, supervisor.tail()
    assert await _producers(sql) == []  # they stopped gracefully


# ---------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------


async def test_two_processes_on_one_sqlite_file(project: Path, supervise: Supervise) -> None:
    db = project / "jobs.db"
    dsn = f"sqlite:///{db}"
    log = project / "runs.log"
    supervisor = await supervise(
        "--dsn", dsn, "--queues", "default:2", "--node", "sup", "--processes", "2"
    )

    def nodes() -> list[str]:
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
                rows = conn.execute("SELECT node FROM oban_producers ORDER BY node").fetchall()
        except sqlite3.OperationalError:
            return []  # not created yet
        return [row[0] for row in rows]

    await _until(lambda: nodes() == ["sup-1", "sup-2"], supervisor, timeout=20, message="up")
    pids = {pid for _index, _node, pid in _children(supervisor)}

    client = Oban(dsn=dsn, name="procs_sqlite_client")
    try:
        jobs = await client.enqueue_many(
            [Job(WORKER, args={"log": str(log), "sleep": 0.2}) for _ in range(16)]
        )
        for job in jobs:
            await _completed(client, job.id, supervisor, timeout=20)
    finally:
        await client.stop()
        _instances.pop(client.name, None)
    assert _ran_each_once(log, jobs) == pids

    supervisor.signal(signal.SIGTERM)
    assert await supervisor.exit_code(timeout=10) == 0, supervisor.tail()
    assert nodes() == []
    assert "database is locked" not in supervisor.text().lower(), supervisor.tail(200)


async def test_a_killed_child_on_sqlite_is_restarted_and_its_job_rescued_and_run_once(
    project: Path, supervise: Supervise
) -> None:
    """The PostgreSQL test above on one SQLite file: the supervisor restarts the killed child,
    whose job the leader's lifeline rescues once its producer's heartbeat is stale."""
    db = project / "jobs.db"
    dsn = f"sqlite:///{db}"
    log = project / "runs.log"
    supervisor = await supervise(
        "--dsn", dsn, "--queues", "default:1", "--node", "sup", "--processes", "2"
    )

    def producers() -> list[tuple[str, str]]:
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
                rows = conn.execute("SELECT node, uuid FROM oban_producers ORDER BY node")
                return [(str(node), str(uuid)) for node, uuid in rows.fetchall()]
        except sqlite3.OperationalError:
            return []  # not created yet

    await _until(
        lambda: [n for n, _u in producers()] == ["sup-1", "sup-2"],
        supervisor,
        timeout=20,
        message="both nodes registered",
    )
    before = producers()
    client = Oban(dsn=dsn, name="procs_sqlite_kill_client")
    try:
        jobs = await client.enqueue_many(
            [Job(WORKER, args={"log": str(log), "sleep": 3}) for _ in range(2)]
        )
        killed, node = await _kill_a_running_child(supervisor, log, jobs)
        await _until(
            lambda: any(n == node and (n, u) not in before for n, u in producers()),
            supervisor,
            timeout=10,
            message="a new producer row",
        )
        await _assert_rescued_and_run_once(client, supervisor, log, jobs, killed)
    finally:
        await client.stop()
        _instances.pop(client.name, None)

    supervisor.signal(signal.SIGTERM)
    assert await supervisor.exit_code(timeout=10) == 0, supervisor.tail()
    assert "database is locked" not in supervisor.text().lower(), supervisor.tail(200)


# ---------------------------------------------------------------------------------------------
# Bad values
# ---------------------------------------------------------------------------------------------


async def test_bad_process_counts_are_clear_errors(project: Path) -> None:
    dsn = f"sqlite:///{project / 'jobs.db'}"

    async def start(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
        return await run_command(
            *OBAN, "start", "--dsn", dsn, *args, cwd=project, env=subprocess_env(env)
        )

    code, out = await start("--processes", "0", "--dry-run")
    assert code == 2, out
    assert "Invalid value for '--processes': 0 is not in the range x>=1" in out

    code, out = await start("--dry-run", env={"OBAN_PROCESSES": "x"})
    assert code == 2, out
    assert "OBAN_PROCESSES: 'x' is not valid: expected an integer" in out

    (project / "oban.toml").write_text('processes = "2"\n')
    code, out = await start("--dry-run")
    assert code == 2, out
    assert "processes must be a positive integer, got '2'" in out

    (project / "oban.toml").write_text("processes = 2\n")
    code, out = await start("--queues", "default:1", "--dry-run")
    assert code == 0, out
    assert "| queues default:1 | 2 processes" in out
    assert "configuration is valid (dry run)" in out
    assert "started" not in out  # a dry run starts no process

    with pytest.raises(UnknownOptionError, match="processes is an `oban start` setting"):
        Oban(processes=2)  # type: ignore[arg-type]
