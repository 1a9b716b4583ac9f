"""The schema in Django migrations: what ``oban install`` does, on the migration's own
connection (``schema_editor.connection``), for the database oban uses."""

from __future__ import annotations

import sqlite3
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ... import schema

__all__ = ["install", "uninstall", "unique_index"]


def _target(schema_editor: Any) -> tuple[Any, str, str] | None:
    """The driver connection and prefix when this migration runs on oban's database (the
    alias of ``OBAN_DATABASE_ALIAS``), else ``None``: other databases get nothing."""
    from . import _driver_connection
    from .conf import database_alias, load_config

    connection = schema_editor.connection
    if connection.alias != database_alias():
        return None
    if connection.vendor not in ("postgresql", "sqlite"):
        raise ImproperlyConfigured(
            f"oban's migrations run on PostgreSQL or SQLite, not {connection.vendor}"
        )
    connection.ensure_connection()
    return (
        _driver_connection(connection),
        load_config().prefix,
        str(connection.settings_dict["NAME"]),
    )


def install(apps: Any, schema_editor: Any) -> None:
    """Install or upgrade the schema (``oban install``'s script), in the migration's
    transaction."""
    target = _target(schema_editor)
    if target is None:
        return
    raw, prefix, name = target
    if isinstance(raw, sqlite3.Connection):
        _sqlite_engine(prefix, name).install_sync(raw)
    else:
        with raw.cursor() as cur:
            # Many statements in one: the simple query protocol, as `oban install` runs it.
            cur.execute(schema.install_sql(prefix).encode(), prepare=False)


def unique_index(apps: Any, schema_editor: Any) -> None:
    """On PostgreSQL, build the unique-jobs index without blocking writes when the table
    already had rows (this migration runs outside a transaction); SQLite's install built it."""
    target = _target(schema_editor)
    if target is None:
        return
    raw, prefix, _name = target
    if not isinstance(raw, sqlite3.Connection):
        schema.ensure_unique_index_sync(raw, prefix)


def uninstall(apps: Any, schema_editor: Any) -> None:
    """Drop every oban object (``oban uninstall``), Elixir Oban's tables included."""
    target = _target(schema_editor)
    if target is None:
        return
    raw, prefix, name = target
    if isinstance(raw, sqlite3.Connection):
        _sqlite_engine(prefix, name).uninstall_sync(raw)
    else:
        with raw.cursor() as cur:
            cur.execute(schema.uninstall_sql(prefix).encode(), prepare=False)


def _sqlite_engine(prefix: str, path: str) -> Any:
    from ..._engines.sqlite import SQLiteEngine

    return SQLiteEngine(path, prefix=prefix)  # never opened: only its statements are used
