"""A fresh database of each engine for a test: the ``database`` fixture (import
``database_fixture`` into a test module to use it), a PostgreSQL schema of its own or a
SQLite file, given by DSN."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from oban import schema

ENGINES = ["postgres", "sqlite"]


class Database:
    """The test's database: ``dsn`` and ``prefix`` of a fresh PostgreSQL schema (oban
    installed by ``install_sql``, dropped afterwards) or SQLite file."""

    def __init__(self, dsn: str, prefix: str) -> None:
        self.dsn = dsn
        self.prefix = prefix
        self.postgres = dsn.startswith("postgresql://")


@pytest.fixture(name="database", params=ENGINES)
def database_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path / 'jobs.db'}", "public")
        return
    dsn = str(request.getfixturevalue("dsn"))
    prefix = f"d_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute(schema.install_sql(prefix).encode())
        yield Database(dsn, prefix)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE'.encode())


async def set_state_directly(database: Database, job_id: int | None, state: str) -> None:
    """Give job ``job_id`` ``state`` (and, for a finished state, its ``<state>_at`` now) with
    a statement of its own, as another program (or a node that died before telling anyone)
    would: no ack, no notification."""
    assert job_id is not None
    stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "discarded": "discarded_at"}
    column = stamp.get(state)
    if database.postgres:
        also = f", {column} = now()" if column else ""
        async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as conn:
            await conn.execute(
                f"UPDATE {database.prefix}.oban_jobs SET state = %s{also} WHERE id = %s",
                (state, job_id),
            )
        return
    also = f", {column} = datetime('now')" if column else ""
    path = database.dsn.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as lite, lite:
        lite.execute(f"UPDATE oban_jobs SET state = ?{also} WHERE id = ?", (state, job_id))
