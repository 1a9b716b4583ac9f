"""The README's promise: setting OBAN_DSN alone moves ``Oban(queues=...)`` to PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oban import Config, Job, Oban, worker
from oban.oban import _instances
from tests.helpers import eventually

RAN: list[int | None] = []


@worker(queue="env-config")
class EnvConfigured:
    async def process(self, job: Job) -> None:
        RAN.append(job.id)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no ./oban.toml, and no ./oban.db left behind
    try:
        yield
    finally:
        _instances.clear()


async def test_oban_dsn_and_oban_prefix_run_jobs_on_postgresql(
    dsn: str, prefix: str, sql: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OBAN_DSN", dsn)
    monkeypatch.setenv("OBAN_PREFIX", prefix)

    async with Oban(queues={"env-config": {"limit": 1, "meta": {"region": "eu"}}}) as oban:
        job = await EnvConfigured.enqueue({})
        await eventually(lambda: job.id in RAN, message="job ran")
        info = oban.check_queue("env-config")
        assert info is not None and info.meta["region"] == "eu"
        rows = await sql("SELECT meta->>'region', meta->>'local_limit' FROM oban_producers")
        assert rows == [("eu", "1")]

    assert oban.sqlite_path is None
    assert [row[0] for row in await sql("SELECT id FROM oban_jobs")] == [job.id]
    assert not (tmp_path / "oban.db").exists()


async def test_a_loaded_config_runs_jobs_through_from_config(
    dsn: str, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "oban.toml").write_text(
        f'dsn = "{dsn}"\nprefix = "{prefix}"\npool_max_size = 2\n[queues]\nenv-config = 1\n'
    )

    async with Oban.from_config(Config.load()) as oban:
        job = await EnvConfigured.enqueue({})
        await eventually(lambda: job.id in RAN, message="job ran")
        assert oban.pool is not None and oban.pool.max_size == 2
