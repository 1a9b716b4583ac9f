"""The unique-jobs index on PostgreSQL (issue 14, item 2): a new installation builds it in
its install transaction; an installation whose table already has rows gets it from
``oban install`` with CREATE INDEX CONCURRENTLY, after a check for jobs that already share a
key; an index of that name made by someone else (Oban Pro) is kept; an unfinished one (a
concurrent build that failed) is rebuilt; a unique insert without the index is an error that
says how to build it, never an insert that silently is not unique."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from oban.errors import DuplicateUniqueKeysError, SchemaNotInstalledError

Sql = Callable[..., Any]


def _unique(key: int) -> Job:
    return Job("app.UniqueInstall", args={"key": key}, unique=True)


async def _index(sql: Sql) -> tuple[str, bool] | None:
    rows = await sql(
        "SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index AS i "
        "WHERE i.indexrelid = to_regclass('oban_jobs_unique_index')"
    )
    return (rows[0][0], rows[0][1]) if rows else None


async def test_a_new_installation_has_the_index(sql: Sql) -> None:
    found = await _index(sql)
    assert found is not None
    definition, valid = found
    assert valid
    assert "UNIQUE" in definition and "uniq_key" in definition and "uniq_bmp" in definition


async def test_install_builds_the_index_concurrently_on_a_table_with_rows(
    pool: AsyncConnectionPool[Any], prefix: str, sql: Sql, make_oban: Callable[..., Oban]
) -> None:
    await sql("DROP INDEX oban_jobs_unique_index")
    oban = make_oban()
    plain = await oban.enqueue(Job("app.Plain"))
    with pytest.raises(SchemaNotInstalledError, match=r"oban_jobs_unique_index.*oban install"):
        await oban.enqueue(_unique(1))
    assert [row[0] for row in await sql("SELECT id FROM oban_jobs")] == [plain.id]

    await schema.install(pool, prefix)

    found = await _index(sql)
    assert found is not None and found[1]
    other = make_oban(name="after_install")
    first = await other.enqueue(_unique(1))
    second = await other.enqueue(_unique(1))
    assert not first.conflict and second.conflict and second.id == first.id


async def test_install_refuses_to_build_the_index_over_duplicates_and_names_them(
    pool: AsyncConnectionPool[Any], prefix: str, sql: Sql, make_oban: Callable[..., Oban]
) -> None:
    oban = make_oban()
    first = await oban.enqueue(_unique(7))
    await sql("DROP INDEX oban_jobs_unique_index")
    # A copy holding the same key, as a writer without the index could have left it.
    await sql(
        "INSERT INTO oban_jobs (state, queue, worker, args, meta) "
        "SELECT state, queue, worker, args, meta FROM oban_jobs WHERE id = %s",
        (first.id,),
    )

    with pytest.raises(DuplicateUniqueKeysError) as raised:
        await schema.install(pool, prefix)
    message = str(raised.value)
    assert first.meta["uniq_key"] in message and str(first.id) in message
    assert "oban install" in message
    assert await _index(sql) is None
    # The rest of the schema is in place: plain inserts work.
    assert (await oban.enqueue(Job("app.Plain"))).id is not None

    # Resolved (the copy cancelled: outside its key's states? group all holds in every state,
    # so retry_job's way is used: an empty uniq_bmp), the index builds.
    await sql(
        "UPDATE oban_jobs SET meta = meta || '{\"uniq_bmp\": []}' WHERE id > %s AND worker = %s",
        (first.id, "app.UniqueInstall"),
    )
    await schema.install(pool, prefix)
    found = await _index(sql)
    assert found is not None and found[1]


async def test_an_index_of_that_name_made_by_someone_else_is_kept(
    pool: AsyncConnectionPool[Any], prefix: str, sql: Sql
) -> None:
    await sql("DROP INDEX oban_jobs_unique_index")
    await sql(
        "CREATE UNIQUE INDEX oban_jobs_unique_index ON oban_jobs ((meta->>'uniq_key')) "
        "WHERE meta ? 'uniq_key' AND state <> 'completed'"
    )
    before = await _index(sql)

    await schema.install(pool, prefix)

    assert await _index(sql) == before


async def test_an_unfinished_index_is_rebuilt(
    pool: AsyncConnectionPool[Any],
    prefix: str,
    sql: Sql,
    make_oban: Callable[..., Oban],
    dsn: str,
) -> None:
    first = await make_oban().enqueue(_unique(3))
    await sql("DROP INDEX oban_jobs_unique_index")
    copy = await sql(
        "INSERT INTO oban_jobs (state, queue, worker, args, meta) "
        "SELECT state, queue, worker, args, meta FROM oban_jobs WHERE id = %s RETURNING id",
        (first.id,),
    )
    # A concurrent build that fails (here, on the duplicate) leaves an invalid index behind.
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute(schema.unique_index_sql(prefix))
    found = await _index(sql)
    assert found is not None and not found[1]
    await sql("DELETE FROM oban_jobs WHERE id = %s", (copy[0][0],))

    await schema.install(pool, prefix)

    found = await _index(sql)
    assert found is not None and found[1]


def test_unique_index_sql_builds_concurrently() -> None:
    text = schema.unique_index_sql("my_app")
    assert text.strip().startswith("-- ")
    assert "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS oban_jobs_unique_index" in text
    assert '"my_app".oban_jobs' in text
