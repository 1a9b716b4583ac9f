"""Start-up failures on PostgreSQL only: a schema without oban installed, an unreachable server.

Executing jobs (outcomes, retries, snoozes, timeouts, concurrency, pausing, shutdown, acks,
check_queue) is tested on both engines in tests/conformance/test_execution_conformance.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Oban
from oban.errors import DatabaseUnavailableError, SchemaNotInstalledError


async def test_start_without_installed_schema_raises(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    empty = f"exec_empty_{uuid.uuid4().hex[:12]}"
    await sql(f'CREATE SCHEMA "{empty}"')
    try:
        oban = make_oban(prefix=empty, queues={"default": 1})
        with pytest.raises(SchemaNotInstalledError) as info:
            await oban.start()
        assert "oban install" in str(info.value)
        assert oban.check_all_queues() == []
    finally:
        await sql(f'DROP SCHEMA "{empty}" CASCADE')


async def test_start_with_unreachable_database_raises_quickly(
    make_oban: Callable[..., Oban],
) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        "postgresql://postgres@127.0.0.1:1/test", open=False
    )
    await pool.open(wait=False)
    try:
        oban = make_oban(pool=pool, queues={"default": 1})
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError):
            await asyncio.wait_for(oban.start(), timeout=30)
        assert time.monotonic() - started < 15
    finally:
        await pool.close()
