"""One leader per cluster, shared with Elixir nodes (PostgreSQL).

Leadership lives in Elixir's ``oban_peers`` row. An Elixir node is played in SQL
(``tests/elixir_sql.py``): its lease row, its election, its ``{"down": name}`` message. The
crash-restart test runs on a private server (``private_pg``), never the shared one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema
from oban.oban import _instances
from tests import elixir_sql
from tests.helpers import eventually, more_calls, spy
from tests.pgserver import PrivateServer

ELIXIR_NODE = "elixir@host-1"
QUEUES = {"lead_q": 1}
QUIET = 0.5  # "nothing happens" checks wait this long


async def peers(sql: Callable[..., Any]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = await sql(
        "SELECT name, node, started_at, expires_at FROM oban_peers ORDER BY name"
    )
    return rows


async def start(make_oban: Callable[..., Oban], interval: float, **options: Any) -> Oban:
    options.setdefault("node", "py-node-1")
    options.setdefault("queues", QUEUES)
    instance = make_oban(leader={"interval": interval}, **options)
    await instance.start()
    return instance


# ---------------------------------------------------------------------------------------------
# An Elixir leader's row decides
# ---------------------------------------------------------------------------------------------


async def test_a_live_elixir_lease_keeps_our_node_from_leading(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str, sql: Any
) -> None:
    async with elixir_sql.session(pool, prefix) as conn:
        await elixir_sql.write_peer(conn, name="Oban", node=ELIXIR_NODE, expires_in=60)
    [before] = await peers(sql)

    node = make_oban(leader={"interval": 1}, node="py-node-1", queues=QUEUES)
    elections = spy(node, "elect_leader")
    await node.start()
    await more_calls(elections, extra=4)  # two leases' worth of elections

    assert elections and not any(elections)
    assert node.is_leader is False
    assert await peers(sql) == [before]  # neither taken over nor extended


async def test_our_node_takes_the_lead_once_the_elixir_lease_lapses(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str, sql: Any
) -> None:
    async with elixir_sql.session(pool, prefix) as conn:
        await elixir_sql.write_peer(conn, name="Oban", node=ELIXIR_NODE, expires_in=1.0)
    node = await start(make_oban, 1)
    assert node.is_leader is False

    # Elections every 0.5 s: the lapsed lease is deleted and ours inserted.
    await eventually(lambda: node.is_leader, timeout=3.0, message="our node leads")
    [(name, owner, started_at, expires_at)] = await peers(sql)
    assert (name, owner) == ("Oban", "py-node-1")
    assert timedelta(seconds=0.9) <= expires_at - started_at <= timedelta(seconds=1.1)


async def test_our_node_elects_at_once_on_elixirs_down_message_for_its_name(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str, sql: Any
) -> None:
    async with elixir_sql.session(pool, prefix) as conn:
        await elixir_sql.write_peer(conn, name="Oban", node=ELIXIR_NODE, expires_in=60)
        node = make_oban(leader={"interval": 30}, node="py-node-1", queues=QUEUES)
        elections = spy(node, "elect_leader")
        await node.start()
        # The elections at start; the next scheduled one is 15 s away.
        await eventually(lambda: len(elections) == 2, message="the elections at start")
        assert node.is_leader is False

        # Another instance's leader stopping is none of our business.
        await elixir_sql.resign(conn, prefix, name="Oban.Other", node=ELIXIR_NODE)
        await asyncio.sleep(QUIET)
        assert elections == [False, False]

        started = time.monotonic()
        await elixir_sql.resign(conn, prefix, name="Oban", node=ELIXIR_NODE)
        await eventually(lambda: node.is_leader, timeout=1.0, message="our node leads")
        assert time.monotonic() - started < 1.0
        assert elections == [False, False, True]
    assert [(name, owner) for name, owner, *_ in await peers(sql)] == [("Oban", "py-node-1")]


async def test_an_elixir_election_does_not_take_the_lead_from_our_node(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str, sql: Any
) -> None:
    node = await start(make_oban, 30, name="MyApp.Oban")
    assert node.is_leader is True and node._leader is not None
    await node._leader.stop()  # no scheduled election from here on; the lease stays
    # The row as Elixir writes its own: the name as Elixir renders MyApp.Oban, a 30 s lease.
    [row] = await peers(sql)
    name, owner, started_at, expires_at = row
    assert (name, owner) == ("MyApp.Oban", "py-node-1")
    assert expires_at - started_at == timedelta(seconds=30)

    async with elixir_sql.session(pool, prefix) as conn:
        assert await elixir_sql.elect(conn, name="MyApp.Oban", node=ELIXIR_NODE) is False
    assert await peers(sql) == [row]

    await node._leader.tick()  # our next election extends our lease
    assert node.is_leader is True
    [(_, owner, _, extended)] = await peers(sql)
    assert owner == "py-node-1" and extended >= expires_at


async def test_our_leader_resigns_as_elixir_does(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str, sql: Any, dsn: str
) -> None:
    node = await start(make_oban, 30)
    assert node.is_leader is True
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{prefix}.oban_leader"')

        await node.stop()

        notices = listener.notifies(timeout=2.0, stop_after=1)
        payloads = [notice.payload async for notice in notices]
    assert payloads == ['{"down":"Oban"}']  # exactly Elixir's payload for Oban
    assert orjson.loads(payloads[0]) == {"down": "Oban"}
    assert await peers(sql) == []


async def test_an_elixir_node_takes_over_when_our_leader_resigns(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str, sql: Any
) -> None:
    node = await start(make_oban, 30)
    assert node.is_leader is True
    async with elixir_sql.session(pool, prefix) as conn:
        assert await elixir_sql.elect(conn, name="Oban", node=ELIXIR_NODE) is False
        await node.stop()
        assert await elixir_sql.elect(conn, name="Oban", node=ELIXIR_NODE) is True
    assert [(name, owner) for name, owner, *_ in await peers(sql)] == [("Oban", ELIXIR_NODE)]


# ---------------------------------------------------------------------------------------------
# A crash restart of PostgreSQL empties the unlogged tables
# ---------------------------------------------------------------------------------------------

#: Leader and producer rows are back within this many seconds of the restarted database
#: accepting connections.
RECOVERY_LIMIT = 2.0


async def _recovered(dsn: str, prefix: str, node: str, uuids: set[str]) -> bool:
    """Whether ``node`` holds the lease and every producer in ``uuids`` has its row (read on
    a fresh connection: the pool's may be the broken ones)."""
    try:
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=2) as conn:
            await conn.execute(f'SET search_path TO "{prefix}"')
            cur = await conn.execute("SELECT node FROM oban_peers WHERE name = 'Oban'")
            leaders = [row[0] for row in await cur.fetchall()]
            cur = await conn.execute("SELECT uuid::text FROM oban_producers")
            present = {row[0] for row in await cur.fetchall()}
    except psycopg.OperationalError:
        return False
    return leaders == [node] and uuids <= present


async def test_leader_and_producers_are_back_soon_after_a_crash_restart(
    private_pg: PrivateServer,
) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        private_pg.dsn, min_size=2, max_size=10, open=False
    )
    await pool.open(wait=True, timeout=10)
    prefix = "crash_restart"
    node: Oban | None = None
    try:
        await schema.install(pool, prefix)
        # Default intervals: a 30 s lease (elections every 15 s), heartbeats every 15 s.
        node = Oban(
            name="Oban", node="crash-node", pool=pool, prefix=prefix, queues={"a": 1, "b": 1}
        )
        await node.start()
        uuids = {producer.uuid for producer in node._producers.values()}
        assert await _recovered(private_pg.dsn, prefix, "crash-node", uuids)
        async with await psycopg.AsyncConnection.connect(private_pg.dsn, autocommit=True) as c:
            await c.execute(
                f'INSERT INTO "{prefix}".oban_producers (uuid, name, node, queue) '
                "VALUES (%s, 'Oban', 'gone-node', 'a')",
                (str(uuid.uuid4()),),
            )

        await asyncio.to_thread(private_pg.restart, "immediate")
        accepting = time.monotonic()  # restart() returns once the server accepts connections

        await eventually(
            lambda: _recovered(private_pg.dsn, prefix, "crash-node", uuids),
            timeout=30.0,
            interval=0.05,
            message="leader and producer rows back",
        )
        elapsed = time.monotonic() - accepting
        print(f"leader and producers back {elapsed:.2f}s after the restart")
        assert elapsed < RECOVERY_LIMIT, f"back after {elapsed:.2f}s"
        async with await psycopg.AsyncConnection.connect(private_pg.dsn) as conn:
            cur = await conn.execute(
                f"SELECT count(*) FROM \"{prefix}\".oban_producers WHERE node = 'gone-node'"
            )
            assert await cur.fetchone() == (0,), "the restart did not empty the unlogged tables"
        assert node.is_leader is True
    finally:
        try:
            if node is not None:
                await asyncio.wait_for(node.stop(), 30)
        finally:
            _instances.pop("Oban", None)
            await pool.close()


# ---------------------------------------------------------------------------------------------
# A schema without oban_peers
# ---------------------------------------------------------------------------------------------


async def test_without_oban_peers_leases_live_in_oban_leaders(
    make_oban: Callable[..., Oban], sql: Any
) -> None:
    # An oban-py 0.7.0 layout that `oban install` has not upgraded yet: no Elixir node can
    # run on it (Elixir's migrations create oban_peers), so the Python-only table serves.
    await sql("DROP TABLE oban_peers")
    node = await start(make_oban, 30)
    assert node.is_leader is True
    assert await sql("SELECT name, node FROM oban_leaders") == [("Oban", "py-node-1")]

    await node.stop()
    assert await sql("SELECT name, node FROM oban_leaders") == []
