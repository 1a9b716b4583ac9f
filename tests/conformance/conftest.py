"""Engine-independent tests run against both engines: every test here gets the `engine`
parameter ("postgres" or "sqlite") through the fixtures below and uses only the public API,
plus `backdate`/`set_state` for setting up rows, which are the only engine-specific helpers.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema
from oban.oban import _instances
from tests.helpers import drop_schema, stop_all

ENGINES = ["postgres", "sqlite"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_oban(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Oban]]:
    """Build ``Oban`` instances on one fresh database of the test's engine.

    Whatever fails, and wherever (opening the pool, installing the schema, the test, stopping
    an instance), everything opened so far is released: instances stopped, the schema
    dropped, the pool closed, each step registered on the exit stack before it can fail.
    """
    made: list[Oban] = []
    prefix = f"c_{uuid.uuid4().hex[:12]}"
    async with contextlib.AsyncExitStack() as stack:
        if engine == "postgres":
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                request.getfixturevalue("dsn"), min_size=1, max_size=10, open=False
            )
            stack.push_async_callback(pool.close)
            await pool.open(wait=True, timeout=10)
            stack.push_async_callback(drop_schema, pool, prefix)
            await schema.install(pool, prefix)
            base: dict[str, Any] = {"pool": pool, "prefix": prefix}
        else:
            base = {"dsn": f"sqlite:///{tmp_path / 'jobs.db'}"}
        stack.callback(_instances.clear)
        stack.push_async_callback(stop_all, made)

        def make(**options: Any) -> Oban:
            for key, value in base.items():
                options.setdefault(key, value)
            options.setdefault("shutdown_grace_period", 5.0)
            instance = Oban(**options)
            made.append(instance)
            return instance

        yield make


@pytest.fixture
async def oban(make_oban: Callable[..., Oban]) -> Oban:
    """A client-mode instance named "Oban" on the test's engine."""
    return make_oban()


@pytest.fixture
def sql(engine: str, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Run one SQL statement on the test database: ``await sql(oban, query, params)``.

    Write queries that both engines accept (``%s`` placeholders are converted to ``?`` for
    SQLite; table names without a schema). Returns the rows.
    """

    async def run(instance: Oban, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        engine_obj = await instance._ready()
        if engine == "postgres":
            prefix = instance.prefix
            async with instance.pool.connection() as conn:  # type: ignore[union-attr]
                await conn.execute(f'SET search_path TO "{prefix}"')
                try:
                    cur = await conn.execute(query, params)
                    return await cur.fetchall() if cur.description else []
                finally:
                    await conn.execute("RESET search_path")
        conn = engine_obj._conn  # type: ignore[attr-defined]
        cur = await conn.execute(query.replace("%s", "?"), params)
        rows = await cur.fetchall()
        await cur.close()
        return list(rows)

    return run


@pytest.fixture
def backdate(engine: str, sql: Callable[..., Any]) -> Callable[..., Any]:
    """Move a job timestamp ``seconds`` into the past: ``await backdate(oban, id, field, s)``."""

    async def run(instance: Oban, job_id: int, field: str, seconds: float) -> None:
        assert field in {
            "inserted_at",
            "scheduled_at",
            "attempted_at",
            "completed_at",
            "cancelled_at",
            "discarded_at",
        }
        if engine == "postgres":
            query = (
                f"UPDATE oban_jobs SET {field} = timezone('UTC', now()) "
                f"- make_interval(secs => %s) WHERE id = %s"
            )
        else:
            query = (
                f"UPDATE oban_jobs SET {field} = strftime('%Y-%m-%d %H:%M:%f', 'now', "
                f"'-' || %s || ' seconds') WHERE id = %s"
            )
        await sql(instance, query, (seconds, job_id))

    return run
