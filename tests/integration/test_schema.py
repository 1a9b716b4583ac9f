"""The installed schema against Elixir Oban's V14, upgrades, version rules, uninstall."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema, worker
from oban.oban import _instances
from tests.helpers import eventually

# Elixir Oban V14, as described in /work/shared/spec/elixir-schema.md.

V14_ENUM = [
    "available",
    "suspended",
    "scheduled",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
]

TIMESTAMP = "timestamp without time zone"
NOW_UTC = "timezone('UTC'::text, now())"

#: column -> (type, NOT NULL, default as pg_get_expr prints it with the schema on search_path)
V14_COLUMNS: dict[str, tuple[str, bool, str | None]] = {
    "id": ("bigint", True, "nextval('oban_jobs_id_seq'::regclass)"),
    "state": ("oban_job_state", True, "'available'::oban_job_state"),
    "queue": ("text", True, "'default'::text"),
    "worker": ("text", True, None),
    "args": ("jsonb", True, "'{}'::jsonb"),
    "errors": ("jsonb[]", True, "ARRAY[]::jsonb[]"),
    "attempt": ("integer", True, "0"),
    "max_attempts": ("integer", True, "20"),
    "inserted_at": (TIMESTAMP, True, NOW_UTC),
    "scheduled_at": (TIMESTAMP, True, NOW_UTC),
    "attempted_at": (TIMESTAMP, False, None),
    "completed_at": (TIMESTAMP, False, None),
    "discarded_at": (TIMESTAMP, False, None),
    "cancelled_at": (TIMESTAMP, False, None),
    "attempted_by": ("text[]", False, None),
    "priority": ("integer", True, "0"),
    "tags": ("text[]", False, "ARRAY[]::text[]"),
    "meta": ("jsonb", False, "'{}'::jsonb"),
}

#: CHECK constraint -> (definition, validated)
V14_CHECKS: dict[str, tuple[str, bool]] = {
    "worker_length": (
        "CHECK (((char_length(worker) > 0) AND (char_length(worker) < 128)))",
        True,
    ),
    "queue_length": ("CHECK (((char_length(queue) > 0) AND (char_length(queue) < 128)))", True),
    "positive_max_attempts": ("CHECK ((max_attempts > 0))", True),
    "attempt_range": ("CHECK (((attempt >= 0) AND (attempt <= max_attempts)))", True),
    "non_negative_priority": ("CHECK ((priority >= 0)) NOT VALID", False),
}

#: index -> definition, "{s}" standing for the schema
V14_INDEXES = {
    "oban_jobs_pkey": "CREATE UNIQUE INDEX oban_jobs_pkey ON {s}.oban_jobs USING btree (id)",
    "oban_jobs_state_queue_priority_scheduled_at_id_index": (
        "CREATE INDEX oban_jobs_state_queue_priority_scheduled_at_id_index ON {s}.oban_jobs "
        "USING btree (state, queue, priority, scheduled_at, id)"
    ),
    "oban_jobs_args_index": "CREATE INDEX oban_jobs_args_index ON {s}.oban_jobs USING gin (args)",
    "oban_jobs_meta_index": "CREATE INDEX oban_jobs_meta_index ON {s}.oban_jobs USING gin (meta)",
    "oban_jobs_state_cancelled_at_index": (
        "CREATE INDEX oban_jobs_state_cancelled_at_index ON {s}.oban_jobs "
        "USING btree (state, cancelled_at)"
    ),
    "oban_jobs_state_discarded_at_index": (
        "CREATE INDEX oban_jobs_state_discarded_at_index ON {s}.oban_jobs "
        "USING btree (state, discarded_at)"
    ),
}

V14_PEERS = {
    "name": ("text", True, None),
    "node": ("text", True, None),
    "started_at": (TIMESTAMP, True, None),
    "expires_at": (TIMESTAMP, True, None),
}

ERROR_ENTRY = {"attempt": 1, "at": "2026-01-01T00:00:00Z", "error": "boom"}


# Workers for the runtime test on an oban-py 0.7.0 schema.


@worker(queue="legacy")
class SchemaLegacyOk:
    async def process(self, job: Job) -> None:
        return None


@worker(queue="legacy", max_attempts=2)
class SchemaLegacyFail:
    async def process(self, job: Job) -> None:
        raise RuntimeError(f"legacy boom {job.attempt}")


# Fixtures and helpers


def quoted(name: str) -> str:
    """``name`` as PostgreSQL prints it in definitions (quoted only when it must be)."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else f'"{name}"'


def ident(name: str) -> psql.Composable:
    return psql.Identifier(name)


@pytest.fixture
async def new_schema(pool: AsyncConnectionPool[Any]) -> AsyncIterator[Callable[..., str]]:
    """Hand out fresh schema names (nothing created); drop them all after the test."""
    names: list[str] = []

    def make(stem: str = "s") -> str:
        name = f"{stem}_{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name

    try:
        yield make
    finally:
        async with pool.connection() as conn:
            for name in names:
                await conn.execute(psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(name)))


async def run(
    pool: AsyncConnectionPool[Any], query: str | psql.Composable, params: Any = None
) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def in_schema(
    pool: AsyncConnectionPool[Any], name: str, query: str, params: Any = None
) -> list[tuple[Any, ...]]:
    """Run ``query`` with ``name`` alone on the search_path (unqualified names in output)."""
    async with pool.connection() as conn:
        await conn.execute(psql.SQL("SET search_path TO {}").format(ident(name)))
        try:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []
        finally:
            await conn.execute("RESET search_path")


async def enum_labels(pool: AsyncConnectionPool[Any], name: str) -> list[str]:
    rows = await run(
        pool,
        "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
        "JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = %s AND t.typname = 'oban_job_state' ORDER BY e.enumsortorder",
        (name,),
    )
    return [r[0] for r in rows]


async def columns(
    pool: AsyncConnectionPool[Any], name: str, table: str
) -> dict[str, tuple[str, bool, str | None, str]]:
    rows = await in_schema(
        pool,
        name,
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid), a.attidentity "
        "FROM pg_attribute a "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
        (table,),
    )
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


async def constraints(pool: AsyncConnectionPool[Any], name: str, table: str) -> dict[str, Any]:
    rows = await in_schema(
        pool,
        name,
        "SELECT conname, contype::text, pg_get_constraintdef(oid), convalidated "
        "FROM pg_constraint WHERE conrelid = to_regclass(%s)",
        (table,),
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def indexes(pool: AsyncConnectionPool[Any], name: str, table: str) -> dict[str, str]:
    rows = await run(
        pool,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
        (name, table),
    )
    return dict(rows)


async def comment(pool: AsyncConnectionPool[Any], name: str) -> str | None:
    rows = await run(
        pool,
        "SELECT obj_description(to_regclass(format('%%I.oban_jobs', %s::text)), 'pg_class')",
        (name,),
    )
    text: str | None = rows[0][0]
    return text


async def persistence(pool: AsyncConnectionPool[Any], name: str, table: str) -> str | None:
    rows = await run(
        pool,
        "SELECT c.relpersistence::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (name, table),
    )
    return rows[0][0] if rows else None


async def assert_matches_v14(
    pool: AsyncConnectionPool[Any], name: str, *, identity_id: bool = False
) -> None:
    """Everything Elixir Oban V14 defines, exactly, in schema ``name``.

    ``identity_id`` accepts ``id`` as a ``GENERATED BY DEFAULT AS IDENTITY`` column (the
    spec allows it for upgraded schemas) instead of bigserial's nextval default.
    """
    assert await enum_labels(pool, name) == V14_ENUM

    other_enums = await run(
        pool,
        "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = %s AND t.typtype = 'e' AND t.typname <> 'oban_job_state'",
        (name,),
    )
    assert other_enums == []

    assert await persistence(pool, name, "oban_jobs") == "p"
    cols = await columns(pool, name, "oban_jobs")
    assert set(cols) == set(V14_COLUMNS)
    for column, (type_, not_null, default) in V14_COLUMNS.items():
        actual_type, actual_not_null, actual_default, identity = cols[column]
        assert (column, actual_type, actual_not_null) == (column, type_, not_null)
        if column == "id" and identity_id and identity == "d":
            assert actual_default is None
        else:
            assert (column, actual_default, identity) == (column, default, "")
    if identity_id and cols["id"][3] == "d":
        seq = await in_schema(pool, name, "SELECT pg_get_serial_sequence('oban_jobs', 'id')")
        assert seq[0][0] == f"{name}.oban_jobs_id_seq"

    cons = await constraints(pool, name, "oban_jobs")
    checks = {k: (v[1], v[2]) for k, v in cons.items() if v[0] == "c"}
    assert checks == V14_CHECKS
    assert cons["oban_jobs_pkey"][:2] == ("p", "PRIMARY KEY (id)")

    idx = await indexes(pool, name, "oban_jobs")
    for index, definition in V14_INDEXES.items():
        assert idx.get(index) == definition.format(s=quoted(name)), index

    assert await persistence(pool, name, "oban_peers") == "u"
    peers = await columns(pool, name, "oban_peers")
    assert {k: v[:3] for k, v in peers.items()} == V14_PEERS
    assert {v[3] for v in peers.values()} == {""}
    peer_cons = await constraints(pool, name, "oban_peers")
    assert peer_cons == {"oban_peers_pkey": ("p", "PRIMARY KEY (name)", True)}

    function = await run(
        pool,
        "SELECT p.prorettype::regtype::text FROM pg_proc p "
        "WHERE p.oid = to_regprocedure(format('%%I.oban_count_estimate(text, text)', %s::text))",
        (name,),
    )
    assert function == [("integer",)]
    estimate = await run(
        pool,
        psql.SQL("SELECT {}.oban_count_estimate('available', 'default')").format(ident(name)),
    )
    assert isinstance(estimate[0][0], int)

    assert await comment(pool, name) == "14"


async def snapshot(pool: AsyncConnectionPool[Any], name: str) -> dict[str, Any]:
    """Every object in schema ``name`` with its oid and definition."""
    relations = await run(
        pool,
        "SELECT c.relname, c.relkind::text, c.relpersistence::text, c.oid::bigint "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s ORDER BY c.relname",
        (name,),
    )
    cols = {}
    cons = {}
    idx = {}
    for relname, kind, _persistence, _oid in relations:
        if kind == "r":
            cols[relname] = await columns(pool, name, relname)
            cons[relname] = await constraints(pool, name, relname)
            idx[relname] = await indexes(pool, name, relname)
    types = await run(
        pool,
        "SELECT t.typname, t.oid::bigint FROM pg_type t "
        "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %s ORDER BY 1",
        (name,),
    )
    functions = await run(
        pool,
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prosrc, p.oid::bigint "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s ORDER BY 1",
        (name,),
    )
    return {
        "relations": relations,
        "columns": cols,
        "constraints": cons,
        "indexes": idx,
        "types": types,
        "enum": await enum_labels(pool, name),
        "functions": functions,
        "comment": await comment(pool, name),
    }


async def elixir_snapshot(pool: AsyncConnectionPool[Any], name: str) -> dict[str, Any]:
    """Only the objects Elixir Oban owns (its V14 indexes, tables, enum and comment)."""
    idx = await indexes(pool, name, "oban_jobs")
    oids = await run(
        pool,
        "SELECT c.relname, c.oid::bigint FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname IN ('oban_jobs', 'oban_peers') ORDER BY 1",
        (name,),
    )
    return {
        "oids": oids,
        "enum": await enum_labels(pool, name),
        "columns": await columns(pool, name, "oban_jobs"),
        "constraints": await constraints(pool, name, "oban_jobs"),
        "indexes": {k: v for k, v in idx.items() if k in V14_INDEXES},
        "peers": await persistence(pool, name, "oban_peers"),
        "comment": await comment(pool, name),
    }


async def set_comment(pool: AsyncConnectionPool[Any], name: str, value: str) -> None:
    await run(
        pool,
        psql.SQL("COMMENT ON TABLE {}.oban_jobs IS {}").format(ident(name), psql.Literal(value)),
    )


OBAN_PY_070_LAYOUT = """
CREATE SCHEMA {s};

CREATE TYPE {s}.oban_job_state AS ENUM (
  'available', 'scheduled', 'suspended', 'executing',
  'retryable', 'completed', 'discarded', 'cancelled'
);

CREATE TABLE {s}.oban_jobs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  state {s}.oban_job_state NOT NULL DEFAULT 'available',
  queue text NOT NULL DEFAULT 'default',
  worker text NOT NULL,
  attempt smallint NOT NULL DEFAULT 0,
  max_attempts smallint NOT NULL DEFAULT 20,
  priority smallint NOT NULL DEFAULT 0,
  args jsonb NOT NULL DEFAULT '{{}}',
  meta jsonb NOT NULL DEFAULT '{{}}',
  tags text[] NOT NULL DEFAULT '{{}}',
  errors jsonb NOT NULL DEFAULT '[]',
  attempted_by text[] NOT NULL DEFAULT '{{}}',
  inserted_at timestamp NOT NULL DEFAULT timezone('UTC', now()),
  scheduled_at timestamp NOT NULL DEFAULT timezone('UTC', now()),
  attempted_at timestamp,
  cancelled_at timestamp,
  completed_at timestamp,
  discarded_at timestamp,
  CONSTRAINT attempt_range CHECK (attempt BETWEEN 0 AND max_attempts),
  CONSTRAINT queue_length CHECK (char_length(queue) > 0),
  CONSTRAINT worker_length CHECK (char_length(worker) > 0),
  CONSTRAINT positive_max_attempts CHECK (max_attempts > 0),
  CONSTRAINT non_negative_priority CHECK (priority >= 0)
) WITH (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02);

CREATE UNLOGGED TABLE {s}.oban_leaders (
  name text PRIMARY KEY DEFAULT 'oban',
  node text NOT NULL,
  elected_at timestamp NOT NULL,
  expires_at timestamp NOT NULL
);

CREATE UNLOGGED TABLE {s}.oban_producers (
  uuid uuid PRIMARY KEY,
  name text NOT NULL DEFAULT 'oban',
  node text NOT NULL,
  queue text NOT NULL,
  meta jsonb NOT NULL DEFAULT '{{}}',
  started_at timestamp NOT NULL DEFAULT timezone('UTC', now()),
  updated_at timestamp NOT NULL DEFAULT timezone('UTC', now())
);

CREATE INDEX oban_jobs_state_queue_priority_scheduled_at_id_index
  ON {s}.oban_jobs (state, queue, priority, scheduled_at, id) WITH (fillfactor = 90);
CREATE INDEX oban_jobs_staging_index
  ON {s}.oban_jobs (scheduled_at, id) INCLUDE (queue)
  WHERE state IN ('scheduled', 'retryable');
CREATE INDEX oban_jobs_meta_index ON {s}.oban_jobs USING gin (meta);
CREATE INDEX oban_jobs_completed_at_index
  ON {s}.oban_jobs (completed_at) WHERE state = 'completed';
CREATE INDEX oban_jobs_cancelled_at_index
  ON {s}.oban_jobs (cancelled_at) WHERE state = 'cancelled';
CREATE INDEX oban_jobs_discarded_at_index
  ON {s}.oban_jobs (discarded_at) WHERE state = 'discarded';
"""

#: (state, queue, worker, attempt, max_attempts, priority, args, meta, tags, errors)
LEGACY_ROWS = [
    ("available", "default", "app.A", 0, 20, 0, {"n": 1}, {}, ["t1"], []),
    ("retryable", "mail", "app.B", 1, 5, 3, {"n": 2}, {"m": 1}, [], [ERROR_ENTRY]),
    ("suspended", "default", "app.C", 0, 20, 1, {"n": 3}, {}, ["a", "b"], []),
    ("completed", "mail", "app.D", 1, 20, 0, {"n": 4}, {}, [], []),
    ("scheduled", "default", "app.E", 0, 20, 2, {"n": 5}, {}, [], []),
]


async def create_oban_py_070(pool: AsyncConnectionPool[Any], name: str) -> None:
    """The layout oban-py 0.7.0 leaves: no version comment, no oban_peers."""
    async with pool.connection() as conn:
        quoted = psql.Identifier(name).as_string(conn)
        await conn.execute(OBAN_PY_070_LAYOUT.format(s=quoted).encode())


async def insert_legacy_rows(pool: AsyncConnectionPool[Any], name: str) -> list[int]:
    ids = []
    async with pool.connection() as conn:
        for state, queue, worker_, attempt, max_att, prio, args, meta, tags, errors in LEGACY_ROWS:
            cur = await conn.execute(
                psql.SQL(
                    "INSERT INTO {}.oban_jobs (state, queue, worker, attempt, max_attempts, "
                    "priority, args, meta, tags, errors, completed_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s::jsonb, "
                    "CASE WHEN %s = 'completed' THEN timezone('UTC', now()) END) RETURNING id"
                ).format(ident(name)),
                (
                    state,
                    queue,
                    worker_,
                    attempt,
                    max_att,
                    prio,
                    Jsonb(args),
                    Jsonb(meta),
                    tags,
                    Jsonb(errors),
                    state,
                ),
            )
            ids.append((await cur.fetchone())[0])
    return ids


# Fresh install


async def test_fresh_install_matches_elixir_v14(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema()
    await schema.install(pool, name)

    await assert_matches_v14(pool, name)
    assert await schema.version(pool, name) == 14


async def test_fresh_install_in_mixed_case_schema(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema("S_Mixed")
    await schema.install(pool, name)

    await assert_matches_v14(pool, name)


async def test_fresh_install_accepts_rows_elixir_would_write(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema()
    await schema.install(pool, name)

    rows = await in_schema(
        pool,
        name,
        "INSERT INTO oban_jobs (worker, args) VALUES ('Elixir.MyApp.Worker', '{\"a\": 1}') "
        "RETURNING state::text, queue, attempt, max_attempts, priority, errors, tags, meta",
    )
    assert rows == [("available", "default", 0, 20, 0, [], [], {})]


async def test_install_is_idempotent(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema()
    await schema.install(pool, name)
    before = await snapshot(pool, name)

    await schema.install(pool, name)

    assert await snapshot(pool, name) == before
    await assert_matches_v14(pool, name)


async def test_install_sql_runs_as_raw_sql_in_one_transaction(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str], dsn: str
) -> None:
    name = new_schema()
    script = schema.install_sql(name)
    assert isinstance(script, str)

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            async with conn.cursor() as cur:
                await cur.execute(script)

    await assert_matches_v14(pool, name)


async def test_install_sql_rolled_back_leaves_nothing(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str], dsn: str
) -> None:
    name = new_schema()

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.cursor() as cur:
            await cur.execute(schema.install_sql(name))
        await conn.rollback()

    rows = await run(pool, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,))
    assert rows == []


async def test_uninstall_removes_every_object(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema()
    await schema.install(pool, name)

    await schema.uninstall(pool, name)

    leftovers = await run(
        pool,
        "SELECT 'class', c.relname::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "UNION ALL SELECT 'type', t.typname::text FROM pg_type t "
        "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %s "
        "UNION ALL SELECT 'proc', p.proname::text FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s",
        (name, name, name),
    )
    assert leftovers == []
    assert await run(pool, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)) == [(1,)]
    assert await schema.version(pool, name) is None

    # And it can be installed again afterwards.
    await schema.install(pool, name)
    await assert_matches_v14(pool, name)


@pytest.mark.parametrize("bad", ["bad-name", "x; drop", 'a"b', "1abc", "", "a" * 64])
def test_prefix_validation_rejects_non_identifiers(bad: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        schema.install_sql(bad)
    with pytest.raises(ValueError, match="prefix"):
        schema.uninstall_sql(bad)


async def test_install_with_bad_prefix_raises_before_touching_the_database(
    pool: AsyncConnectionPool[Any],
) -> None:
    with pytest.raises(ValueError, match="prefix"):
        await schema.install(pool, "x; drop schema public cascade; --")


# Version rules


async def test_version_13_is_refused_and_nothing_changes(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema()
    await schema.install(pool, name)
    await set_comment(pool, name, "13")
    # Remove one of Elixir's indexes and one Python-only index: neither may come back.
    await run(pool, psql.SQL("DROP INDEX {}.oban_jobs_args_index").format(ident(name)))
    await run(pool, psql.SQL("DROP INDEX {}.oban_jobs_staging_index").format(ident(name)))
    before = await snapshot(pool, name)

    with pytest.raises(psycopg.Error) as info:
        await schema.install(pool, name)

    message = str(info.value)
    assert "Elixir" in message
    assert "migrations" in message
    assert "13" in message
    assert await snapshot(pool, name) == before
    assert await comment(pool, name) == "13"


async def test_unknown_comment_is_refused_and_nothing_changes(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema()
    await schema.install(pool, name)
    await set_comment(pool, name, "my jobs table")
    await run(pool, psql.SQL("DROP INDEX {}.oban_jobs_meta_index").format(ident(name)))
    before = await snapshot(pool, name)

    with pytest.raises(psycopg.Error):
        await schema.install(pool, name)

    assert await snapshot(pool, name) == before


@pytest.mark.parametrize("version", ["15", "∞"])
async def test_newer_version_leaves_elixir_objects_alone(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str], version: str
) -> None:
    name = new_schema()
    await schema.install(pool, name)
    await set_comment(pool, name, version)
    # As if a later Elixir migration had dropped these; we must not bring them back.
    await run(pool, psql.SQL("DROP INDEX {}.oban_jobs_args_index").format(ident(name)))
    await run(pool, psql.SQL("DROP TABLE {}.oban_peers").format(ident(name)))
    await run(
        pool, psql.SQL("ALTER TABLE {}.oban_jobs DROP CONSTRAINT attempt_range").format(ident(name))
    )
    before = await elixir_snapshot(pool, name)

    await schema.install(pool, name)

    after = await elixir_snapshot(pool, name)
    assert after == before
    assert after["comment"] == version
    assert "oban_jobs_args_index" not in after["indexes"]
    assert after["peers"] is None
    assert "attempt_range" not in after["constraints"]
    assert await schema.version(pool, name) == (15 if version == "15" else None)


# Upgrading an oban-py 0.7.0 schema


async def test_upgrade_of_oban_py_070_schema_in_place(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema()
    await create_oban_py_070(pool, name)
    ids = await insert_legacy_rows(pool, name)
    assert await comment(pool, name) is None
    assert await enum_labels(pool, name) != V14_ENUM

    await schema.install(pool, name)

    await assert_matches_v14(pool, name, identity_id=True)
    rows = await in_schema(
        pool,
        name,
        "SELECT id, state::text, queue, worker, attempt, max_attempts, priority, args, meta, "
        "tags, errors, completed_at IS NOT NULL FROM oban_jobs ORDER BY id",
    )
    expected = [
        (
            id_,
            state,
            queue,
            worker_,
            attempt,
            max_att,
            prio,
            args,
            meta,
            tags,
            errors,
            state == "completed",
        )
        for id_, (state, queue, worker_, attempt, max_att, prio, args, meta, tags, errors) in zip(
            ids, LEGACY_ROWS, strict=True
        )
    ]
    assert rows == expected

    # The Python-only tables survive, and the upgraded table still takes new jobs.
    assert await persistence(pool, name, "oban_leaders") == "u"
    assert await persistence(pool, name, "oban_producers") == "u"
    new_id = await in_schema(
        pool, name, "INSERT INTO oban_jobs (worker) VALUES ('app.New') RETURNING id"
    )
    assert new_id[0][0] > max(ids)

    # Running install again on the upgraded schema changes nothing.
    before = await snapshot(pool, name)
    await schema.install(pool, name)
    assert await snapshot(pool, name) == before


async def test_runtime_works_on_unupgraded_oban_py_070_schema(
    pool: AsyncConnectionPool[Any], new_schema: Callable[..., str]
) -> None:
    name = new_schema()
    await create_oban_py_070(pool, name)
    errors_type = await run(
        pool,
        "SELECT data_type FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'oban_jobs' AND column_name = 'errors'",
        (name,),
    )
    assert errors_type == [("jsonb",)]

    async def job_row(job_id: int | None) -> tuple[Any, ...]:
        assert job_id is not None
        rows = await in_schema(
            pool,
            name,
            "SELECT state::text, attempt, errors, completed_at, discarded_at, attempted_by "
            "FROM oban_jobs WHERE id = %s",
            (job_id,),
        )
        return rows[0]

    oban = Oban(
        pool=pool,
        prefix=name,
        name="SchemaLegacyRuntime",
        queues={"legacy": 2},
        stager={"interval": 0.1},
        shutdown_grace_period=5.0,
    )
    try:
        await oban.start()
        ok = await oban.enqueue(SchemaLegacyOk.new({"n": 1}))
        bad = await oban.enqueue(SchemaLegacyFail.new({"n": 2}))

        async def ok_completed() -> bool:
            state: str = (await job_row(ok.id))[0]
            return state == "completed"

        async def bad_retryable() -> bool:
            state: str = (await job_row(bad.id))[0]
            return state == "retryable"

        await eventually(ok_completed, message="succeeding job completed")
        await eventually(bad_retryable, message="failing job retryable")

        _, attempt, errors, completed_at, _, attempted_by = await job_row(ok.id)
        assert attempt == 1
        assert errors == []
        assert isinstance(completed_at, datetime)
        assert attempted_by[0] == oban.node

        _, attempt, errors, _, _, _ = await job_row(bad.id)
        assert attempt == 1
        assert isinstance(errors, list) and len(errors) == 1
        assert errors[0]["attempt"] == 1
        assert "legacy boom 1" in errors[0]["error"]
        at = datetime.fromisoformat(errors[0]["at"].replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - at).total_seconds()) < 60

        # Make the retry due now: the second failure exhausts max_attempts=2.
        await in_schema(
            pool,
            name,
            "UPDATE oban_jobs SET scheduled_at = timezone('UTC', now()) - interval '1 second' "
            "WHERE id = %s",
            (bad.id,),
        )

        async def bad_discarded() -> bool:
            state: str = (await job_row(bad.id))[0]
            return state == "discarded"

        await eventually(bad_discarded, message="failing job discarded after two attempts")
        _, attempt, errors, _, discarded_at, _ = await job_row(bad.id)
        assert attempt == 2
        assert [e["attempt"] for e in errors] == [1, 2]
        assert "legacy boom 1" in errors[0]["error"]
        assert "legacy boom 2" in errors[1]["error"]
        assert isinstance(discarded_at, datetime)
    finally:
        await oban.stop()
        _instances.pop("SchemaLegacyRuntime", None)
