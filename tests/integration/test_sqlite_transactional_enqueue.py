"""Issue 13 item 5: a transactional enqueue on SQLite never deadlocks.

The caller's connection may hold the file's write lock (``BEGIN IMMEDIATE`` plus its own
writes) when ``enqueue(conn=...)`` is the instance's first use of the database. Opening and
installing on the instance's own connection would then wait for that lock while the caller
waits for the enqueue: it used to hang for the busy timeout (10 s) and fail with "database is
locked". Every combination below must insert at once, inside the caller's transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from oban import Job, Oban, worker
from oban.oban import _instances
from tests.helpers import eventually

#: Far below the 10 s busy timeout a deadlock would wait for: the insert needs no lock wait.
PROMPT = 3.0

RAN: list[int] = []


@worker(queue="tx_sqlite")
class TxSqliteWorker:
    async def process(self, job: Job) -> None:
        assert job.id is not None
        RAN.append(job.id)


@pytest.fixture
async def instances() -> AsyncIterator[Callable[..., Oban]]:
    made: list[Oban] = []

    def make(path: Path, **options: Any) -> Oban:
        oban = Oban(dsn=f"sqlite:///{path}", name=f"tx-sqlite-{len(made)}", **options)
        made.append(oban)
        return oban

    try:
        yield make
    finally:
        for oban in made:
            await oban.stop()
            _instances.pop(oban.name, None)


async def _install(path: Path) -> None:
    installer = Oban(dsn=f"sqlite:///{path}", name="tx-sqlite-installer")
    try:
        assert await installer.get_job(1) is None  # first use opens and installs
    finally:
        await installer.stop()
        _instances.pop(installer.name, None)


def _job_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM oban_jobs").fetchone()[0])
        except sqlite3.OperationalError as error:
            assert "no such table" in str(error)
            return -1


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "fresh-file"])
@pytest.mark.parametrize("journal", ["wal", "delete"])
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_aiosqlite_enqueue_as_first_use_inside_a_write_transaction(
    tmp_path: Path,
    instances: Callable[..., Oban],
    installed: bool,
    journal: str,
    outcome: str,
) -> None:
    path = tmp_path / "jobs.db"
    if installed:
        await _install(path)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA journal_mode = {journal}")
        await conn.execute("BEGIN IMMEDIATE")  # the caller holds the write lock...
        await conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
        await conn.execute("INSERT INTO orders DEFAULT VALUES")  # ...and has written
        oban = instances(path)

        job = await asyncio.wait_for(oban.enqueue(TxSqliteWorker.new({}), conn=conn), PROMPT)

        assert job.id is not None and job.state == "available"
        await conn.execute(outcome.upper())
    finally:
        await conn.close()

    if outcome == "commit":
        assert _job_count(path) == 1
        found = await oban.get_job(job.id)
        assert found is not None and found.worker == job.worker
    else:
        # Rolled back with the caller: no job (and on a fresh file, no tables either)...
        assert _job_count(path) == (0 if installed else -1)
        # ...and the instance installs what it needs on its next use of its own.
        assert await oban.get_job(job.id) is None
        assert _job_count(path) == 0


async def test_sqlite3_enqueue_as_first_use_inside_a_write_transaction_then_runs(
    tmp_path: Path, instances: Callable[..., Oban]
) -> None:
    path = tmp_path / "jobs.db"
    await _install(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        client = instances(path)
        job = await asyncio.wait_for(client.enqueue(TxSqliteWorker.new({}), conn=conn), PROMPT)
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert job.id is not None

    runner = instances(path, queues={"tx_sqlite": 1})
    await runner.start()

    async def completed() -> bool:
        found = await runner.get_job(job.id)  # type: ignore[arg-type]
        return found is not None and found.state == "completed"

    await eventually(completed, message="the committed job ran")
    assert RAN.count(job.id) == 1
