"""A database that cannot be used fails within seconds, says why in the server's words and
shows the DSN with its password masked; a missing schema says to run ``oban install``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban
from oban._engines._dsn import mask_dsn
from oban.errors import DatabaseUnavailableError, SchemaNotInstalledError
from oban.oban import _instances
from tests.pgserver import PrivateServer

#: How long a bad DSN may take to fail (one direct attempt has a 3 s connect timeout).
FAIL_WITHIN = 5.0
PASSWORD = "hunter2"


def variant(
    dsn: str,
    *,
    dbname: str | None = None,
    user: str | None = None,
    port: int | None = None,
    password: str = PASSWORD,
) -> str:
    """``dsn`` with another database, user or port, and ``password`` (the test servers trust
    127.0.0.1, so a password is ignored unless a test asks for it)."""
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user or parts.username}:{password}@{host}:{port or parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{dbname}" if dbname else parts.path))


@pytest.fixture(autouse=True)
def _forget_instances() -> Any:
    yield
    _instances.clear()


async def fails_fast(action: Callable[[], Awaitable[Any]]) -> str:
    """Run ``action``, which must raise DatabaseUnavailableError within FAIL_WITHIN seconds;
    return the message, checked to hold no password."""
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        await action()
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert elapsed < FAIL_WITHIN, f"took {elapsed:.1f}s: {message}"
    assert PASSWORD not in message
    assert ":***@" in message
    return message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_missing_database_fails_at_start_with_the_servers_reason(dsn: str) -> None:
    bad = variant(dsn, dbname="oban_no_such_db")
    oban = Oban(dsn=bad, queues={"default": 1}, name="Nodb")

    message = await fails_fast(oban.start)

    assert 'database "oban_no_such_db" does not exist' in message
    assert mask_dsn(bad) in message


async def test_create_pool_fails_fast_with_the_reason(dsn: str) -> None:
    message = await fails_fast(lambda: Oban.create_pool(variant(dsn, dbname="oban_no_such_db")))

    assert 'database "oban_no_such_db" does not exist' in message
    assert "pool initialization incomplete" not in message


async def test_an_unknown_role_fails_with_the_servers_reason(dsn: str) -> None:
    oban = Oban(dsn=variant(dsn, user="oban_nobody"), name="Norole")

    message = await fails_fast(lambda: oban.enqueue(Job("a.B")))

    assert 'role "oban_nobody" does not exist' in message


async def test_a_refused_connection_fails_fast(dsn: str) -> None:
    oban = Oban(dsn=variant(dsn, port=free_port()), queues={"default": 1}, name="Refused")

    message = await fails_fast(oban.start)

    assert "connection refused" in message.lower()


async def test_a_server_that_never_answers_fails_after_the_connect_timeout(dsn: str) -> None:
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept the connection and never answer

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        oban = Oban(dsn=variant(dsn, port=port), queues={"default": 1}, name="Silent")
        message = await fails_fast(oban.start)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert "timeout" in message


async def test_a_wrong_password_fails_with_the_servers_reason(private_pg: PrivateServer) -> None:
    with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE oban_pw LOGIN PASSWORD 'right-one'")
    hba = private_pg.data_dir / "pg_hba.conf"
    hba.write_text("host all oban_pw 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(private_pg.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    oban = Oban(dsn=variant(private_pg.dsn, user="oban_pw"), queues={"q": 1}, name="Badpw")

    message = await fails_fast(oban.start)

    assert 'password authentication failed for user "oban_pw"' in message


# A missing schema


@pytest.fixture
async def empty_schema(pool: AsyncConnectionPool[Any]) -> AsyncIterator[str]:
    name = f"e_{uuid.uuid4().hex[:12]}"
    try:
        async with pool.connection() as conn:
            await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
    finally:
        async with pool.connection() as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def test_enqueue_without_the_schema_says_to_run_oban_install(
    pool: AsyncConnectionPool[Any], empty_schema: str
) -> None:
    oban = Oban(pool=pool, prefix=empty_schema, name="Noschema")

    with pytest.raises(SchemaNotInstalledError, match="oban install") as info:
        await oban.enqueue(Job("a.B"))
    with pytest.raises(SchemaNotInstalledError, match="oban install"):
        await oban.get_job(1)
    async with pool.connection() as conn, conn.transaction():
        with pytest.raises(SchemaNotInstalledError, match="oban install"):
            await oban.enqueue(Job("a.B"), conn=conn)

    assert f"--prefix {empty_schema}" in str(info.value)


async def test_sqlite_installs_itself_and_a_dropped_schema_says_to_install(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    oban = Oban(dsn=f"sqlite:///{path}", name="Lite")
    try:
        assert (await oban.enqueue(Job("a.B"))).id is not None
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("DROP TABLE oban_jobs")
            conn.commit()
        with pytest.raises(SchemaNotInstalledError, match="oban install"):
            await oban.enqueue(Job("a.B"))
    finally:
        await oban._close_engine()


# What an instance logs, and the pool it owns


async def test_start_logs_the_engine_and_database_with_the_password_masked(
    dsn: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oban")
    oban = Oban(dsn=variant(dsn), prefix=prefix, queues={"default": 1}, name="Logged")

    async with oban:
        pass

    lines = [r.getMessage() for r in caplog.records if r.name == "oban"]
    assert any("uses PostgreSQL" in line and ":***@" in line for line in lines), lines
    assert all(PASSWORD not in line for line in lines)


async def test_an_owned_pool_keeps_its_settings_across_restarts(dsn: str, prefix: str) -> None:
    oban = Oban(dsn=dsn, prefix=prefix, queues={"default": 1}, pool_max_size=3, name="Sized")

    for _ in range(2):
        async with oban:
            assert oban.pool is not None and oban.pool.max_size == 3
            assert not oban.pool.closed
