"""What the engines need to insert on a caller's *synchronous* connection (``oban.sync`` and
``Worker.enqueue_sync`` with ``conn=``), with no event loop.

The engines keep one insert logic: the same statements, payloads and row handling as the async
path. The unique path's coroutine (``_unique.insert`` and the engine's statement callbacks) is
reused as it is: each of its awaits reaches a synchronous statement (:func:`awaitable`), so it
never suspends and :func:`drive` runs it to its end in the caller's thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, cast

import psycopg

__all__ = ["awaitable", "drive", "psycopg_connection", "sqlite_connection"]

T = TypeVar("T")
P = ParamSpec("P")

_PSYCOPG_ACCEPTED = (
    "a psycopg Connection/Cursor, or a SQLAlchemy Connection/Session on psycopg "
    "(postgresql+psycopg://...)"
)
_SQLITE_ACCEPTED = (
    "a sqlite3 Connection/Cursor, or a SQLAlchemy Connection/Session on sqlite3 (sqlite:///...)"
)


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end here, without an event loop.

    Every await in it must reach only synchronous work (see :func:`awaitable`).

    Raises:
        RuntimeError: the coroutine suspended (it awaited real asynchronous work): a bug.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast("T", done.value)
    coroutine.close()
    raise RuntimeError("a synchronous insert awaited asynchronous work (a bug in oban)")


def awaitable(function: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
    """``function`` (synchronous) as the async callable code shared with the async path
    expects; the coroutine it returns completes without suspending."""

    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return function(*args, **kwargs)

    return call


def psycopg_connection(conn: object) -> psycopg.Connection[Any]:
    """The psycopg ``Connection`` behind ``conn``: a psycopg ``Connection`` or ``Cursor``, or a
    SQLAlchemy ``Connection``/``Session`` (plain or scoped) on the psycopg driver.

    Raises:
        TypeError: anything else, naming what is accepted (an asynchronous connection: that
            it belongs to ``await oban.enqueue(..., conn=...)``).
    """
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, psycopg.Cursor):
        return conn.connection
    if _is_sqlalchemy(conn):
        driver = _sqlalchemy_driver(conn, _PSYCOPG_ACCEPTED)
        if isinstance(driver, psycopg.Connection):
            return driver
        raise TypeError(
            f"conn uses the {type(driver).__name__} driver; oban needs psycopg "
            "(postgresql+psycopg://...)"
        )
    raise _wrong_type(conn, _PSYCOPG_ACCEPTED)


def sqlite_connection(conn: object) -> sqlite3.Connection:
    """The ``sqlite3.Connection`` behind ``conn``: a ``sqlite3`` ``Connection`` or ``Cursor``,
    or a SQLAlchemy ``Connection``/``Session`` (plain or scoped) on sqlite3.

    Raises:
        TypeError: anything else, naming what is accepted.
    """
    if isinstance(conn, sqlite3.Connection):
        return conn
    if isinstance(conn, sqlite3.Cursor):
        return conn.connection
    if _is_sqlalchemy(conn):
        driver = _sqlalchemy_driver(conn, _SQLITE_ACCEPTED)
        if isinstance(driver, sqlite3.Connection):
            return driver
        raise TypeError(
            f"conn uses the {type(driver).__name__} driver; the SQLite engine needs sqlite3 "
            "(sqlite:///...)"
        )
    raise _wrong_type(conn, _SQLITE_ACCEPTED)


def _is_sqlalchemy(conn: object) -> bool:
    return type(conn).__module__.startswith("sqlalchemy.")


def _sqlalchemy_driver(conn: Any, accepted: str) -> object:
    """The driver's connection inside a SQLAlchemy ``Connection`` or ``Session``.

    A ``Connection`` outside a transaction has one begun, as a statement of its own would
    begin it: otherwise its ``commit()`` would not know of the job (and drop it).
    """
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session, scoped_session

    if isinstance(conn, Session | scoped_session):
        conn = conn.connection()  # the session's transaction, begun if it was not
    if not isinstance(conn, Connection):
        raise _wrong_type(conn, accepted)
    if not conn.in_transaction():
        conn.begin()
    return conn.connection.driver_connection


def _wrong_type(conn: object, accepted: str) -> TypeError:
    kind = f"{type(conn).__module__}.{type(conn).__name__}"
    if isinstance(conn, psycopg.AsyncConnection | psycopg.AsyncCursor) or kind.startswith(
        ("aiosqlite.", "sqlalchemy.ext.asyncio.")
    ):
        return TypeError(
            f"conn is an asynchronous {kind}: with it, use `await oban.enqueue(..., conn=conn)` "
            f"(or `await Worker.enqueue(..., conn=conn)`); the sync API takes {accepted}"
        )
    return TypeError(f"conn must be {accepted}, got {kind}")
