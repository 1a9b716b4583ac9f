"""Several real processes on one SQLite file: two ``python -m oban start`` nodes and a third
process enqueueing while they run.

The nodes' working directory holds the worker module; each execution appends
``"<job id> <pid>"`` to a log file opened with O_APPEND, so every run leaves one line whichever
process made it. The test reads the database with the standard ``sqlite3`` module.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import reap
from tests.processes import Launcher, Node, subprocess_env, until

WORKERS = textwrap.dedent(
    """
    import os

    from oban import worker


    @worker(queue="default")
    class ConfBSqliteAppendWorker:
        def process(self, job):
            fd = os.open(job.args["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{job.id} {os.getpid()}\\n".encode())
            finally:
                os.close(fd)
    """
)

WORKER = "confb_sqlite_workers.ConfBSqliteAppendWorker"

# The third process: ``enqueue.py DSN LOG bulk|probe``; prints the inserted ids as JSON.
ENQUEUER = textwrap.dedent(
    f"""
    import asyncio
    import json
    import sys

    from oban import Job, Oban

    WORKER = {WORKER!r}


    async def main(dsn, log, mode):
        oban = Oban(dsn=dsn, name="confb-enqueuer")
        ids = []
        if mode == "bulk":
            # 1,000 jobs in 20 batches of 50, a little apart, while the nodes run.
            for batch in range(20):
                jobs = await oban.enqueue_many(
                    [Job(WORKER, args={{"log": log, "n": batch * 50 + i}}) for i in range(50)]
                )
                ids.extend(job.id for job in jobs)
                await asyncio.sleep(0.05)
        else:
            # Single jobs, spaced out: each is picked up by polling alone.
            for i in range(3):
                job = await oban.enqueue(Job(WORKER, args={{"log": log, "probe": i}}))
                ids.append(job.id)
                await asyncio.sleep(0.7)
        print(json.dumps(ids))


    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "confb_sqlite_workers.py").write_text(WORKERS)
    (tmp_path / "enqueue.py").write_text(ENQUEUER)
    return tmp_path


@pytest.fixture
async def nodes(project: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await nodes("node-1", dsn)`` starts an ``oban start`` process; all are killed after."""
    launcher = Launcher(project)

    async def start(name: str, dsn: str) -> Node:
        return await launcher.start(name, "--dsn", dsn, "--queues", "default:5", "--node", name)

    try:
        yield start
    finally:
        await launcher.kill_all()


def _query(db: Path, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(query, params).fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
    finally:
        conn.close()


async def _read(db: Path, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return await asyncio.to_thread(_query, db, query, params)


async def _until(check: Any, *nodes: Node, timeout: float = 5.0, message: str) -> Any:
    """``until``, polling every 50 ms."""
    return await until(check, *nodes, timeout=timeout, interval=0.05, message=message)


async def _enqueue(project: Path, dsn: str, log: Path, mode: str) -> list[int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(project / "enqueue.py"),
        dsn,
        str(log),
        mode,
        cwd=project,
        env=subprocess_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await reap(proc)
    assert proc.returncode == 0, err.decode()
    assert "database is locked" not in err.decode().lower(), err.decode()
    ids: list[int] = json.loads(out.decode().strip().splitlines()[-1])
    return ids


def _log_lines(log: Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    return [(int(a), int(b)) for a, b in (line.split() for line in log.read_text().splitlines())]


@pytest.mark.timeout(180)
async def test_two_nodes_and_an_enqueuing_process_share_one_sqlite_file(
    project: Path, nodes: Callable[..., Any]
) -> None:
    db = project / "jobs.db"
    dsn = f"sqlite:///{db}"
    log = project / "runs.log"

    first = await nodes("node-1", dsn)
    second = await nodes("node-2", dsn)

    async def both_up() -> bool:
        rows = await _read(db, "SELECT node FROM oban_producers ORDER BY node")
        return [row[0] for row in rows] == ["node-1", "node-2"]

    await _until(both_up, first, second, timeout=30, message="both nodes registered")

    # 1,000 jobs enqueued by a third process while both nodes run.
    ids = await _enqueue(project, dsn, log, "bulk")
    assert len(ids) == 1000 == len(set(ids))

    async def all_completed() -> bool:
        rows = await _read(db, "SELECT state, count(*) FROM oban_jobs GROUP BY state")
        return dict(rows) == {"completed": 1000}

    await _until(all_completed, first, second, timeout=60, message="all 1,000 jobs completed")

    # Every job ran exactly once, in one of the two node processes.
    lines = _log_lines(log)
    runs = Counter(job_id for job_id, _pid in lines)
    twice = {job_id: n for job_id, n in runs.items() if n > 1}
    assert twice == {}, f"jobs executed more than once: {twice}"
    assert set(runs) == set(ids)
    pids = Counter(pid for _job_id, pid in lines)
    assert set(pids) == {first.pid, second.pid}, f"runs per process: {pids}"

    # Jobs inserted by another process are noticed by polling: started within about 1-2 s.
    probes = await _enqueue(project, dsn, log, "probe")

    async def probes_completed() -> bool:
        marks = ",".join("?" * len(probes))
        rows = await _read(
            db,
            f"SELECT count(*) FROM oban_jobs WHERE state = 'completed' AND id IN ({marks})",
            tuple(probes),
        )
        return rows == [(len(probes),)]

    await _until(probes_completed, first, second, timeout=10, message="probe jobs completed")
    marks = ",".join("?" * len(probes))
    latencies = await _read(
        db,
        "SELECT id, (julianday(attempted_at) - julianday(inserted_at)) * 86400.0 "
        f"FROM oban_jobs WHERE id IN ({marks}) ORDER BY id",
        tuple(probes),
    )
    slow = {job_id: round(delay, 3) for job_id, delay in latencies if delay > 2.0}
    assert slow == {}, f"jobs started more than 2 s after insert: {dict(latencies)}"
    assert Counter(job_id for job_id, _pid in _log_lines(log) if job_id in probes) == Counter(
        {job_id: 1 for job_id in probes}
    )

    # Both nodes stop cleanly on SIGTERM.
    for node in (first, second):
        node.proc.send_signal(signal.SIGTERM)
    for node in (first, second):
        code = await asyncio.wait_for(node.proc.wait(), 30)
        assert code == 0, node.tail()
    for node in (first, second):
        output = node.text()
        assert "database is locked" not in output.lower(), node.tail(200)
        assert "Traceback" not in output, node.tail(200)
    assert await _read(db, "SELECT node FROM oban_producers") == []
