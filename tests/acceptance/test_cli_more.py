"""More of the ``oban`` command: uninstall, choosing cron modules, JSON log lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from oban import Job, Oban, schema
from tests.helpers import eventually, run_command

OBAN = [sys.executable, "-m", "oban"]

CRON_WORKERS = textwrap.dedent(
    """
    from oban import worker

    @worker(queue="default", cron="@hourly")
    class Hourly:
        async def process(self, job):
            return None
    """
)

OTHER_CRON_WORKERS = textwrap.dedent(
    """
    from oban import worker

    @worker(queue="default", cron="*/5 * * * *")
    class Elsewhere:
        async def process(self, job):
            return None
    """
)

WORKERS = textwrap.dedent(
    """
    from oban import worker

    @worker(queue="default")
    class Noop:
        async def process(self, job):
            return None
    """
)


async def run(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, str]:
    return await run_command(*args, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A project with cron workers in ``app.jobs`` and, outside ``app``, in ``other``."""
    package = tmp_path / "app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(CRON_WORKERS)
    (tmp_path / "other.py").write_text(OTHER_CRON_WORKERS)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    env.update(extra)
    return env


async def test_uninstall_without_a_terminal_needs_yes_then_drops_the_tables(
    dsn: str, pool: Any, prefix: str
) -> None:
    assert await schema.version(pool, prefix) == 14
    # stdin is not a terminal (as with `echo n | oban uninstall`): nothing is dropped.
    code, out = await run(*OBAN, "uninstall", "--dsn", dsn, "--prefix", prefix, env=_env())
    assert code != 0, out
    assert "--yes" in out
    assert await schema.version(pool, prefix) == 14

    code, out = await run(*OBAN, "uninstall", "--dsn", dsn, "--prefix", prefix, "--yes", env=_env())
    assert code == 0, out
    assert await schema.version(pool, prefix) is None
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT to_regclass(%s)", (f'"{prefix}".oban_jobs',))
        row = await cur.fetchone()
    assert row is not None and row[0] is None, out


async def test_cron_modules_option_imports_only_the_named_modules(
    dsn: str, prefix: str, app_dir: Path
) -> None:
    code, out = await run(
        *OBAN,
        "start",
        "--dsn",
        dsn,
        "--prefix",
        prefix,
        "--queues",
        "default:1",
        "--cron-modules",
        "app.jobs",
        "--dry-run",
        cwd=app_dir,
        env=_env(),
    )
    assert code == 0, out
    assert "cron @hourly -> app.jobs.Hourly" in out
    # Naming modules replaces discovery: other.py is not imported.
    assert "Elsewhere" not in out


async def test_cron_modules_from_the_environment(dsn: str, prefix: str, app_dir: Path) -> None:
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
        cwd=app_dir,
        env=_env(OBAN_CRON_MODULES="other"),
    )
    assert code == 0, out
    assert "cron */5 * * * * -> other.Elsewhere" in out
    assert "Hourly" not in out


async def test_cron_paths_option_imports_the_modules_under_a_directory(
    dsn: str, prefix: str, app_dir: Path
) -> None:
    code, out = await run(
        *OBAN,
        "start",
        "--dsn",
        dsn,
        "--prefix",
        prefix,
        "--queues",
        "default:1",
        "--cron-paths",
        "app",
        "--dry-run",
        cwd=app_dir,
        env=_env(),
    )
    assert code == 0, out
    assert "cron @hourly -> app.jobs.Hourly" in out
    assert "Elsewhere" not in out


async def test_bad_cron_module_fails_naming_it(dsn: str, prefix: str, app_dir: Path) -> None:
    code, out = await run(
        *OBAN,
        "start",
        "--dsn",
        dsn,
        "--prefix",
        prefix,
        "--queues",
        "default:1",
        "--cron-modules",
        "app.does_not_exist",
        "--dry-run",
        cwd=app_dir,
        env=_env(),
    )
    assert code != 0
    assert "app.does_not_exist" in out


def _json_lines(out: str) -> list[dict[str, Any]]:
    found = []
    for line in out.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            data = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


async def test_start_logs_job_events_as_json_lines(
    dsn: str, pool: Any, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "cli_more_workers.py").write_text(WORKERS)
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
        env=_env(PYTHONPATH=os.pathsep.join(sys.path), OBAN_LOG_ARGS="1"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    client = Oban(pool=pool, prefix=prefix, name=f"clim-{prefix}")
    try:
        job = await client.enqueue(Job("cli_more_workers.Noop", args={"n": 1}))

        async def completed() -> bool:
            assert job.id is not None
            found = await client.get_job(job.id)
            return found is not None and found.state == "completed"

        await eventually(completed, timeout=15, message="job completed")
        proc.send_signal(signal.SIGTERM)
        raw, _ = await asyncio.wait_for(proc.communicate(), 30)
        out = raw.decode()
        assert proc.returncode == 0, out

        assert '"event":"oban.job.stop"' in out, out
        stops = [d for d in _json_lines(out) if d.get("event") == "oban.job.stop"]
        assert any(d.get("id") == job.id for d in stops), out
        stop = next(d for d in stops if d.get("id") == job.id)
        assert stop["worker"] == "cli_more_workers.Noop"
        assert stop["state"] == "completed"
        assert stop["args"] == {"n": 1}
    finally:
        Oban._instances.pop(f"clim-{prefix}", None)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
