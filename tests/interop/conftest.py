"""Fixtures for the interop tests: real Elixir Oban nodes (from the offline kit) and Python
nodes on one database of a private PostgreSQL server.

These tests need the Elixir toolchain, so ``make test`` does not run them: ``tests/conftest.py``
leaves this directory out of the default collection and ``make interop`` runs
``pytest tests/interop``. Nothing here skips: a missing kit or Erlang fails every test with a
message that says what is missing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema
from tests.helpers import oban_factory
from tests.interop.elixir import KIT_VARIABLE, Database, Kit, KitError, kit_tarball, prepare_kit
from tests.interop.workers import ledger
from tests.pgserver import PrivateServer

# Read now: the session fixture in tests/conftest.py removes OBAN_* variables before any
# fixture of ours runs.
KIT_SETTING = os.environ.get(KIT_VARIABLE)

#: The execution ledger (each run of a MyApp.Echo job, in either language, adds a row; the
#: Elixir worker's INSERT names these columns) and the insert ledger (each inserted job id).
LEDGER_TABLES = """
CREATE TABLE exec_log (
  id bigserial PRIMARY KEY,
  job_id bigint NOT NULL,
  lang text NOT NULL,
  attempt integer NOT NULL,
  args jsonb,
  meta jsonb,
  queue text,
  at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE ins_log (
  job_id bigint PRIMARY KEY,
  src text NOT NULL,
  at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


@pytest.fixture(scope="session")
def elixir_kit() -> Kit:
    """The kit, unpacked into the cache and compiled (once per kit version; see elixir.py)."""
    try:
        return prepare_kit(kit_tarball(KIT_SETTING))
    except KitError as error:
        problem = str(error)
    pytest.fail(f"the interop tests cannot run Elixir: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PrivateServer]:
    """One private PostgreSQL server for the session; every test gets a database on it."""
    server = PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def make_database(pg_server: PrivateServer) -> Iterator[Callable[[], Database]]:
    """Create new, empty databases for the test (all dropped afterwards, connections and all)."""
    made: list[str] = []

    def make() -> Database:
        name = f"interop_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return Database(name=name, port=pg_server.port)

    try:
        yield make
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True, connect_timeout=10) as conn:
            for name in made:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture
def database(make_database: Callable[[], Database]) -> Database:
    """The test's own new, empty database."""
    return make_database()


@pytest.fixture
async def pool(database: Database) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool on the test's database, with the ledger tables created; Python runs of
    ``MyApp.Echo`` are logged through it."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database.dsn, min_size=1, max_size=10, open=False
    )
    try:
        await pool.open(wait=True, timeout=10)
        async with pool.connection() as conn:
            await conn.execute(LEDGER_TABLES.encode())
        ledger.pool = pool
        yield pool
    finally:
        ledger.pool = None
        await pool.close()


@pytest.fixture
async def make_oban(pool: AsyncConnectionPool[Any]) -> AsyncIterator[Callable[..., Oban]]:
    """Build Python ``Oban`` instances on the test's database; all are stopped afterwards."""
    async with oban_factory(pool=pool) as make:
        yield make


@pytest.fixture
def node_log(tmp_path: Path) -> Callable[[str], Path]:
    """Where an Elixir node's output goes: ``node_log("ex-node")``."""

    def path(name: str) -> Path:
        return tmp_path / f"{name}.log"

    return path


@dataclass(frozen=True)
class Mixed:
    """What a mixed-cluster test works with: the kit, the test's database with the Oban schema
    installed, a pool on it, the Python instance factory and where node output goes."""

    kit: Kit
    database: Database
    pool: AsyncConnectionPool[Any]
    make_oban: Callable[..., Oban]
    node_log: Callable[[str], Path]
    tmp_path: Path

    def parts(
        self,
    ) -> tuple[
        Kit, Database, AsyncConnectionPool[Any], Callable[..., Oban], Callable[[str], Path], Path
    ]:
        return (self.kit, self.database, self.pool, self.make_oban, self.node_log, self.tmp_path)


@pytest.fixture
async def mixed(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
    node_log: Callable[[str], Path],
    tmp_path: Path,
) -> Mixed:
    """A mixed-cluster test's parts, the schema installed (by Python; Elixir's nodes migrate
    it no further)."""
    await schema.install(pool)
    return Mixed(elixir_kit, database, pool, make_oban, node_log, tmp_path)
