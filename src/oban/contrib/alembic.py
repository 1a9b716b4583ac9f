"""Alembic: install oban's schema from a migration, and keep autogenerate away from it.

In ``env.py``, so that ``alembic revision --autogenerate`` neither drops oban's tables nor
reflects them::

    from oban.contrib.alembic import include_name, include_object

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name,
        include_object=include_object,
    )

In a migration (``alembic revision -m "oban"``)::

    from oban.contrib import alembic as oban_alembic

    def upgrade() -> None:
        oban_alembic.install()

    def downgrade() -> None:
        oban_alembic.uninstall()

With another prefix than ``public``, pass ``prefix=`` to both, and use
:func:`include_name_for` and :func:`include_object_for` in ``env.py``. The helpers need
alembic (``pip install 'oban[alembic]'``); importing this module does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from .. import schema
from .._engines import _sql
from .._engines._sync import psycopg_connection, sqlite_connection
from .._engines.sqlite import SQLiteEngine
from .._engines.sqlite import _statements as sqlite_statements

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.sql.schema import SchemaItem

__all__ = [
    "AlembicOp",
    "IncludeName",
    "IncludeObject",
    "include_name",
    "include_name_for",
    "include_object",
    "include_object_for",
    "install",
    "uninstall",
]

#: ``include_object(object, name, type_, reflected, compare_to)`` as Alembic calls it.
IncludeObject = Callable[["SchemaItem", "str | None", str, bool, "SchemaItem | None"], bool]
#: ``include_name(name, type_, parent_names)`` as Alembic calls it.
IncludeName = Callable[["str | None", str, Mapping[Any, "str | None"]], bool]


class AlembicOp(Protocol):
    """What the helpers use of Alembic's ``op``: the ``alembic.op`` module inside a migration,
    or an ``alembic.operations.Operations``."""

    def execute(self, sqltext: str) -> None: ...

    def get_context(self) -> MigrationContext: ...


def _owner(prefix: str) -> Callable[[str | None, str | None], bool]:
    """Whether a table (schema, name) is one of oban's for ``prefix``: on PostgreSQL the tables
    :func:`oban.schema.uninstall_sql` drops, in schema ``prefix`` (or in the connection's
    default schema, which Alembic names ``None``); on SQLite the tables its uninstall drops,
    named ``<prefix>_oban_...`` unless the prefix is ``public``."""
    prefix = _sql.validate_prefix(prefix)
    in_schema = frozenset(schema.dropped_tables(prefix))
    try:
        statements = "\n".join(sqlite_statements("uninstall", prefix))
    except ValueError:  # a prefix SQLite cannot use (sqlite_...) has no SQLite tables
        statements = ""
    named = frozenset(re.findall(r"DROP TABLE IF EXISTS (\w+)", statements))

    def owned(schema_name: str | None, table_name: str | None) -> bool:
        if schema_name is None and table_name in named:
            return True
        return schema_name in (None, prefix) and table_name in in_schema

    return owned


def include_object_for(prefix: str = "public") -> IncludeObject:
    """An ``include_object`` hook for Alembic's ``context.configure`` that leaves out oban's
    tables of ``prefix`` and everything on them (columns, indexes, constraints), so that
    autogenerate proposes neither dropping nor changing them.

    Raises:
        ValueError: ``prefix`` is not a plain SQL identifier.

    >>> from sqlalchemy import Column, Integer, MetaData, Table
    >>> jobs = Table("oban_jobs", MetaData(), Column("id", Integer), schema="oban")
    >>> include_object_for("oban")(jobs, "oban_jobs", "table", True, None)
    False
    >>> include_object(jobs.c.id, "id", "column", True, None)
    True
    """
    owned = _owner(prefix)

    def include(
        obj: SchemaItem,
        name: str | None,
        type_: str,
        reflected: bool,
        compare_to: SchemaItem | None,
    ) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        if table is None:
            return True
        return not owned(getattr(table, "schema", None), getattr(table, "name", None))

    return include


def include_name_for(prefix: str = "public") -> IncludeName:
    """An ``include_name`` hook for Alembic's ``context.configure`` that keeps oban's tables of
    ``prefix`` from being reflected at all (autogenerate then never reads their columns and
    indexes).

    Raises:
        ValueError: ``prefix`` is not a plain SQL identifier.

    >>> include_name("oban_jobs", "table", {"schema_name": None})
    False
    >>> include_name("users", "table", {"schema_name": None})
    True
    """
    owned = _owner(prefix)

    def include(name: str | None, type_: str, parent_names: Mapping[Any, str | None]) -> bool:
        if type_ == "schema":
            return True
        table = name if type_ == "table" else parent_names.get("table_name")
        return not owned(parent_names.get("schema_name"), table)

    return include


#: :func:`include_object_for` the ``public`` prefix (the default schema).
include_object: IncludeObject = include_object_for()
#: :func:`include_name_for` the ``public`` prefix (the default schema).
include_name: IncludeName = include_name_for()


def install(op: AlembicOp | None = None, prefix: str = "public") -> None:
    """Install or upgrade oban's schema in ``prefix``, from a migration's ``upgrade()``, as
    ``oban install`` does.

    PostgreSQL (psycopg, ``postgresql+psycopg://``): runs :func:`oban.schema.install_sql` in
    the migration's transaction. On a table that already has jobs the unique-jobs index is
    then built ``CONCURRENTLY`` in ``op.get_context().autocommit_block()``, which commits
    what ran before it; on a new installation the script builds it, and the migration stays
    one transaction. SQLite (sqlite3, ``sqlite:///``): runs the install statements one by one
    on the migration's connection, and records the schema version on a new file. Offline
    (``alembic upgrade --sql``) the statements are written out, the ``CONCURRENTLY`` one
    outside the transaction.

    Args:
        op: Alembic's operations; by default ``alembic.op``, the migration's own.
        prefix: the schema (PostgreSQL) or table-name prefix (SQLite) oban uses.

    Raises:
        DuplicateUniqueKeysError: jobs already share a unique key, so the unique index cannot
            be built (on PostgreSQL the rest of the schema is installed and committed).
        TypeError: a connection on another driver than psycopg or sqlite3.
        ValueError: ``prefix`` is not a plain SQL identifier, or the database is neither
            PostgreSQL nor SQLite.

    >>> def upgrade() -> None:
    ...     install(prefix="oban")
    """
    ops = _operations(op)
    context = ops.get_context()
    if _dialect(context) == "sqlite":
        _install_sqlite(context, prefix)
        return
    prefix = _sql.validate_prefix(prefix)
    if context.as_sql:
        _emit(context, schema.install_sql(prefix))
        with context.autocommit_block():
            _emit(context, schema.unique_index_sql(prefix))
        return
    conn = psycopg_connection(context.bind)  # refuses another driver before changing anything
    ops.execute(schema.install_sql(prefix))
    if _unique_index_valid(conn, prefix):
        return
    with context.autocommit_block():
        schema.ensure_unique_index_sync(psycopg_connection(context.bind), prefix)


def uninstall(op: AlembicOp | None = None, prefix: str = "public") -> None:
    """Drop oban's tables (every job in them) and other objects from ``prefix``, from a
    migration's ``downgrade()``; the schema itself stays. On PostgreSQL this drops Elixir
    Oban's ``oban_jobs`` and ``oban_peers`` too (see :func:`oban.schema.uninstall_sql`).

    Args:
        op: Alembic's operations; by default ``alembic.op``, the migration's own.
        prefix: the schema (PostgreSQL) or table-name prefix (SQLite) oban uses.

    Raises:
        ValueError: ``prefix`` is not a plain SQL identifier, or the database is neither
            PostgreSQL nor SQLite.

    >>> def downgrade() -> None:
    ...     uninstall(prefix="oban")
    """
    ops = _operations(op)
    context = ops.get_context()
    if _dialect(context) == "sqlite":
        statements: tuple[str, ...] = sqlite_statements("uninstall", prefix)
    else:
        statements = (schema.uninstall_sql(prefix),)
    for statement in statements:
        _execute(ops, context, statement)


def _operations(op: AlembicOp | None) -> AlembicOp:
    if op is not None:
        return op
    from alembic import op as current

    return current


def _dialect(context: MigrationContext) -> str:
    name = context.dialect.name
    if name not in ("postgresql", "sqlite"):
        raise ValueError(f"oban's schema is for PostgreSQL or SQLite, not {name}")
    return name


def _install_sqlite(context: MigrationContext, prefix: str) -> None:
    if context.as_sql:
        for statement in sqlite_statements("install", prefix):
            _emit(context, statement)
        return
    bind = context.bind
    assert bind is not None  # online, Alembic always has a connection
    engine = SQLiteEngine(bind.engine.url.database or "", prefix=prefix)
    engine.install_sync(sqlite_connection(bind))


def _execute(ops: AlembicOp, context: MigrationContext, sql: str) -> None:
    if context.as_sql:
        _emit(context, sql)
    else:
        ops.execute(sql)


def _emit(context: MigrationContext, sql: str) -> None:
    """Write ``sql`` to the offline script as it is: ``op.execute`` would double its ``%``
    signs for the psycopg dialect's parameter style, where nothing will undo that."""
    impl = context.impl
    impl.static_output(sql.strip().removesuffix(";") + impl.command_terminator)


def _unique_index_valid(conn: psycopg.Connection[Any], prefix: str) -> bool:
    cursor = psycopg.RawCursor(conn)
    cursor.execute(_sql.load("postgres", "unique_index_check", prefix), (prefix,))
    row = cursor.fetchone()
    return bool(row and row[0] is True)
