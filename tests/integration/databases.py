"""A fresh database of each engine for a test: the ``database`` fixture (import
``database_fixture`` into a test module to use it), a PostgreSQL schema of its own or a
SQLite file, given by DSN."""

from __future__ import annotations

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
