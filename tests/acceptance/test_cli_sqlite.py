"""With no configuration at all, the CLI uses the embedded SQLite engine on ./oban.db."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

from tests.helpers import reap

OBAN = [sys.executable, "-m", "oban"]


def _env_without_oban() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}


async def _run(*args: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=_env_without_oban(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await reap(proc)
    return proc.returncode or 0, out.decode()


async def test_install_without_configuration_creates_oban_db(tmp_path: Path) -> None:
    code, out = await _run(*OBAN, "install", cwd=tmp_path)
    assert code == 0, out
    assert "oban.db" in out
    with sqlite3.connect(tmp_path / "oban.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"oban_jobs", "oban_leaders", "oban_producers"} <= tables
    assert journal == "wal"


async def test_start_without_configuration_uses_oban_db(tmp_path: Path) -> None:
    code, out = await _run(*OBAN, "start", "--queues", "default:2", "--dry-run", cwd=tmp_path)
    assert code == 0, out
    assert "oban.db" in out


async def test_start_with_an_unsupported_dsn_is_a_usage_error(tmp_path: Path) -> None:
    code, out = await _run(*OBAN, "start", "--dsn", "mysql://x/y", "--dry-run", cwd=tmp_path)
    assert code != 0
    assert "mysql://x/y" in out
