"""Install and remove the oban schema: Elixir Oban's version 14 plus the Python tables.

Use ``oban install`` on the command line, :func:`install` from code, or put
:func:`install_sql` into an Alembic/Django migration.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import AsyncRawCursor
from psycopg_pool import AsyncConnectionPool

from ._engines import _sql
from .errors import DuplicateUniqueKeysError

__all__ = [
    "SCHEMA_VERSION",
    "dropped_tables",
    "ensure_unique_index_sync",
    "install",
    "install_sql",
    "uninstall",
    "uninstall_sql",
    "unique_index_sql",
    "version",
]

#: The Elixir Oban migration version the installed schema matches.
SCHEMA_VERSION = 14


def install_sql(prefix: str = "public") -> str:
    """The SQL that installs (or upgrades) the schema in ``prefix``; run it in one transaction.

    Idempotent. An oban-py 0.7.0 schema is upgraded in place; a schema Elixir Oban already
    migrated to version 14 or later is left alone.

    Raises:
        ValueError: ``prefix`` is not a plain SQL identifier.

    >>> "oban_jobs" in install_sql()
    True
    """
    return _sql.load("postgres", "install", _sql.validate_prefix(prefix))


def unique_index_sql(prefix: str = "public") -> str:
    """The statement that builds the unique-jobs index (docs/unique.md) without blocking
    writes: ``CREATE UNIQUE INDEX CONCURRENTLY``, so run it outside a transaction (in Alembic,
    inside ``op.get_context().autocommit_block()``). :func:`install` runs it for you on a table
    that already has rows; :func:`install_sql` builds the index itself on an empty table."""
    return _sql.load("postgres", "unique_index", _sql.validate_prefix(prefix))


def uninstall_sql(prefix: str = "public") -> str:
    """The SQL that drops every oban object from ``prefix`` (the schema itself stays): the
    tables of :func:`dropped_tables`, among them Elixir Oban's ``oban_jobs`` and ``oban_peers``
    (its leader election), so Elixir Oban nodes and Oban Web using ``prefix`` stop working;
    and the ``oban_job_state`` type and ``oban_count_estimate`` function."""
    return _sql.load("postgres", "uninstall", _sql.validate_prefix(prefix))


def dropped_tables(prefix: str = "public") -> list[str]:
    """The tables :func:`uninstall` drops, in order.

    >>> dropped_tables()
    ['oban_jobs', 'oban_peers', 'oban_leaders', 'oban_producers']
    """
    return re.findall(r"DROP TABLE IF EXISTS \"[^\"]+\"\.(\w+)", uninstall_sql(prefix))


async def _run_script(pool: AsyncConnectionPool[Any], script: str) -> None:
    async with pool.connection() as conn:
        async with conn.transaction():
            # A script of many statements needs the simple query protocol.
            await conn.cursor().execute(script.encode(), prepare=False)


async def install(pool: AsyncConnectionPool[Any], prefix: str = "public") -> None:
    """Install or upgrade the schema in ``prefix`` in one transaction, then, on a table that
    already had rows, build the unique-jobs index without blocking writes.

    Raises:
        DuplicateUniqueKeysError: jobs already share a unique key, so the index cannot be
            built (the message names them); the rest of the schema is installed.
    """
    prefix = _sql.validate_prefix(prefix)
    await _run_script(pool, install_sql(prefix))
    await _ensure_unique_index(pool, prefix)


async def _ensure_unique_index(pool: AsyncConnectionPool[Any], prefix: str) -> None:
    async with pool.connection() as conn:
        autocommit = conn.autocommit
        if not autocommit:
            await conn.commit()
            await conn.set_autocommit(True)
        try:
            cur = AsyncRawCursor(conn)

            async def execute(query: str, params: tuple[Any, ...] = ()) -> list[Any]:
                await cur.execute(query, params)
                return await cur.fetchall() if cur.description is not None else []

            await _unique_index_steps(execute, prefix)
        finally:
            if not autocommit:
                await conn.set_autocommit(False)


def ensure_unique_index_sync(conn: psycopg.Connection[Any], prefix: str = "public") -> None:
    """What :func:`install` does after its script, on a synchronous psycopg connection in
    autocommit mode (a Django or Alembic migration that runs outside a transaction): build the
    unique-jobs index ``CONCURRENTLY`` unless it exists.

    Raises:
        DuplicateUniqueKeysError: as :func:`install`.
        ValueError: ``conn`` is inside a transaction (``CONCURRENTLY`` cannot run there).
    """
    from ._engines._sync import awaitable, drive

    if not conn.autocommit:
        raise ValueError("ensure_unique_index_sync needs a connection in autocommit mode")
    cur = psycopg.RawCursor(conn)

    def execute(query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        cur.execute(query, params)
        return cur.fetchall() if cur.description is not None else []

    drive(_unique_index_steps(awaitable(execute), _sql.validate_prefix(prefix)))


async def _unique_index_steps(
    execute: Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]], prefix: str
) -> None:
    """Build ``oban_jobs_unique_index`` without blocking writes unless a valid one exists;
    ``execute`` runs one statement in autocommit mode and returns its rows."""
    rows = await execute(_sql.load("postgres", "unique_index_check", prefix), (prefix,))
    valid = rows[0][0] if rows else None
    if valid is True:
        return  # ours, or one made by Oban Pro: kept as it is
    if valid is False:  # an earlier concurrent build failed half way
        await execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{prefix}".oban_jobs_unique_index', ())
    duplicates = await execute(_sql.load("postgres", "unique_duplicates", prefix), ())
    if duplicates:
        held = "; ".join(
            f"key {key} held by jobs {', '.join(map(str, ids))}" for key, _count, ids in duplicates
        )
        raise DuplicateUniqueKeysError(
            f"cannot build oban_jobs_unique_index in schema {prefix!r}: jobs share a "
            f"unique key ({held}). Cancel or delete the extra jobs, or empty their "
            "meta.uniq_bmp, then run `oban install` again"
        )
    await execute(unique_index_sql(prefix), ())


async def uninstall(pool: AsyncConnectionPool[Any], prefix: str = "public") -> None:
    """Drop every oban object from ``prefix``, Elixir Oban's ``oban_jobs`` and ``oban_peers``
    included (see :func:`uninstall_sql`)."""
    await _run_script(pool, uninstall_sql(prefix))


async def version(pool: AsyncConnectionPool[Any], prefix: str = "public") -> int | None:
    """The migration version recorded on ``oban_jobs`` (``None`` when not installed or
    unversioned)."""
    query = _sql.load("postgres", "schema_version", _sql.validate_prefix(prefix))
    async with pool.connection() as conn:
        cur = AsyncRawCursor(conn)
        await cur.execute(query, (prefix,))
        row = await cur.fetchone()
    comment = row[0] if row else None
    if comment is None:
        return None
    return int(comment) if comment.isdigit() else None
