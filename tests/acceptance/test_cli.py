"""The ``oban`` command as users run it: real subprocesses against the test database."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from oban._supervisor import SIGNAL_COPY_WINDOW
from tests.helpers import eventually, run_command

OBAN = [sys.executable, "-m", "oban"]

WORKERS = textwrap.dedent(
    """
    import time
    from pathlib import Path

    from oban import worker

    @worker(queue="default")
    class Touch:
        def process(self, job):
            time.sleep(job.args.get("sleep", 0))
            Path(job.args["path"]).write_text("ran")
    """
)


async def run(*args: str, cwd: Path | None = None, timeout: float = 30) -> tuple[int, str]:
    return await run_command(*args, cwd=cwd, timeout=timeout)


@pytest.fixture
async def fresh_prefix(pool: AsyncConnectionPool[Any]) -> AsyncIterator[str]:
    name = f"cli_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        async with pool.connection() as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def test_version_and_module_entry_point() -> None:
    code, out = await run(*OBAN, "--version")
    assert code == 0
    assert "version" in out


async def test_install_is_idempotent_and_writes_version(
    dsn: str, pool: AsyncConnectionPool[Any], fresh_prefix: str
) -> None:
    for _ in range(2):
        code, out = await run(*OBAN, "install", "--dsn", dsn, "--prefix", fresh_prefix)
        assert code == 0, out
    assert await schema.version(pool, fresh_prefix) == 14


async def test_install_rejects_a_bad_prefix(dsn: str) -> None:
    code, out = await run(*OBAN, "install", "--dsn", dsn, "--prefix", "x; drop table y")
    assert code != 0
    assert "prefix" in out


async def test_start_without_schema_says_to_install(dsn: str, fresh_prefix: str) -> None:
    code, out = await run(
        *OBAN, "start", "--dsn", dsn, "--prefix", fresh_prefix, "--queues", "default:2"
    )
    assert code != 0
    assert "oban install" in out


async def test_start_rejects_bad_queues(dsn: str) -> None:
    code, out = await run(*OBAN, "start", "--dsn", dsn, "--queues", "default:ten")
    assert code != 0
    assert "default:ten" in out


async def test_start_runs_jobs_and_stops_gracefully_on_sigterm(
    dsn: str, pool: AsyncConnectionPool[Any], prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "cli_workers.py").write_text(WORKERS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = await asyncio.create_subprocess_exec(
        *OBAN,
        "start",
        "--dsn",
        dsn,
        "--prefix",
        prefix,
        "--queues",
        "default:2",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    client = Oban(pool=pool, prefix=prefix, name=f"cli-{prefix}")
    try:
        quick = await client.enqueue(
            Job("cli_workers.Touch", args={"path": str(tmp_path / "quick")})
        )
        await eventually(lambda: (tmp_path / "quick").exists(), timeout=15, message="quick job ran")

        slow = await client.enqueue(
            Job("cli_workers.Touch", args={"path": str(tmp_path / "slow"), "sleep": 1.5})
        )
        slow_id = slow.id
        assert quick.id is not None and slow_id is not None

        async def executing() -> bool:
            job = await client.get_job(slow_id)
            return job is not None and job.state == "executing"

        await eventually(executing, timeout=15, message="slow job started")
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()

        # The running job was allowed to finish and its ack was written before exit.
        assert (tmp_path / "slow").read_text() == "ran"
        for job_id in (quick.id, slow_id):
            job = await client.get_job(job_id)
            assert job is not None and job.state == "completed", job
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


CRON_WORKERS = textwrap.dedent(
    """
    from oban import worker

    @worker(queue="default", cron="@hourly")
    class Hourly:
        async def process(self, job):
            return None
    """
)


async def test_start_discovers_cron_workers_in_the_working_directory(
    dsn: str, prefix: str, tmp_path: Path
) -> None:
    package = tmp_path / "app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(CRON_WORKERS)
    hidden = tmp_path / ".venv" / "lib"
    hidden.mkdir(parents=True)
    (hidden / "ignored.py").write_text(CRON_WORKERS.replace("Hourly", "Ignored"))
    code, out = await run(
        *OBAN,
        "start",
        "--dsn",
        dsn,
        "--prefix",
        prefix,
        "--queues",
        "default:1",
        "--dry-run",
        cwd=tmp_path,
    )
    assert code == 0, out
    assert "cron @hourly -> app.jobs.Hourly" in out
    assert "Ignored" not in out


async def test_second_interrupt_forces_exit(
    dsn: str, pool: AsyncConnectionPool[Any], prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "cli_workers.py").write_text(WORKERS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = await asyncio.create_subprocess_exec(
        *OBAN,
        "start",
        "--dsn",
        dsn,
        "--prefix",
        prefix,
        "--queues",
        "default:1",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    client = Oban(pool=pool, prefix=prefix, name=f"int-{prefix}")
    try:
        slow = await client.enqueue(
            Job("cli_workers.Touch", args={"path": str(tmp_path / "slow"), "sleep": 30})
        )
        slow_id = slow.id
        assert slow_id is not None

        async def executing() -> bool:
            job = await client.get_job(slow_id)
            return job is not None and job.state == "executing"

        await eventually(executing, timeout=15, message="slow job started")
        proc.send_signal(signal.SIGINT)
        # Past the copy window: a repeat sooner is a copy of the first signal, not a second.
        await asyncio.sleep(SIGNAL_COPY_WINDOW + 0.5)
        assert proc.returncode is None  # the first interrupt waits for the running job
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 1, out.decode()
        assert not (tmp_path / "slow").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
