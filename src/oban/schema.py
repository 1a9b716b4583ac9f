"""Install and remove the oban schema: Elixir Oban's version 14 plus the Python tables.

Use ``oban install`` on the command line, :func:`install` from code, or put
:func:`install_sql` into an Alembic/Django migration.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import AsyncRawCursor
from psycopg_pool import AsyncConnectionPool

from ._engines import _sql

__all__ = [
    "SCHEMA_VERSION",
    "dropped_tables",
    "install",
    "install_sql",
    "uninstall",
    "uninstall_sql",
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
    """Install or upgrade the schema in ``prefix`` in one transaction."""
    await _run_script(pool, install_sql(prefix))


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
