"""Oban.create_pool reads the DSN and pool options from kwargs, OBAN_* and oban.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from oban import Job, Oban


async def test_dsn_from_environment(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OBAN_DSN", dsn)
    monkeypatch.setenv("OBAN_POOL_MAX_SIZE", "3")
    pool = await Oban.create_pool()
    try:
        assert pool.max_size == 3
        async with pool.connection() as conn:
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    finally:
        await pool.close()


async def test_dsn_from_toml_and_env_overrides_toml_and_kwargs_override_env(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OBAN_DSN", raising=False)
    (tmp_path / "oban.toml").write_text(f'dsn = "{dsn}"\npool_max_size = 4\npool_min_size = 1\n')
    pool = await Oban.create_pool()
    try:
        assert pool.max_size == 4
    finally:
        await pool.close()

    monkeypatch.setenv("OBAN_POOL_MAX_SIZE", "5")
    pool = await Oban.create_pool()
    try:
        assert pool.max_size == 5
    finally:
        await pool.close()

    pool = await Oban.create_pool(max_size=6)
    try:
        assert pool.max_size == 6
    finally:
        await pool.close()


async def test_no_dsn_anywhere_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OBAN_DSN", raising=False)
    with pytest.raises(ValueError, match="OBAN_DSN"):
        await Oban.create_pool()


async def test_oban_with_a_postgres_dsn_opens_and_closes_its_own_pool(
    dsn: str, prefix: str
) -> None:
    from oban import worker
    from tests.helpers import eventually

    ran: list[int | None] = []

    @worker(queue="own-pool")
    class OwnPool:
        async def process(self, job: Job) -> None:
            ran.append(job.id)

    oban = Oban(dsn=dsn, prefix=prefix, queues={"own-pool": 1}, name="OwnPool")
    async with oban:
        job = await oban.enqueue(OwnPool.new({}))
        await eventually(lambda: job.id in ran)
    assert oban.pool is not None and oban.pool.closed
    # It can start again with a fresh pool.
    async with oban:
        again = await oban.enqueue(OwnPool.new({}))
        await eventually(lambda: again.id in ran)
