"""One schema, two installers: Python's ``oban install`` and Elixir Oban's migrations (v14)
each accept what the other built, leave it as it is, and both languages run jobs on it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema
from tests.interop.catalog import Catalog, difference, snapshot
from tests.interop.elixir import Database, Kit
from tests.interop.support import query, wait_until_final, with_output
from tests.interop.workers import echo

#: How Ecto logs a statement a migration runs (migrate.exs logs at level info).
DDL_LOG = re.compile(r"\[info\] (execute|create|alter|drop|rename|comment)", re.IGNORECASE)


async def catalog(database: Database) -> Catalog:
    async with await psycopg.AsyncConnection.connect(database.dsn) as conn:
        return await snapshot(conn)


async def python_install(database: Database) -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(database.dsn, open=False)
    try:
        await pool.open(wait=True, timeout=10)
        await schema.install(pool)
        assert await schema.version(pool) == 14
    finally:
        await pool.close()


async def elixir_migrate(kit: Kit, database: Database) -> str:
    result = (await kit.run("migrate.exs", database=database, env={"OBAN_VERSION": "14"})).check()
    assert result.lines("after=") == ["after=14"], result.output
    return result.output


def changes(before: Catalog, after: Catalog) -> dict[str, list[str]]:
    """The objects added, removed or changed; empty when both catalogs are alike."""
    return {kind: found for kind, found in difference(before, after).items() if found}


async def test_python_install_then_elixir_migration_is_a_no_op_and_elixir_runs_jobs(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    node_log: Callable[[str], Path],
) -> None:
    await python_install(database)
    installed = await catalog(database)
    assert ("relation", "oban_jobs") in installed

    output = await elixir_migrate(elixir_kit, database)

    assert f"db={database.name} oban=2.23.1 current_version=14 before=14" in output
    # Ecto ran the migration (Python's schema has no schema_migrations), and Oban did nothing.
    assert "== Running 20240101000000 ExApp.Migrations.AddOban.up/0 forward" in output
    statements = [line for line in output.splitlines() if DDL_LOG.search(line)]
    assert statements == [], output
    assert changes(installed, await catalog(database)) == {}

    await elixir_kit.run("insert_py.exs", "ex", "3", "ex-on-py", database=database)
    async with elixir_kit.node("ex:10", database=database, log=node_log("ex-node")) as node:
        with with_output(node.output):
            final = await wait_until_final(
                pool, timeout=60, message="jobs run by the Elixir node on Python's schema"
            )
    # insert_py.exs: 3 "many", one plain, one scheduled, fail (2 attempts), fail_once, record.
    assert sorted(final.values()) == ["completed"] * 7 + ["discarded"]
    runs = await query(pool, "SELECT DISTINCT lang FROM exec_log")
    assert runs == [("ex",)]


async def test_elixir_migration_then_python_install_keeps_elixirs_objects_and_python_runs_jobs(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
    make_database: Callable[[], Database],
) -> None:
    output = await elixir_migrate(elixir_kit, database)
    assert any(DDL_LOG.search(line) for line in output.splitlines()), output  # it did migrate
    migrated = await catalog(database)

    await python_install(database)
    both = await catalog(database)

    # Every object Elixir made is left as it was; Python only adds its own.
    assert set(changes(migrated, both)) <= {"added"}, changes(migrated, both)
    # What Python adds is exactly what it installs beside Elixir's objects on an empty
    # database: either order ends in the same schema.
    reference = make_database()
    await python_install(reference)
    assert changes(await catalog(reference), both) == {}

    oban = await make_oban(queues={"py": 5}, node="py-node").start()
    jobs = await oban.enqueue_many(
        [
            echo({"mode": "ok"}, queue="py"),
            echo({"mode": "fail_once"}, queue="py"),
            echo({"mode": "record"}, queue="py"),
            echo({"mode": "ok", "later": True}, queue="py", schedule_in=1),
        ]
    )
    ids = [job.id for job in jobs if job.id is not None]
    final = await wait_until_final(
        pool, *ids, timeout=30, message="jobs run by the Python node on Elixir's schema"
    )
    assert list(final.values()) == ["completed"] * 4
    runs = await query(pool, "SELECT job_id, lang, attempt FROM exec_log ORDER BY job_id, attempt")
    assert runs == [
        (ids[0], "py", 1),
        (ids[1], "py", 1),
        (ids[1], "py", 2),
        (ids[2], "py", 1),
        (ids[3], "py", 1),
    ]
