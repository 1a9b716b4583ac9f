"""The embedded SQLite engine (aiosqlite: one connection per engine, WAL mode).

Statements are loaded from ``queries/sqlite``. What differs from PostgreSQL:

* Tables: SQLite has no schemas, so the prefix names tables: ``oban_jobs`` for the default
  ``"public"``, ``<prefix>_oban_jobs`` (and ``<prefix>_oban_leaders``, ...) otherwise.
* Timestamps are UTC text ``YYYY-MM-DD HH:MM:SS.SSS`` (millisecond precision, taken from the
  database clock inside SQL), so text order is time order; JSON columns are text.
* Concurrency: every operation is one statement (or one ``BEGIN IMMEDIATE`` transaction). A
  writing statement holds SQLite's database-wide write lock for its whole run, so a claim
  can never hand one job to two connections or processes. A busy database is waited for
  (``busy_timeout``) and retried with a short backoff, so "database is locked" does not
  escape under contention.
* Signals: SQLite has no LISTEN/NOTIFY. :meth:`SQLiteEngine.notify` and the wake-ups after
  inserts, staging, cron inserts and retries are delivered in-process only, through
  :attr:`SQLiteEngine.local_notify`; other processes on the same file notice new jobs by
  polling. Signals (queue control, cancel of running jobs, leader changes) also go to the
  file's ``oban_signals`` table, which the nodes of other processes read about once a second
  (``oban._signal_poller``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from os import PathLike
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite
import orjson

from .. import _unique
from .._query import (
    JobFilter,
    JobStats,
    StatsSample,
    job_stats_from_samples,
    json_contains,
    like_pattern,
)
from .._wire import decode_payload
from ..errors import DatabaseUnavailableError, DuplicateUniqueKeysError, SchemaNotInstalledError
from ..job import Job, JobState
from . import _payloads, _sql, _sync
from .base import CANCELLED_WHILE_EXECUTING, Ack, ProducerRow, sweep_page

if TYPE_CHECKING:
    from .base import Engine

__all__ = ["SCHEMA_VERSION", "SQLiteEngine", "format_timestamp", "parse_timestamp"]

_ENGINE = "sqlite"
T = TypeVar("T")

#: Recorded in ``PRAGMA user_version`` by :meth:`SQLiteEngine.install` on a fresh file.
SCHEMA_VERSION = 1

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_BACKOFF_START = 0.002
_BACKOFF_MAX = 0.05

LocalNotify = Callable[[str, dict[str, Any]], None]


def format_timestamp(value: datetime) -> str:
    """``value`` as stored: UTC text ``YYYY-MM-DD HH:MM:SS.SSS`` (naive values are UTC).

    Microseconds are truncated to milliseconds, the precision of SQLite's clock, so a
    timestamp read from the database formats back to exactly the stored text.
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}"
    )


def parse_timestamp(value: str | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (``None`` stays ``None``)."""
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _json_contains(doc: Any, want: Any) -> int:
    """``oban_json_contains(column, filter)`` for SQL: 1 when the column's JSON contains the
    filter's; 0 for a column that is not JSON (a hostile row fails nothing)."""
    try:
        return int(json_contains(orjson.loads(doc), orjson.loads(want)))
    except (orjson.JSONDecodeError, TypeError, RecursionError):
        return 0


def _icontains(text: Any, needle: str) -> int:
    """``oban_icontains(column, needle)`` for SQL: 1 when the column's text, casefolded,
    holds ``needle`` (already casefolded); bytes that are not UTF-8 are read as best they can."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return int(isinstance(text, str) and needle in text.casefold())


def _ms(listed: str | None) -> list[float]:
    """Seconds from a comma-separated list of milliseconds (``group_concat``)."""
    return [int(value) / 1000 for value in listed.split(",")] if listed else []


def _name(value: Any) -> str:
    """A name read as a BLOB, as text (bytes that are not UTF-8 replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _holder(row: Sequence[Any]) -> tuple[Any, ...]:
    """(id, state, queue, inserted_at, scheduled_at) with the timestamps parsed."""
    id_, state, queue, inserted_at, scheduled_at = row
    return (id_, state, queue, parse_timestamp(inserted_at), parse_timestamp(scheduled_at))


def _timestamp_or_none(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


# Offsets given to SQL stay within about 317 years, so SQLite's date arithmetic stays inside
# years 0000-9999 (it yields NULL beyond).
_seconds = _payloads.clamp_seconds

#: The notification channels that reach other processes through the ``oban_signals`` table.
CROSS_PROCESS_CHANNELS = frozenset({"signal", "leader"})

_origin: tuple[int, str] | None = None


def process_origin() -> str:
    """This process's mark on the signals it writes (computed again after a fork)."""
    global _origin
    pid = os.getpid()
    if _origin is None or _origin[0] != pid:
        _origin = (pid, f"{socket.gethostname()}.{pid}.{uuid.uuid4().hex[:8]}")
    return _origin[1]


def _json_or_none(value: str | bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def _text(value: str | bytes) -> str:
    # Job queries read text columns as BLOBs (see get_jobs.sql): a value that is not UTF-8
    # fails its own row here, not the whole statement in the driver.
    return value.decode() if isinstance(value, bytes) else value


def _timestamp(value: str | bytes | None) -> datetime | None:
    """:func:`parse_timestamp` of a value read as text or as a BLOB."""
    if value is None:
        return None
    text = value.decode() if type(value) is bytes else value
    return datetime.fromisoformat(text).replace(tzinfo=UTC)  # type: ignore[arg-type]


def _row_to_job(row: Sequence[Any]) -> Job:
    """A job from a row of a job query; an :class:`~._payloads.UnreadableJob` when a column
    cannot be read."""
    return _payloads.row_to_job(row, array=_json_or_none, timestamp=_timestamp, text=_text)


def _claim_order(row: Sequence[Any]) -> tuple[int, bytes, int]:
    """A claimed row's place (priority, scheduled_at, id), whatever types its columns hold."""
    priority = row[5] if type(row[5]) is int else 0
    scheduled_at = row[13] if type(row[13]) is bytes else str(row[13]).encode()
    return priority, scheduled_at, row[0]


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    message = str(error).lower()
    return "locked" in message or "busy" in message


def _table_prefix(prefix: str) -> str:
    return "" if prefix == "public" else f"{prefix}_"


@functools.cache
def _load(name: str, prefix: str) -> str:
    # _sql.load validates the prefix; only the table-name prefix is substituted here.
    return _sql.load(_ENGINE, name, prefix).replace("{table_prefix}", _table_prefix(prefix))


@functools.cache
def _statements(name: str, prefix: str) -> tuple[str, ...]:
    """The statements of a multi-statement file, split where SQLite says one is complete."""
    statements: list[str] = []
    buffer = ""
    for line in _load(name, prefix).splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if any(line.strip() and not line.lstrip().startswith("--") for line in buffer.splitlines()):
        raise ValueError(f"queries/sqlite/{name}.sql ends with an incomplete statement")
    return tuple(statements)


def _daemonize(conn: aiosqlite.Connection) -> None:
    """Let the interpreter exit even if the connection is never closed.

    aiosqlite runs each connection on its own non-daemon thread; an Oban instance used only
    to enqueue (never stopped) would otherwise keep the process alive at exit.
    """
    thread = conn if isinstance(conn, threading.Thread) else getattr(conn, "_thread", None)
    if isinstance(thread, threading.Thread) and not thread.is_alive():
        thread.daemon = True


#: The mode a new database file is created with: its owner's alone (SQLite creates the
#: ``-wal``, ``-shm`` and ``-journal`` files with the database file's mode). An existing
#: file keeps its mode.
NEW_FILE_MODE = 0o600


def _prepare_file(path: str) -> None:
    """Create the database file at ``path`` with :data:`NEW_FILE_MODE` if there is none, and
    refuse a symbolic link there (dangling or not): whoever can plant one would choose which
    file the jobs are written to (or read from).

    Raises:
        DatabaseUnavailableError: ``path`` is a symbolic link, or the file cannot be created.
    """
    if path in ("", ":memory:"):  # SQLite's temporary and in-memory databases
        return
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        # O_EXCL never follows a symlink: one at path (even dangling) is "file exists".
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), NEW_FILE_MODE)
    except FileExistsError:
        pass
    except OSError as error:
        raise DatabaseUnavailableError(
            f"cannot create the SQLite database {path!r}: {error.strerror or error}"
        ) from error
    else:
        os.close(fd)
        return
    if os.path.islink(path):
        raise DatabaseUnavailableError(
            f"refusing to open the SQLite database {path!r}: it is a symbolic link (to "
            f"{os.readlink(path)!r}); give the path of the file itself"
        )


class SQLiteEngine:
    """All SQL for SQLite, on one aiosqlite connection to the database file at ``path``.

    The connection is opened by :meth:`open` (or by the first operation) in autocommit mode,
    with ``journal_mode=WAL``, ``synchronous=NORMAL``, ``busy_timeout`` and
    ``foreign_keys=ON``. Operations of one engine are serialised (aiosqlite runs them on one
    thread, and an ``asyncio.Lock`` keeps multi-statement transactions whole); several
    engines and processes may share the file.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        prefix: str = "public",
        busy_timeout: float = 10.0,
    ) -> None:
        self.path = str(path)
        self.prefix = _sql.validate_prefix(prefix, _ENGINE)
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float):
            raise TypeError(f"busy_timeout must be a number of seconds, got {busy_timeout!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must not be negative, got {busy_timeout!r}")
        self.busy_timeout = float(busy_timeout)
        #: Table names are ``<table_prefix>oban_jobs`` etc.
        self.table_prefix = _table_prefix(prefix)
        #: Called as ``local_notify(channel, message)`` for in-process notifications: set by
        #: the Oban facade (other processes read signals from ``oban_signals``).
        self.local_notify: LocalNotify | None = None
        #: Told, per queue, how many unique jobs staging discarded for a key another job holds.
        self.on_unique_conflicts: Callable[[dict[str, int]], None] | None = None
        #: Whether oban_jobs_unique_index was seen (checked at the first unique insert).
        self._unique_index = False
        self._conn: aiosqlite.Connection | None = None
        # id -> meta text as fetched, for merging acks' meta in Python (see _merge_meta)
        self._fetched_meta: dict[int, str] = {}
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"SQLiteEngine({self.path!r}, prefix={self.prefix!r})"

    # Connection

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    @property
    def is_open(self) -> bool:
        """Whether the connection is open."""
        return self._conn is not None

    async def open(self) -> None:
        """Open the connection (no-op when open). A new database file is created readable
        and writable by its owner only (``0o600``); a symbolic link at ``path`` is refused.

        Raises:
            DatabaseUnavailableError: the file cannot be opened as an SQLite database, or
                ``path`` is a symbolic link.
        """
        async with self._get_lock():
            await self._open_locked()

    async def _open_locked(self) -> aiosqlite.Connection:
        if self._conn is not None:
            return self._conn
        _prepare_file(self.path)
        pending = aiosqlite.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
        )
        _daemonize(pending)
        try:
            conn = await pending
        except sqlite3.Error as error:
            raise DatabaseUnavailableError(
                f"cannot open the SQLite database {self.path!r}: {error}"
            ) from error
        try:
            for pragma in (
                f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}",
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = NORMAL",
                "PRAGMA foreign_keys = ON",
            ):
                await self._retry(functools.partial(conn.execute_fetchall, pragma))
        except sqlite3.Error as error:
            await conn.close()
            raise DatabaseUnavailableError(
                f"cannot use the SQLite database {self.path!r}: {error}"
            ) from error
        # list_jobs's args/meta/tags filters: PostgreSQL's jsonb @>, row by row.
        await conn.create_function("oban_json_contains", 2, _json_contains, deterministic=True)
        await conn.create_function("oban_icontains", 2, _icontains, deterministic=True)
        self._conn = conn
        return conn

    async def close(self) -> None:
        """Close the connection (no-op when closed); a later operation opens it again."""
        async with self._get_lock():
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    async def _retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, retrying while the database is busy, for up to busy_timeout.

        SQLite's own busy handler already waits inside each attempt; this loop covers the
        cases where SQLite reports busy without waiting.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = _BACKOFF_START
        while True:
            try:
                return await operation()
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def _q(self, name: str) -> str:
        return _load(name, self.prefix)

    async def _run(self, name: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one statement (autocommit: it is its own transaction); return its rows."""
        sql = self._q(name)
        args = params or {}
        async with self._get_lock():
            conn = await self._open_locked()
            with self._schema_guard():
                return list(await self._retry(functools.partial(conn.execute_fetchall, sql, args)))

    @contextlib.contextmanager
    def _schema_guard(self) -> Iterator[None]:
        """Turn SQLite's "no such table" into the error that says to install the schema (the
        facade installs it on open, so this means it was dropped while in use)."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):
                raise
            raise self._schema_missing() from error

    def _schema_missing(self) -> SchemaNotInstalledError:
        flag = "" if self.prefix == "public" else f" --prefix {self.prefix}"
        return SchemaNotInstalledError(
            f"the oban tables are missing from {self.path!r}: run "
            f"`oban install --dsn sqlite:///{self.path}{flag}` first"
        )

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on the connection, with
        the engine's lock held so no other operation interleaves."""
        async with self._get_lock():
            conn = await self._open_locked()
            await self._retry(functools.partial(conn.execute_fetchall, "BEGIN IMMEDIATE"))
            try:
                yield conn
                await conn.execute_fetchall("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute_fetchall("ROLLBACK")
                raise

    def _wake(self, queues: Sequence[str]) -> None:
        """Tell in-process producers that ``queues`` have new available jobs."""
        notify = self.local_notify
        if notify is None:
            return
        for queue in dict.fromkeys(queues):
            notify("insert", {"queue": queue})

    # Schema

    async def install(self) -> None:
        """Create the oban tables and indexes (idempotent; safe from several processes).

        On a file whose ``PRAGMA user_version`` is 0, records :data:`SCHEMA_VERSION` there; a
        version set by someone else is left alone.
        """
        async with self._transaction() as conn:

            async def run(sql: str, params: dict[str, Any]) -> list[Any]:
                return list(await conn.execute_fetchall(sql, params))

            await self._install_with(run, force=True)

    async def try_open(self, wait: float) -> bool:
        """Open and install as on first use, waiting at most ``wait`` seconds for the file's
        write lock; ``False`` (and closed again) if another connection holds it longer, for
        instance the caller's own open transaction."""
        saved = self.busy_timeout
        self.busy_timeout = wait
        try:
            await self.open()
            await self.install()
        except (sqlite3.OperationalError, DatabaseUnavailableError) as error:
            cause = error.__cause__ if isinstance(error, DatabaseUnavailableError) else error
            if not (isinstance(cause, sqlite3.OperationalError) and _is_busy(cause)):
                raise
            await self.close()
            return False
        finally:
            self.busy_timeout = saved
        async with self._get_lock():
            conn = await self._open_locked()
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {int(saved * 1000)}")
        return True

    async def install_on(self, conn: Any) -> None:
        """Make sure the schema exists, using only the caller's connection ``conn`` (inside
        whatever transaction it has open): the caller may hold the file's write lock, which
        this engine's own connection would wait for. Reads only when the schema exists."""
        await self._install_with(functools.partial(_execute_on, conn))

    async def _install_with(
        self, run: Callable[[str, dict[str, Any]], Awaitable[list[Any]]], *, force: bool = False
    ) -> None:
        """:meth:`install_on`, running each statement with ``run``; ``force``: every statement
        even when the tables exist (an upgrade adds what a newer version has)."""
        rows = await run(self._q("check_schema"), {})
        if all(rows[0]) and not force:
            return
        for statement in _statements("install", self.prefix):
            try:
                await run(statement, {})
            except sqlite3.IntegrityError as error:  # the unique index, over duplicates
                raise DuplicateUniqueKeysError(
                    f"cannot build oban_jobs_unique_index in {self.path!r}: jobs share a "
                    "unique key (written without the index). Cancel or delete the extra "
                    "jobs, or empty their meta.uniq_bmp, then open it again"
                ) from error
        version = await run("PRAGMA user_version", {})
        if version[0][0] == 0:
            await run(f"PRAGMA user_version = {SCHEMA_VERSION}", {})

    def install_sync(self, conn: sqlite3.Connection) -> None:
        """:meth:`install` on the caller's ``sqlite3`` connection, inside whatever transaction
        it has open (a Django migration's)."""
        _sync.drive(
            self._install_with(_sync.awaitable(functools.partial(_execute_sync, conn)), force=True)
        )

    def uninstall_sync(self, conn: sqlite3.Connection) -> None:
        """:meth:`uninstall` on the caller's ``sqlite3`` connection, in its transaction."""
        for statement in _statements("uninstall", self.prefix):
            conn.execute(statement)

    async def uninstall(self) -> None:
        """Drop the oban tables of this prefix (idempotent)."""
        async with self._transaction() as conn:
            for statement in _statements("uninstall", self.prefix):
                await conn.execute_fetchall(statement)

    async def check_schema(self) -> None:
        try:
            rows = await self._run("check_schema")
        except sqlite3.DatabaseError as error:
            raise DatabaseUnavailableError(
                f"cannot read the SQLite database {self.path!r}: {error}"
            ) from error
        jobs, producers, leaders = rows[0]
        if not (jobs and producers and leaders):
            raise self._schema_missing()

    # Jobs

    async def insert_jobs(self, jobs: Sequence[Job], conn: Any = None) -> list[Job]:
        """Insert ``jobs`` in one statement.

        ``conn`` may be the caller's ``aiosqlite.Connection`` (or ``aiosqlite.Cursor``), a
        ``sqlite3.Connection``/``sqlite3.Cursor``, or a SQLAlchemy ``AsyncConnection``/
        ``AsyncSession`` on aiosqlite: the insert then runs in the caller's transaction (it
        commits or rolls back with it, and is not retried when busy). In-process producers
        are woken at once, before that commit: at worst they poll once for nothing.
        """
        if not jobs:
            return []
        if _unique.stamp(jobs):
            return await self._insert_unique(jobs, conn)
        params = self._insert_params(jobs)
        if conn is not None:
            with self._schema_guard():
                rows = await _execute_on(conn, self._q("insert_jobs"), params)
        else:
            rows = await self._run("insert_jobs", params)
        return self._inserted(jobs, rows)

    def _inserted(self, jobs: Sequence[Job], rows: list[Any]) -> list[Job]:
        """``jobs`` described by the rows ``insert_jobs.sql`` returned for them; in-process
        producers of the queues that received available jobs are woken."""
        rows.sort(key=lambda row: row[0])  # ids ascend in input order
        for job, (id_, state, _queue, inserted_at, scheduled_at) in zip(jobs, rows, strict=True):
            job.id = id_
            job.state = JobState(state)
            job.inserted_at = parse_timestamp(inserted_at)
            job.scheduled_at = parse_timestamp(scheduled_at)
        self._wake([row[2] for row in rows if row[1] == "available"])
        return list(jobs)

    def insert_jobs_sync(self, jobs: Sequence[Job], conn: Any) -> list[Job]:
        """:meth:`insert_jobs` on the caller's synchronous connection ``conn``, inside its
        transaction, in the caller's thread (no event loop): the same statements. In-process
        producers are woken as :meth:`insert_jobs` wakes them (through :attr:`local_notify`).

        ``conn``: a ``sqlite3`` ``Connection``/``Cursor``, or a SQLAlchemy ``Connection``/
        ``Session`` on sqlite3. A file without the schema gets it on that connection first,
        as ``insert_jobs`` on a caller's connection does before this engine opened the file.

        Raises:
            TypeError: another kind of ``conn``.
        """
        if not jobs:
            return []
        target = _sync.sqlite_connection(conn)

        def run(sql: str, params: dict[str, Any]) -> list[Any]:
            return target.execute(sql, params).fetchall()

        try:
            return self._insert_sync(jobs, run)
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):
                raise
        # Nothing was written: the first statement found no table.
        _sync.drive(self._install_with(_sync.awaitable(run)))
        with self._schema_guard():
            return self._insert_sync(jobs, run)

    def _insert_sync(
        self, jobs: Sequence[Job], run: Callable[[str, dict[str, Any]], list[Any]]
    ) -> list[Job]:
        if _unique.stamp(jobs):
            _sync.drive(self._insert_unique_on(_sync.awaitable(run), jobs))
            return self._unique_inserted(jobs)
        return self._inserted(jobs, run(self._q("insert_jobs"), self._insert_params(jobs)))

    @staticmethod
    def _insert_params(jobs: Sequence[Job]) -> dict[str, Any]:
        return {"jobs": _payloads.new_jobs(jobs, _timestamp_or_none)}

    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The running event loop this engine's operations are serialised on while the file
        is open (its lock belongs to that loop), else ``None``: any loop may use it."""
        loop = self._lock_loop
        if self._conn is None or loop is None or not loop.is_running():
            return None
        return loop

    async def _insert_unique(self, jobs: Sequence[Job], conn: Any) -> list[Job]:
        """Insert a batch with unique jobs (docs/unique.md): every statement in one
        transaction, which holds the file's write lock from the first write on."""
        if conn is not None:
            with self._schema_guard():
                await self._insert_unique_on(functools.partial(_execute_on, conn), jobs)
        else:
            async with self._transaction() as own:

                async def run(sql: str, params: dict[str, Any]) -> list[Any]:
                    return list(await own.execute_fetchall(sql, params))

                with self._schema_guard():
                    await self._insert_unique_on(run, jobs)
        return self._unique_inserted(jobs)

    def _unique_inserted(self, jobs: Sequence[Job]) -> list[Job]:
        """``jobs`` after a unique insert; producers of the queues of new available jobs are
        woken."""
        self._wake([job.queue for job in jobs if not job.conflict and job.state == "available"])
        return list(jobs)

    async def _insert_unique_on(
        self, run: Callable[[str, dict[str, Any]], Awaitable[list[Any]]], jobs: Sequence[Job]
    ) -> None:
        if not self._unique_index:
            [(found,)] = await run(self._q("unique_index_check"), {})
            if not found:
                flag = "" if self.prefix == "public" else f" --prefix {self.prefix}"
                raise SchemaNotInstalledError(
                    f"unique jobs need the index oban_jobs_unique_index in {self.path!r}, "
                    f"which is missing: run `oban install --dsn sqlite:///{self.path}{flag}`"
                )
            self._unique_index = True

        async def insert(pending: list[Job]) -> list[tuple[Any, ...] | None]:
            [(base,)] = await run(self._q("unique_base"), {})
            payload = _payloads.new_unique_jobs(pending, _timestamp_or_none)
            rows = await run(self._q("insert_unique_jobs"), {"jobs": payload, "base": base})
            found = {row[0]: _holder(row) for row in rows}
            return [found.get(base + index + 1) for index in range(len(pending))]

        async def holders(keys: list[str]) -> dict[str, tuple[Any, ...]]:
            rows = await run(self._q("unique_holders"), {"keys": orjson.dumps(keys).decode()})
            return {key: _holder(row) for key, *row in rows}

        async def replace(pairs: list[_unique.Replacement]) -> list[tuple[Any, ...]]:
            payload = _payloads.replacements(pairs, _timestamp_or_none)
            return [
                _holder(row) for row in await run(self._q("replace_unique_jobs"), {"jobs": payload})
            ]

        await _unique.insert(jobs, insert=insert, holders=holders, replace=replace)

    async def fetch_jobs(self, queue: str, demand: int, node: str, uuid: str) -> list[Job]:
        if demand <= 0:  # SQLite reads a negative LIMIT as no limit at all
            return []
        rows = await self._run("fetch_jobs", self._fetch_params(queue, demand, node, uuid))
        return self._claimed(rows)

    @staticmethod
    def _fetch_params(queue: str, demand: int, node: str, uuid: str) -> dict[str, Any]:
        return {"queue": queue, "demand": demand, "node": node, "uuid": uuid}

    def _claimed(self, rows: list[Any]) -> list[Job]:
        try:
            rows.sort(key=lambda row: (row[5], row[13], row[0]))  # priority, scheduled_at, id
        except TypeError:  # a priority or scheduled_at of another type (the row fails alone)
            rows.sort(key=_claim_order)
        for row in rows:
            self._fetched_meta[row[0]] = row[7]
        return [_row_to_job(row) for row in rows]

    def _ack_params(self, acks: Sequence[Ack]) -> dict[str, Any]:
        merged = [self._merge_meta(ack) for ack in acks]
        return {"acks": _payloads.acks(merged, _timestamp_or_none, _seconds)}

    def _acked(self, acks: Sequence[Ack], rows: list[Any]) -> set[int]:
        for ack in acks:
            self._fetched_meta.pop(ack.id, None)
        return {row[0] for row in rows}

    async def ack_jobs(self, acks: Sequence[Ack]) -> set[int]:
        if not acks:
            return set()
        return self._acked(acks, await self._run("ack_jobs", self._ack_params(acks)))

    async def ack_fetch_jobs(
        self, acks: Sequence[Ack], queue: str, demand: int, node: str, uuid: str
    ) -> tuple[set[int], list[Job]]:
        if not acks:
            return set(), await self.fetch_jobs(queue, demand, node, uuid)
        if demand <= 0:
            return await self.ack_jobs(acks), []
        # One transaction: both statements commit together or not at all.
        async with self._transaction() as conn:
            ack_rows = list(
                await conn.execute_fetchall(self._q("ack_jobs"), self._ack_params(acks))
            )
            rows = list(
                await conn.execute_fetchall(
                    self._q("fetch_jobs"), self._fetch_params(queue, demand, node, uuid)
                )
            )
        return self._acked(acks, ack_rows), self._claimed(rows)

    def _merge_meta(self, ack: Ack) -> Ack:
        """Merge an ack's meta into the job's meta here, in Python.

        SQLite's JSON functions turn numbers into doubles printed with 15 digits, so a merge
        in SQL would round the job's floats. An executing job's meta changes only through its
        own ack (the ack is guarded by state and attempted_at), so the meta read at fetch
        time is current. Without it (not fetched here), the SQL falls back to json_patch.
        """
        if ack.meta is None and not ack.snooze:
            return ack
        raw = self._fetched_meta.get(ack.id)
        if raw is None:
            return ack
        try:
            current = orjson.loads(raw)
        except orjson.JSONDecodeError:
            current = None
        if not isinstance(current, dict):  # as the SQL does: a meta that is no object is replaced
            current = {}
        meta = {**current, **(ack.meta or {})}
        if ack.snooze:
            meta["snoozed"] = _payloads.counter(current.get("snoozed")) + 1
        return dataclasses.replace(ack, meta=meta, replace_meta=True)

    async def stage_jobs(self, queues: Sequence[str] | None, limit: int) -> dict[str, int]:
        if queues is not None and not queues:
            return {}
        scope = None if queues is None else orjson.dumps(list(queues)).decode()
        params = {"queues": scope, "limit": max(limit, 0)}
        discarded: list[Any] = []
        try:
            rows = await self._run("stage_jobs", params)
        except sqlite3.IntegrityError:
            # A unique job would take a key another job holds (docs/unique.md): the statement
            # changed nothing. Such jobs are discarded first, then the rest is staged, in one
            # transaction (under the write lock: nothing can take a key in between).
            async with self._transaction() as conn:
                conflicts_params = {**params, "every": False}
                discarded = list(
                    await conn.execute_fetchall(self._q("stage_conflicts"), conflicts_params)
                )
                rows = list(await conn.execute_fetchall(self._q("stage_jobs"), params))
        conflicts: dict[str, int] = {}
        for (queue,) in discarded:
            conflicts[queue] = conflicts.get(queue, 0) + 1
        if conflicts and self.on_unique_conflicts is not None:
            self.on_unique_conflicts(conflicts)
        counts: dict[str, int] = {}
        for (queue,) in rows:
            counts[queue] = counts.get(queue, 0) + 1
        self._wake(list(counts))
        return counts

    async def list_jobs(
        self, where: JobFilter, after: int | None, limit: int, floor: int | None = None
    ) -> list[Job]:
        def array(values: Sequence[Any] | None) -> str | None:
            return None if values is None else orjson.dumps(list(values)).decode()

        params = {
            "states": array(where.states),
            "queues": array(where.queues),
            "workers": array(where.workers),
            "tags": array(where.tags),
            "args": None if where.args is None else orjson.dumps(where.args).decode(),
            "meta": None if where.meta is None else orjson.dumps(where.meta).decode(),
            "search": None if where.search is None else like_pattern(where.search),
            "fold": where.search is not None and not where.search.isascii(),
            "needle": None if where.search is None else where.search.casefold(),
            "ids": array(where.ids),
            "after": after,
            "floor": floor,
            "limit": limit,
        }
        return [_row_to_job(row) for row in await self._run("list_jobs", params)]

    async def max_job_id(self, below: int | None) -> int | None:
        rows = await self._run("max_job_id", {"below": below})
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def count_jobs(
        self, states: Sequence[str] | None, queues: Sequence[str] | None, limit: int
    ) -> list[tuple[str, str, bool, int]]:
        params = {
            "states": None if states is None else orjson.dumps(list(states)).decode(),
            "queues": None if queues is None else orjson.dumps(list(queues)).decode(),
        }
        rows = await self._run("count_jobs", params)
        return [(_name(state), _name(queue), False, int(count)) for state, queue, count in rows]

    async def last_cron_jobs(self, names: Sequence[str]) -> list[Job]:
        if not names:
            return []
        rows = await self._run("last_cron_jobs", {"names": orjson.dumps(list(names)).decode()})
        return [_row_to_job(row) for row in rows]

    async def job_stats(self, window: int, bucket: int, limit: int) -> JobStats:
        params = {"window": window, "bucket": bucket, "limit": limit}
        rows = await self._run("job_stats", params)
        samples: list[StatsSample] = [
            (int(at), _name(queue), int(done), int(dropped), int(cancelled), _ms(waits), _ms(runs))
            for _until, _cut, at, queue, done, dropped, cancelled, waits, runs in rows
            if at is not None
        ]
        until, cut = int(rows[0][0]), rows[0][1]
        return job_stats_from_samples(window, bucket, limit, until, cut, samples)

    async def get_jobs(self, ids: Sequence[int]) -> list[Job]:
        rows = await self._run("get_jobs", {"ids": orjson.dumps(list(ids)).decode()})
        return [_row_to_job(row) for row in rows]

    # Producers and signals

    async def insert_producer(
        self, uuid: str, name: str, node: str, queue: str, meta: dict[str, Any]
    ) -> None:
        await self._run(
            "insert_producer",
            {
                "uuid": uuid,
                "name": name,
                "node": node,
                "queue": queue,
                "meta": orjson.dumps(meta).decode(),
            },
        )

    async def delete_producer(self, uuid: str) -> None:
        await self._run("delete_producer", {"uuid": uuid})

    async def notify(self, channel: str, payloads: Sequence[str]) -> None:
        """Deliver ``payloads`` on ``channel`` to :attr:`local_notify` in this process at once;
        ``signal`` and ``leader`` payloads also go to the ``oban_signals`` table, which the
        nodes of other processes on the file read about once a second (SQLite has no
        NOTIFY)."""
        if channel in CROSS_PROCESS_CHANNELS and payloads:
            params = {
                "channel": channel,
                "payloads": orjson.dumps(list(payloads)).decode(),
                "origin": process_origin(),
            }
            await self._run("insert_signals", params)
        notify = self.local_notify
        if notify is None:
            return
        for payload in payloads:
            notify(channel, decode_payload(payload))

    async def last_signal(self) -> int:
        """The id of the newest row of ``oban_signals`` (0: none)."""
        rows = await self._run("last_signal")
        return int(rows[0][0])

    async def read_signals(self, after: int, limit: int = 1_000) -> list[tuple[int, str, str]]:
        """``(id, channel, payload)`` of the signals other processes sent after ``after``."""
        params = {"after": after, "origin": process_origin(), "limit": limit}
        return [(row[0], row[1], row[2]) for row in await self._run("read_signals", params)]

    async def prune_signals(self, max_age: float) -> int:
        """Delete signals older than ``max_age`` seconds."""
        return len(await self._run("prune_signals", {"max_age": _seconds(max_age)}))

    # Cluster

    async def elect_leader(self, name: str, node: str, ttl: float) -> bool:
        rows = await self._run("elect_leader", {"name": name, "node": node, "ttl": _seconds(ttl)})
        return bool(rows) and rows[0][0] == node

    async def resign_leader(self, name: str, node: str) -> None:
        await self._run("resign_leader", {"name": name, "node": node})

    async def prune_jobs(self, max_age: float, limit: int) -> int:
        rows = await self._run("prune_jobs", {"max_age": _seconds(max_age), "limit": max(limit, 0)})
        return len(rows)

    async def rescue_jobs(
        self, rescue_after: float, producer_max_age: float, limit: int
    ) -> dict[str, int]:
        rows = await self._run(
            "rescue_jobs",
            {
                "rescue_after": _seconds(rescue_after),
                "producer_max_age": _seconds(producer_max_age),
                "limit": max(limit, 0),
            },
        )
        counts = {"available": 0, "discarded": 0}
        for _id, state in rows:
            counts[state] = counts.get(state, 0) + 1
        return counts

    async def list_producers(self, name: str, max_age: float) -> list[ProducerRow]:
        rows = await self._run("list_producers", {"name": name, "max_age": _seconds(max_age)})
        found = []
        for row in rows:
            try:
                meta = orjson.loads(row[3])
            except orjson.JSONDecodeError:
                meta = {}
            found.append(
                ProducerRow(
                    uuid=row[0],
                    node=row[1],
                    queue=row[2],
                    meta=meta if isinstance(meta, dict) else {},
                    started_at=parse_timestamp(row[4]) or datetime.now(UTC),
                    updated_at=parse_timestamp(row[5]) or datetime.now(UTC),
                    running=list(orjson.loads(row[6])),
                )
            )
        return found

    async def refresh_producers(self, producers: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        if not producers:
            return set()
        payload = orjson.dumps([{"uuid": uuid, "meta": meta} for uuid, meta in producers])
        rows = await self._run("refresh_producers", {"producers": payload.decode()})
        return {row[0] for row in rows}

    async def cleanup_producers(self, max_age: float) -> int:
        return len(await self._run("cleanup_producers", {"max_age": _seconds(max_age)}))

    async def expire_producer(self, uuid: str) -> None:
        await self._run("expire_producer", {"uuid": uuid})

    async def insert_cron_jobs(self, name: str, jobs: Sequence[Job]) -> list[int]:
        """Insert cron jobs in one statement, skipping entries that already have a job for
        their minute. ``name`` (PostgreSQL's advisory-lock key) is not needed: the statement
        holds SQLite's write lock from the check to the insert."""
        if not jobs:
            return []
        _unique.stamp(jobs)
        payload = _payloads.cron_jobs(jobs)
        rows = await self._run("insert_cron_jobs", {"jobs": payload})
        rows.sort(key=lambda row: row[0])
        self._wake([row[1] for row in rows])
        return [row[0] for row in rows]

    async def cancel_jobs(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Cancel ``ids``; return (cancelled ids, executing ids to signal)."""
        params = {"ids": orjson.dumps(list(ids)).decode(), "reason": CANCELLED_WHILE_EXECUTING}
        find, cancel = _statements("cancel_jobs", self.prefix)
        with self._schema_guard():
            async with self._transaction() as conn:
                running = {row[0] for row in await conn.execute_fetchall(find, params)}
                cancelled = sorted(row[0] for row in await conn.execute_fetchall(cancel, params))
        return [i for i in cancelled if i not in running], [i for i in cancelled if i in running]

    # Workflows

    async def release_workflows(self, ids: Sequence[str]) -> list[tuple[int, str, str, str]]:
        """Release or cancel the suspended jobs of workflows ``ids`` whose dependencies
        finished (see release_workflows.sql); the changed jobs: (id, state, queue, wid)."""
        params = {"wids": orjson.dumps(list(ids)).decode()}
        statements = _statements("release_workflows", self.prefix)
        with self._schema_guard():
            async with self._transaction() as conn:
                for statement in statements[:3]:
                    await conn.execute_fetchall(statement, params)
                released = list(await conn.execute_fetchall(statements[3], params))
                cancelled = list(await conn.execute_fetchall(statements[4], params))
        self._wake(sorted({row[2] for row in released if row[1] == "available"}))
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in released + cancelled]

    async def suspended_workflows(self, limit: int, after: int = 0) -> tuple[list[str], int]:
        """As PostgresEngine.suspended_workflows."""
        rows = await self._run("suspended_workflows", {"limit": limit, "after": after})
        return sweep_page(rows, limit)

    async def workflow_jobs(self, workflow_id: str) -> list[tuple[int, str, Any, Any]]:
        """(id, state, name, deps) of every job of the workflow, oldest first."""
        rows = await self._run("workflow_jobs", {"wid": workflow_id})
        found: list[tuple[int, str, Any, Any]] = []
        for job_id, state, name, deps in rows:
            try:
                decoded = orjson.loads(deps) if isinstance(deps, str) else None
            except orjson.JSONDecodeError:
                decoded = None
            found.append((int(job_id), str(state), name, decoded))
        return found

    # Management

    async def retry_jobs(self, ids: Sequence[int]) -> int:
        rows = await self._run("retry_jobs", {"ids": orjson.dumps(list(ids)).decode()})
        self._wake(sorted({row[1].decode(errors="replace") for row in rows}))
        return len(rows)

    async def delete_jobs(self, ids: Sequence[int]) -> int:
        return len(await self._run("delete_jobs", {"ids": orjson.dumps(list(ids)).decode()}))

    async def update_jobs(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            return []
        payload = _payloads.updates(jobs, _timestamp_or_none)
        try:
            rows = await self._run("update_jobs", {"jobs": payload})
        except sqlite3.IntegrityError as error:
            raise ValueError(_unique.UPDATE_CONFLICT) from error
        rows.sort(key=lambda row: row[0])
        return [_row_to_job(row) for row in rows]

    # Testing

    async def all_enqueued(self) -> list[Job]:
        return [_row_to_job(row) for row in await self._run("all_enqueued")]

    async def stage_all_jobs(self, queue: str) -> int:
        try:
            return len(await self._run("stage_all_jobs", {"queue": queue}))
        except sqlite3.IntegrityError:
            # As stage_jobs: unique jobs that cannot take their key are discarded first.
            conflicts = {"queues": orjson.dumps([queue]).decode(), "limit": -1, "every": True}
            async with self._transaction() as conn:
                await conn.execute_fetchall(self._q("stage_conflicts"), conflicts)
                staged = await conn.execute_fetchall(self._q("stage_all_jobs"), {"queue": queue})
            return len(list(staged))

    async def reset(self) -> None:
        async with self._transaction() as conn:
            for statement in _statements("reset", self.prefix):
                await conn.execute_fetchall(statement)


def _execute_sync(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


async def _execute_on(conn: Any, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run ``sql`` on the caller's connection, inside whatever transaction it has open."""
    if type(conn).__module__.startswith("sqlalchemy"):
        if hasattr(conn, "get_raw_connection"):  # sqlalchemy AsyncConnection
            raw = await conn.get_raw_connection()
        else:  # sqlalchemy AsyncSession
            raw = await (await conn.connection()).get_raw_connection()
        conn = raw.driver_connection
        if not isinstance(conn, aiosqlite.Connection):
            raise TypeError(
                f"conn uses the {type(conn).__name__} driver; the SQLite engine needs "
                "aiosqlite (sqlite+aiosqlite:///...)"
            )
    if isinstance(conn, aiosqlite.Cursor):
        conn = conn._conn
    if isinstance(conn, aiosqlite.Connection):
        return list(await conn.execute_fetchall(sql, params))
    if isinstance(conn, sqlite3.Cursor):
        conn = conn.connection
    if isinstance(conn, sqlite3.Connection):
        sync = conn

        def run() -> list[Any]:
            return sync.execute(sql, params).fetchall()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.ProgrammingError as error:
            # A connection made with check_same_thread=True (the default) may only be used
            # by its own thread, which is this one: run the (short) insert here.
            if "thread" not in str(error):
                raise
            return run()
    raise TypeError(
        "conn must be an aiosqlite Connection/Cursor, a sqlite3 Connection/Cursor, or a "
        f"SQLAlchemy AsyncConnection/AsyncSession on aiosqlite, got {type(conn).__name__}"
    )


if TYPE_CHECKING:
    # SQLiteEngine provides the whole Engine protocol (checked by mypy).
    _protocol_check: Engine = SQLiteEngine(":memory:")
