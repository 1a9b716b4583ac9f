"""Fixtures: a real PostgreSQL (OBAN_TEST_DSN), one freshly installed schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema
from oban.oban import _instances

DSN = os.environ.get("OBAN_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def dsn() -> str:
    """The test database; fails (never skips) when it cannot be reached."""
    try:
        with psycopg.connect(DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        pytest.fail(
            f"cannot reach the test PostgreSQL at {DSN!r} ({error}). Start PostgreSQL or "
            "point OBAN_TEST_DSN at a server.",
            pytrace=False,
        )
    return DSN


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=10, open=False)
    await pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def prefix(pool: AsyncConnectionPool[Any]) -> AsyncIterator[str]:
    """A schema of its own for each test, with oban installed in it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    await schema.install(pool, name)
    try:
        yield name
    finally:
        async with pool.connection() as conn:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
async def make_oban(
    pool: AsyncConnectionPool[Any], prefix: str
) -> AsyncIterator[Callable[..., Oban]]:
    """Build ``Oban`` instances on the test schema; all are stopped after the test."""
    made: list[Oban] = []

    def make(**options: Any) -> Oban:
        options.setdefault("pool", pool)
        options.setdefault("prefix", prefix)
        options.setdefault("shutdown_grace_period", 5.0)
        instance = Oban(**options)
        made.append(instance)
        return instance

    try:
        yield make
    finally:
        for instance in reversed(made):
            await instance.stop()
        _instances.clear()


@pytest.fixture
async def oban(make_oban: Callable[..., Oban]) -> Oban:
    """A client-mode instance named "Oban" (enqueue only, no queues)."""
    return make_oban()


@pytest.fixture
async def sql(pool: AsyncConnectionPool[Any], prefix: str) -> Callable[..., Any]:
    """Run SQL against the test schema: ``await sql("SELECT ... FROM oban_jobs", params)``.

    The search_path is set to the test schema, so table names need no prefix.
    """

    async def run(query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        async with pool.connection() as conn:
            await conn.execute(f'SET search_path TO "{prefix}"')
            try:
                cur = await conn.execute(query, params)  # type: ignore[arg-type]
                return await cur.fetchall() if cur.description else []
            finally:
                await conn.execute("RESET search_path")

    return run
