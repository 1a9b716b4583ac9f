"""With no configuration at all, the CLI uses the embedded SQLite engine on ./oban.db."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

from tests.helpers import run_command

OBAN = [sys.executable, "-m", "oban"]


def _env_without_oban() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}


async def _run(*args: str, cwd: Path) -> tuple[int, str]:
    return await run_command(*args, cwd=cwd, env=_env_without_oban())


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
