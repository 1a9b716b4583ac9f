"""``oban`` resolves its configuration as documented and fails with errors that say what to
do: --queues / OBAN_QUEUES replace oban.toml's queues, queue option typos are rejected, a dry
run connects and checks the schema, a bad DSN fails fast with the server's reason."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from tests.helpers import run_command

OBAN = [sys.executable, "-m", "oban"]
PASSWORD = "hunter2"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    env.update(extra)
    return env


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    return await run_command(*OBAN, *args, cwd=cwd, env=env or _env())


def with_password(dsn: str, path: str | None = None) -> str:
    """``dsn`` with a password (ignored by the test server, which trusts 127.0.0.1)."""
    scheme, rest = dsn.split("://", 1)
    userinfo, hosts = rest.split("@", 1) if "@" in rest else ("postgres", rest)
    if path is not None:
        hosts = hosts.split("/", 1)[0] + path
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{PASSWORD}@{hosts}"


QUEUES_TOML = "[queues]\nalpha = 3\nbeta = { limit = 2, paused = true }\n"


async def test_queues_flag_replaces_the_files_queues(tmp_path: Path) -> None:
    (tmp_path / "oban.toml").write_text(QUEUES_TOML)

    code, out = await run("start", "--queues", "x:1", "--dry-run", cwd=tmp_path)

    assert code == 0, out
    assert "| queues x:1\n" in out


async def test_oban_queues_replaces_the_files_queues(tmp_path: Path) -> None:
    (tmp_path / "oban.toml").write_text(QUEUES_TOML)

    code, out = await run("start", "--dry-run", cwd=tmp_path, env=_env(OBAN_QUEUES="y:4"))

    assert code == 0, out
    assert "| queues y:4\n" in out


async def test_the_files_queues_run_without_the_flag(tmp_path: Path) -> None:
    (tmp_path / "oban.toml").write_text(QUEUES_TOML)

    code, out = await run("start", "--dry-run", cwd=tmp_path)

    assert code == 0, out
    assert "| queues alpha:3, beta:2\n" in out


async def test_a_queue_option_typo_in_oban_toml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "oban.toml").write_text("[queues]\ndefault = { limt = 5 }\n")

    code, out = await run("start", "--dry-run", cwd=tmp_path)

    assert code != 0
    assert "unknown option 'limt', did you mean 'limit'?" in out
    assert "debounce_interval, limit, meta, paused" in out


async def test_start_without_queues_warns(tmp_path: Path) -> None:
    code, out = await run("start", "--dry-run", cwd=tmp_path)

    assert code == 0, out
    assert "WARNING" in out and "no queues configured" in out


async def test_dry_run_with_a_bad_database_fails_fast_with_the_reason(
    dsn: str, tmp_path: Path
) -> None:
    bad = with_password(dsn, "/oban_no_such_db")
    started = time.monotonic()

    code, out = await run("start", "--dsn", bad, "--queues", "q:1", "--dry-run", cwd=tmp_path)

    assert time.monotonic() - started < 10  # a Python start-up plus at most one 3 s attempt
    assert code != 0
    assert 'database "oban_no_such_db" does not exist' in out
    assert "configuration is valid" not in out
    assert PASSWORD not in out
    assert ":***@" in out


async def test_dry_run_without_the_schema_says_to_install(dsn: str, tmp_path: Path) -> None:
    code, out = await run(
        "start", "--dsn", dsn, "--prefix", "oban_never_installed", "--dry-run", cwd=tmp_path
    )

    assert code != 0
    assert "oban install" in out
    assert "configuration is valid" not in out


async def test_dry_run_with_the_schema_connects_and_passes(
    dsn: str, prefix: str, tmp_path: Path
) -> None:
    code, out = await run(
        "start", "--dsn", with_password(dsn), "--prefix", prefix, "--dry-run", cwd=tmp_path
    )

    assert code == 0, out
    assert "the oban schema is installed" in out
    assert "configuration is valid (dry run)" in out
    assert PASSWORD not in out


async def test_install_shows_the_database_with_the_password_masked(
    dsn: str, prefix: str, tmp_path: Path
) -> None:
    code, out = await run("install", "--dsn", with_password(dsn), "--prefix", prefix, cwd=tmp_path)

    assert code == 0, out
    assert ":***@" in out
    assert PASSWORD not in out


async def test_version_names_the_package(tmp_path: Path) -> None:
    code, out = await run("version", cwd=tmp_path)

    assert code == 0, out
    assert re.fullmatch(r"oban \d+\.\d+\.\d+\S*\n", out), out
