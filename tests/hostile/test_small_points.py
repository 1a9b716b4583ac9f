"""The smaller points of issue 16 (item 7): identifiers, job ids, the SQLite file, uninstall.

* A prefix is a whole identifier: ``"name\\n"`` is refused (``re.match`` with ``$`` let it
  through), and an SQLite prefix cannot name SQLite's reserved ``sqlite_`` tables.
* Job ids are integers: ``get_job(1.5)`` no longer returns job 2 (PostgreSQL rounds),
  ``get_job(True)`` no longer returns job 1, ids beyond 64 bits are refused alike on both
  engines.
* A new SQLite database file is created ``0o600``; a symlink at its path is refused.
* ``oban uninstall`` says that it drops Elixir Oban's ``oban_peers`` too.
"""

from __future__ import annotations

import os
import stat
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from oban._engines import _sql
from oban._engines.sqlite import SQLiteEngine
from oban.errors import DatabaseUnavailableError
from tests.helpers import oban_factory, run_command

OBAN = [sys.executable, "-m", "oban"]


# Prefixes


@pytest.mark.parametrize("prefix", ["name\n", "public\n", "a\nb", "", "1abc", "a-b", "a" * 64])
def test_validate_prefix_refuses_anything_but_a_whole_identifier(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix must be a SQL identifier"):
        _sql.validate_prefix(prefix)


def test_a_trailing_newline_reaches_neither_engine_nor_the_schema_sql(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        schema.install_sql("name\n")
    with pytest.raises(ValueError):
        _sql.load("postgres", "get_jobs", "name\n")
    with pytest.raises(ValueError):
        SQLiteEngine(tmp_path / "x.db", prefix="name\n")


@pytest.mark.parametrize("prefix", ["sqlite", "SQLite", "sqlite_x", "SQLITE_"])
def test_an_sqlite_prefix_cannot_name_reserved_tables(prefix: str, tmp_path: Path) -> None:
    # "<prefix>_oban_jobs" would start with "sqlite_", which SQLite reserves.
    with pytest.raises(ValueError, match="sqlite_"):
        SQLiteEngine(tmp_path / "x.db", prefix=prefix)
    # PostgreSQL has no such rule: a schema named sqlite is fine.
    assert "oban_jobs" in schema.install_sql(prefix)


def test_valid_prefixes_still_pass(tmp_path: Path) -> None:
    for prefix in ("public", "_x", "tenant_1", "A" * 63, "sqlitex"):
        assert _sql.validate_prefix(prefix) == prefix
    assert SQLiteEngine(tmp_path / "x.db", prefix="sqlitex").table_prefix == "sqlitex_"


# Job ids


@pytest.fixture(params=["postgres", "sqlite"])
async def make(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Oban]]:
    if request.param == "sqlite":
        async with oban_factory(dsn=f"sqlite:///{tmp_path / 'jobs.db'}") as factory:
            yield factory
        return
    # An async fixture cannot request the async pool/prefix fixtures: a schema of its own.
    dsn = request.getfixturevalue("dsn")
    prefix = f"hs_{uuid.uuid4().hex[:12]}"
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, open=False)
    await pool.open(wait=True, timeout=10)
    try:
        await schema.install(pool, prefix)
        async with oban_factory(pool=pool, prefix=prefix) as factory:
            yield factory
    finally:
        async with pool.connection() as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')
        await pool.close()


async def test_get_job_refuses_ids_that_are_not_integers(make: Callable[..., Oban]) -> None:
    oban = make()
    first = await oban.enqueue(Job("app.W"))
    second = await oban.enqueue(Job("app.W"))
    assert first.id is not None and second.id == first.id + 1

    for bad in (first.id + 0.5, True, False, str(first.id), None, b"1"):
        with pytest.raises(TypeError, match="integer id"):
            await oban.get_job(bad)  # type: ignore[arg-type]
    found = await oban.get_job(first.id)
    assert found is not None and found.id == first.id
    assert (await oban.get_job(first)) is not None


async def test_ids_beyond_64_bits_are_refused_alike(make: Callable[..., Oban]) -> None:
    oban = make()
    await oban.enqueue(Job("app.W"))
    for bad in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(ValueError, match="64-bit"):
            await oban.get_job(bad)
        with pytest.raises(ValueError, match="64-bit"):
            await oban.cancel_many_jobs([bad])
        with pytest.raises(ValueError, match="64-bit"):
            await oban.delete_job(bad)
    # A negative id or 0 fits: there is just no such job.
    assert await oban.get_job(-1) is None


async def test_management_calls_refuse_a_bare_id_or_string(make: Callable[..., Oban]) -> None:
    oban = make()
    job = await oban.enqueue(Job("app.W"))
    assert job.id is not None
    for bad in (job.id, str(job.id), b"1"):
        with pytest.raises(TypeError, match="iterable of Jobs or integer ids"):
            await oban.cancel_many_jobs(bad)  # type: ignore[arg-type]
    for bad_id in (1.5, True):
        with pytest.raises(TypeError, match="integer id"):
            await oban.retry_many_jobs([bad_id])  # type: ignore[list-item]


# The SQLite file


async def _open(path: Path) -> None:
    engine = SQLiteEngine(path)
    await engine.open()
    try:
        await engine.install()
    finally:
        await engine.close()


async def test_a_new_database_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "oban.db"
    old = os.umask(0o022)
    engine = SQLiteEngine(path)
    try:
        await engine.open()
        await engine.install()
        # While open (the last close removes them), the WAL files: SQLite gives them the
        # database file's mode.
        for name in ("oban.db", "oban.db-wal", "oban.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        os.umask(old)
        await engine.close()


async def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch()
    path.chmod(0o640)
    await _open(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("dangling", [False, True])
async def test_a_symlink_at_the_database_path_is_refused(tmp_path: Path, dangling: bool) -> None:
    target = tmp_path / "elsewhere.db"
    if not dangling:
        target.write_bytes(b"")
    link = tmp_path / "oban.db"
    link.symlink_to(target)

    with pytest.raises(DatabaseUnavailableError, match="symbolic link"):
        await _open(link)
    assert dangling is not target.exists()  # nothing was created through the link
    if not dangling:
        assert target.read_bytes() == b""


async def test_oban_start_refuses_a_symlinked_database(tmp_path: Path) -> None:
    (tmp_path / "real.db").write_bytes(b"")
    (tmp_path / "oban.db").symlink_to(tmp_path / "real.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    code, out = await run_command(
        *OBAN, "start", "--queues", "default:1", cwd=tmp_path, env=env, timeout=30
    )
    assert code != 0, out
    assert "symbolic link" in out, out
    assert (tmp_path / "real.db").read_bytes() == b""


# uninstall


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}


async def test_uninstall_says_it_drops_oban_peers(dsn: str, pool: Any, prefix: str) -> None:
    code, out = await run_command(*OBAN, "uninstall", "--help", env=_env())
    assert code == 0
    assert "oban_peers" in " ".join(out.split()), out

    # Without a terminal and without --yes: refused, and the refusal names what would go.
    code, out = await run_command(*OBAN, "uninstall", "--dsn", dsn, "--prefix", prefix, env=_env())
    assert code != 0
    assert "oban_peers" in out, out
    assert await schema.version(pool, prefix) == 14

    code, out = await run_command(
        *OBAN, "uninstall", "--dsn", dsn, "--prefix", prefix, "--yes", env=_env()
    )
    assert code == 0, out
    assert "oban_peers" in out and "Elixir" in out, out
    assert await schema.version(pool, prefix) is None


async def test_sqlite_uninstall_names_its_tables(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    await _open(db)
    code, out = await run_command(
        *OBAN, "uninstall", "--dsn", f"sqlite:///{db}", "--yes", env=_env()
    )
    assert code == 0, out
    assert "oban_jobs" in out and "oban_signals" in out, out
    assert "oban_peers" not in out, out
