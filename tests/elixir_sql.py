"""Statements as an Elixir Oban 2.23 node runs them, for tests that play such a node in SQL.

Written from the facts of Oban's source (``peers/database.ex``: the election, the lease and
the ``{"down": name}`` message; ``engines/basic.ex``: ``stage_jobs``; ``notifiers/postgres.ex``:
how a notification is sent), not from its code. Every function takes an autocommit psycopg
connection whose ``search_path`` is the oban schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool


@contextlib.asynccontextmanager
async def session(pool: AsyncConnectionPool[Any], prefix: str) -> AsyncIterator[Any]:
    """A connection of its own (autocommit, ``search_path`` on the test schema)."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute(f'SET search_path TO "{prefix}"')
        try:
            yield conn
        finally:
            await conn.execute("RESET search_path")


#: Elixir's default peer interval (30 s), in seconds.
PEER_INTERVAL = 30.0

# The peer's upsert: a row of another node is left alone (0 rows: not the leader).
_ELECT = """
INSERT INTO oban_peers AS o0 (name, node, started_at, expires_at)
VALUES (%(name)s, %(node)s, %(now)s, %(expires)s)
ON CONFLICT (name) DO UPDATE SET expires_at = %(expires)s WHERE o0.node = %(node)s
"""

# The stager's statement: no lock taken first, no state checked again at the update.
_STAGE = """
UPDATE oban_jobs AS o0 SET state = 'available'
FROM (SELECT sj0.id AS id, sj0.state AS state
      FROM oban_jobs AS sj0
      WHERE sj0.state IN ('scheduled', 'retryable')
        AND sj0.scheduled_at <= timezone('UTC', now())
      ORDER BY sj0.scheduled_at DESC, sj0.id DESC
      LIMIT %(limit)s) AS s1
WHERE o0.id = s1.id
RETURNING o0.id, o0.queue, s1.state
"""


async def now(conn: AsyncConnection[Any]) -> Any:
    """The current UTC time (Elixir uses its node's clock; a test uses the server's)."""
    cur = await conn.execute("SELECT timezone('UTC', now())")
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def write_peer(
    conn: AsyncConnection[Any], *, name: str, node: str, expires_in: float = PEER_INTERVAL
) -> None:
    """The lease row an Elixir leader holds, expiring ``expires_in`` seconds from now."""
    await conn.execute(
        "INSERT INTO oban_peers (name, node, started_at, expires_at) VALUES "
        "(%s, %s, timezone('UTC', now()), timezone('UTC', now()) + make_interval(secs => %s))",
        (name, node, expires_in),
    )


async def elect(conn: AsyncConnection[Any], *, name: str, node: str) -> bool:
    """One election of an Elixir peer: in one transaction, delete the name's expired rows,
    then insert or extend its lease. Whether ``node`` leads afterwards."""
    at = await now(conn)
    async with conn.transaction():
        await conn.execute("DELETE FROM oban_peers WHERE name = %s AND expires_at < %s", (name, at))
        cur = await conn.execute(
            _ELECT,
            {"name": name, "node": node, "now": at, "expires": await _later(conn, at)},
        )
        return cur.rowcount > 0


async def _later(conn: AsyncConnection[Any], at: Any) -> Any:
    cur = await conn.execute("SELECT %s + make_interval(secs => %s)", (at, PEER_INTERVAL))
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def notify(conn: AsyncConnection[Any], prefix: str, channel: str, message: Any) -> None:
    """``Oban.Notifier.notify``: JSON (compressed only above 512 bytes) sent on
    ``<prefix>.oban_<channel>`` through ``json_array_elements_text``."""
    payloads = orjson.dumps([orjson.dumps(message).decode()]).decode()
    await conn.execute(
        "SELECT pg_notify(%s, payload) FROM json_array_elements_text(%s::json) AS payload",
        (f"{prefix}.oban_{channel}", payloads),
    )


async def resign(conn: AsyncConnection[Any], prefix: str, *, name: str, node: str) -> None:
    """A stopping Elixir leader: deletes its row and sends ``{"down": name}``, together."""
    async with conn.transaction():
        await conn.execute("DELETE FROM oban_peers WHERE name = %s AND node = %s", (name, node))
        await notify(conn, prefix, "leader", {"down": name})


async def stage(conn: AsyncConnection[Any], *, limit: int = 5_000) -> list[tuple[Any, ...]]:
    """The leader's ``stage_jobs`` statement; the (id, queue, old state) of moved rows."""
    cur = await conn.execute(_STAGE, {"limit": limit})
    return await cur.fetchall()
