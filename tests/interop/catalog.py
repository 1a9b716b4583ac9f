"""A comparable description of the database objects in one schema, read from the catalog."""

from __future__ import annotations

from typing import Any

import psycopg

#: Tables that are not Oban's: Ecto's bookkeeping (any Elixir migration run creates it) and
#: the tests' ledgers. They, and the objects named after them, are left out of a snapshot.
FOREIGN_TABLES = ("schema_migrations", "exec_log", "ins_log")

# One row per object: (kind, name, definition). Names are unqualified (the schema is the one
# asked about), so two databases compare equal when their objects are defined alike.
CATALOG_QUERY = """
SELECT 'relation', c.relname,
       'kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
         || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')
UNION ALL
SELECT 'column', c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || ' not_null=' || a.attnotnull
         || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
         || ' identity=' || a.attidentity::text
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p') AND a.attnum > 0
  AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', c.relname || '.' || con.conname,
       pg_get_constraintdef(con.oid) || ' validated=' || con.convalidated
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
UNION ALL
SELECT 'index', i.relname, regexp_replace(pg_get_indexdef(i.oid), ' ON [^ .]+[.]', ' ON ')
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE n.nspname = %(schema)s
UNION ALL
SELECT 'type', t.typname,
       coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                 FROM pg_enum e WHERE e.enumtypid = t.oid), t.typtype::text)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = %(schema)s AND t.typtype IN ('e', 'd')
UNION ALL
SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       pg_get_function_result(p.oid) || ' ' || md5(p.prosrc)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s
UNION ALL
SELECT 'trigger', c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND NOT t.tgisinternal
"""

Catalog = dict[tuple[str, str], str]


def _foreign(name: str) -> bool:
    return any(
        name == table or name.startswith((f"{table}.", f"{table}_")) for table in FOREIGN_TABLES
    )


async def snapshot(conn: psycopg.AsyncConnection[Any], schema: str = "public") -> Catalog:
    """Every object of ``schema`` but the :data:`FOREIGN_TABLES` -> its definition."""
    cur = await conn.execute(CATALOG_QUERY, {"schema": schema})
    rows = await cur.fetchall()
    return {(kind, name): definition for kind, name, definition in rows if not _foreign(name)}


def difference(before: Catalog, after: Catalog) -> dict[str, list[str]]:
    """What changed from ``before`` to ``after``, for an assertion message."""
    return {
        "added": sorted(f"{k} {n}: {after[k, n]}" for k, n in after.keys() - before.keys()),
        "removed": sorted(f"{k} {n}: {before[k, n]}" for k, n in before.keys() - after.keys()),
        "changed": sorted(
            f"{k} {n}: {before[k, n]!r} -> {after[k, n]!r}"
            for k, n in before.keys() & after.keys()
            if before[k, n] != after[k, n]
        ),
    }
