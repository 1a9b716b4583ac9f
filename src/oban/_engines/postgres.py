"""The PostgreSQL engine (psycopg 3, async, through a psycopg_pool pool)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, AsyncCursor, AsyncRawCursor, OperationalError, RawCursor
from psycopg.abc import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import UndefinedTable
from psycopg.pq import Format
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import _unique
from .._query import JobFilter, JobStats, job_stats_from_rows, like_pattern
from ..errors import DatabaseUnavailableError, SchemaNotInstalledError
from ..job import Job, JobState
from . import _payloads, _sql, _sync
from ._dsn import guard_pool_logs, mask_dsn, scrub
from .base import CANCELLED_WHILE_EXECUTING, Ack, ProducerRow, sweep_page

logger = logging.getLogger("oban")

#: Ids per relay notification, as ack_relayed.sql sends them (plain JSON under 8,000 bytes).
_RELAY_IDS_PER_NOTIFICATION = 300

_ENGINE = "postgres"
CONNECT_TIMEOUT = 10.0
#: Seconds one direct connection attempt may take before the database counts as unreachable
#: (libpq's connect_timeout, per host; name resolution is bounded by PROBE_GRACE more).
PROBE_TIMEOUT = 3.0
PROBE_GRACE = 1.0


def _naive_utc(value: datetime | None) -> str | datetime | None:
    """A timestamp for a JSON payload read into a ``timestamp`` (UTC) column."""
    if value is None:
        return None
    if value.tzinfo is UTC:
        # Every timestamp read from the database. orjson writes it in C as
        # ...T...+00:00, and PostgreSQL ignores the offset when reading a timestamp
        # without time zone: the same UTC wall time.
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat()


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _holder(row: Sequence[Any]) -> tuple[Any, ...]:
    """(id, state, queue, inserted_at, scheduled_at) with the timestamps made aware."""
    id_, state, queue, inserted_at, scheduled_at = row
    return (id_, state, queue, _aware(inserted_at), _aware(scheduled_at))


def _notify_refused(error: BaseException) -> bool:
    """Whether ``error`` is PostgreSQL refusing a NOTIFY (its notification queue is full),
    which fails the statement that sent it though its other writes were fine."""
    return getattr(error, "sqlstate", None) == "54000" and "notif" in str(error).lower()


def _ack_payload(acks: Sequence[Ack]) -> str:
    return _payloads.acks(acks, _naive_utc, _payloads.clamp_seconds)


async def _execute_sql(
    conn: AsyncConnection[Any],
    sql: str,
    params: tuple[Any, ...],
    *,
    prepare: bool | None = None,
) -> list[tuple[Any, ...]]:
    """Run one statement; its rows, or ``[]`` for a statement that returns none.
    ``prepare=False``: never as a prepared statement (a generic plan would not see which
    optional filters are given)."""
    # A raw cursor sends the $1-style SQL as written: no client-side query conversion.
    cur = AsyncRawCursor(conn)
    await cur.execute(sql, params, prepare=prepare)
    # pgresult.nfields, not description: description builds a Column per field.
    result = cur.pgresult
    if result is None or not result.nfields:
        return []
    try:
        return await cur.fetchall()
    except (psycopg.DataError, ValueError):
        # A value psycopg cannot turn into a Python one (a timestamp of 'infinity' or past
        # year 9999): read each value on its own, so that only its row fails (as an
        # UnreadableJob, for job rows) instead of every row of the statement.
        return _rows_value_by_value(cur)


#: PostgreSQL's InvalidOid: psycopg's loader for values of a type it has no loader for.
_UNKNOWN_OID = 0


def _execute_sql_sync(
    conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """:func:`_execute_sql` on a caller's synchronous connection (the sync API's ``conn=``)."""
    # Tuples whatever row factory the caller's connection has (dict_row, ...).
    cur = RawCursor(conn, row_factory=tuple_row)
    cur.execute(sql, params)
    result = cur.pgresult
    if result is None or not result.nfields:
        return []
    try:
        return cur.fetchall()
    except (psycopg.DataError, ValueError):
        return _rows_value_by_value(cur)


def _inserted(jobs: Sequence[Job], rows: Sequence[Sequence[Any]]) -> list[Job]:
    """``jobs`` described by the rows ``insert_jobs.sql`` returned for them (in input order)."""
    for job, (id_, state, inserted_at, scheduled_at) in zip(jobs, rows, strict=True):
        job.id = id_
        job.state = JobState(state)
        job.inserted_at = inserted_at.replace(tzinfo=UTC)
        job.scheduled_at = scheduled_at.replace(tzinfo=UTC)
    return list(jobs)


def _rows_value_by_value(cur: AsyncRawCursor[Any] | RawCursor[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``cur``'s result, each value loaded on its own; one that cannot be loaded
    is a :class:`~._payloads.Unloadable` naming why."""
    result = cur.pgresult
    assert result is not None
    adapters = cur.adapters
    loaders: list[Loader] = []
    for column in range(result.nfields):
        oid, fmt = result.ftype(column), Format(result.fformat(column))
        # A type without a loader of its own is read as text, as psycopg does.
        factory = adapters.get_loader(oid, fmt) or adapters.get_loader(_UNKNOWN_OID, fmt)
        assert factory is not None
        loaders.append(factory(oid, cur))
    rows: list[tuple[Any, ...]] = []
    for index in range(result.ntuples):
        row: list[Any] = []
        for column, loader in enumerate(loaders):
            raw = result.get_value(index, column)
            if raw is None:
                row.append(None)
                continue
            try:
                row.append(loader.load(raw))
            except Exception as error:
                row.append(_payloads.Unloadable(_payloads.describe(error, 300)))
        rows.append(tuple(row))
    return rows


def _row_to_job(row: Sequence[Any]) -> Job:
    """A job from a row of a job query; an :class:`~._payloads.UnreadableJob` when a column
    cannot be read."""
    return _payloads.row_to_job(row)


# Connecting


async def _resolve(value: Any) -> Any:
    """A pool parameter's value: psycopg_pool also accepts a (sync or async) callable."""
    if callable(value):
        value = value()
        if inspect.isawaitable(value):
            value = await value
    return value


async def resolve_conninfo(pool: AsyncConnectionPool[Any]) -> str:
    """The pool's conninfo as a string."""
    return str(await _resolve(pool.conninfo))


def shown(conninfo: str) -> str:
    """``conninfo`` as logs and errors show it: password masked; an empty one (libpq reads
    PGHOST and friends) named as such."""
    return mask_dsn(conninfo) or "(the libpq defaults)"


def unavailable(conninfo: str, error: BaseException) -> DatabaseUnavailableError:
    """The error for a database that cannot be reached: the server's (or the network's)
    reason and the DSN, its password masked."""
    reason = " ".join(str(error).split()) or type(error).__name__
    return DatabaseUnavailableError(
        f"cannot connect to the database at {shown(conninfo)}: {scrub(reason, conninfo)}"
    )


async def probe(
    conninfo: str, kwargs: Mapping[str, Any] | None = None, *, timeout: float = PROBE_TIMEOUT
) -> None:
    """Open one connection directly (no pool, no retries) and close it.

    A pool retries a failing connection until its own timeout and reports only that it timed
    out; one direct attempt fails at once with the server's reason.

    A positive ``connect_timeout`` set in the DSN or ``kwargs`` is kept; otherwise the
    attempt is given ``timeout`` seconds.

    Raises:
        DatabaseUnavailableError: naming the reason (``database "x" does not exist``,
            ``password authentication failed ...``, ``Connection refused``) and the masked DSN.
    """
    timeout = _connect_timeout(conninfo, kwargs or {}) or timeout
    options = {**(kwargs or {}), "connect_timeout": max(2, round(timeout))}
    try:
        conn = await asyncio.wait_for(
            AsyncConnection.connect(conninfo, **options), timeout + PROBE_GRACE
        )
    except (psycopg.Error, OSError, TimeoutError) as error:
        if isinstance(error, TimeoutError):
            error = TimeoutError(f"no answer within {timeout:g}s")
        raise unavailable(conninfo, error) from error
    await conn.close()


def _connect_timeout(conninfo: str, kwargs: Mapping[str, Any]) -> float | None:
    """The positive ``connect_timeout`` the user set, in ``kwargs`` or the DSN, if any."""
    value = kwargs.get("connect_timeout")
    try:
        if value is None:
            value = conninfo_to_dict(conninfo).get("connect_timeout")
        seconds = float(value) if value is not None else 0.0
    except (psycopg.Error, TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def new_pool(conninfo: str, options: Mapping[str, Any]) -> AsyncConnectionPool[Any]:
    """An unopened pool; ``options`` as ``Config.pool_kwargs()`` (``check=True`` becomes
    psycopg_pool's connection check)."""
    kwargs = dict(options)
    check = AsyncConnectionPool.check_connection if kwargs.pop("check", False) else None
    return AsyncConnectionPool(conninfo, open=False, check=check, **kwargs)


async def open_pool(pool: AsyncConnectionPool[Any], timeout: float) -> None:
    """Open ``pool`` and wait for its first connections, after one direct connection attempt
    has shown the database answers (so a wrong DSN fails in seconds, with its reason).

    Raises:
        DatabaseUnavailableError: the database cannot be reached (the pool is closed).
    """
    conninfo = await resolve_conninfo(pool)
    # psycopg_pool's warnings about this pool may quote its DSN: mask it there, in any program.
    guard_pool_logs(conninfo)
    try:
        await probe(conninfo, await _resolve(pool.kwargs), timeout=min(PROBE_TIMEOUT, timeout))
        await pool.open(wait=True, timeout=timeout)
    except DatabaseUnavailableError:
        await pool.close()
        raise
    except Exception as error:
        await pool.close()
        raise unavailable(conninfo, error) from error
    except BaseException:  # cancelled (a stop requested while the pool opens): no pool left
        await asyncio.shield(pool.close())
        raise


async def unwrap_connection(conn: Any) -> AsyncConnection[Any]:
    """The psycopg connection behind ``conn``.

    Accepts a psycopg ``AsyncConnection`` or ``AsyncCursor``, or a SQLAlchemy
    ``AsyncConnection``/``AsyncSession`` running on psycopg, so jobs join the caller's
    transaction.
    """
    if isinstance(conn, AsyncConnection):
        return conn
    if isinstance(conn, AsyncCursor):
        return conn.connection
    if type(conn).__module__.startswith("sqlalchemy"):
        if hasattr(conn, "get_raw_connection"):  # sqlalchemy AsyncConnection
            raw = await conn.get_raw_connection()
        else:  # sqlalchemy AsyncSession
            raw = await (await conn.connection()).get_raw_connection()
        driver = raw.driver_connection
        if isinstance(driver, AsyncConnection):
            return driver
        raise TypeError(
            f"conn uses the {type(driver).__name__} driver; oban needs psycopg "
            "(postgresql+psycopg://...)"
        )
    raise TypeError(
        "conn must be a psycopg AsyncConnection/AsyncCursor or a SQLAlchemy "
        f"AsyncConnection/AsyncSession, got {type(conn).__name__}"
    )


class _Checkout:
    """Checks a connection out of the pool and back in (lighter than the pool's own
    generator-based context manager, on every operation's path)."""

    __slots__ = ("_conn", "_pool", "_restore", "_timeout")

    def __init__(self, pool: AsyncConnectionPool[Any], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: AsyncConnection[Any] | None = None
        self._restore = False

    async def __aenter__(self) -> AsyncConnection[Any]:
        try:
            conn: AsyncConnection[Any] = await self._pool.getconn(timeout=self._timeout)
        except PoolTimeout as error:
            raise DatabaseUnavailableError(
                "could not get a database connection within "
                f"{self._timeout or self._pool.timeout}s ({self._pool.name}): is PostgreSQL "
                "reachable at the configured DSN?"
            ) from error
        self._conn = conn
        if not conn.autocommit:
            try:
                await conn.set_autocommit(True)
            except BaseException:
                await self._pool.putconn(conn)
                raise
            self._restore = True
        return conn

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._restore and not conn.closed:
                await conn.set_autocommit(False)
        finally:
            await self._pool.putconn(conn)


class PostgresEngine:
    """All SQL for PostgreSQL. Statements are loaded from ``queries/postgres``."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, prefix: str = "public") -> None:
        if not isinstance(pool, AsyncConnectionPool):
            raise TypeError(
                f"pool must be a psycopg_pool.AsyncConnectionPool, got {type(pool).__name__}; "
                "create one with Oban.create_pool(dsn=...)"
            )
        self.pool = pool
        self.prefix = _sql.validate_prefix(prefix)
        self.insert_channel = f"{prefix}.oban_insert"
        # No oban_peers (an oban-py 0.7.0 layout not upgraded yet): leases in oban_leaders.
        self._legacy_leases: bool | None = None
        self._fetch_sql_text: str | None = None
        self._ack_sql_text: str | None = None
        self.relay_channel = f"{prefix}.oban_relay"
        #: Whether oban_jobs_unique_index was found valid (checked at the first unique insert).
        self._unique_index = False
        #: Told, per queue, how many unique jobs staging discarded for a key another job holds.
        self.on_unique_conflicts: Callable[[dict[str, int]], None] | None = None
        #: Given the rows, as written, of the relayed jobs waited for here (``Ack.wanted``)
        #: that an ack statement of this engine wrote (after its commit): the waiters of
        #: this node take them.
        self.on_relayed_rows: Callable[[list[Job]], None] | None = None

    def _q(self, name: str) -> str:
        return _sql.load(_ENGINE, name, self.prefix)

    async def _execute(
        self, conn: AsyncConnection[Any], name: str, params: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        try:
            return await _execute_sql(conn, self._q(name), params)
        except UndefinedTable as error:
            raise await self._schema_missing() from error

    async def _execute_text(
        self, conn: AsyncConnection[Any], sql: str, params: tuple[Any, ...]
    ) -> list[tuple[Any, ...]]:
        """:meth:`_execute` for a statement built from several query files."""
        try:
            return await _execute_sql(conn, sql, params)
        except UndefinedTable as error:
            raise await self._schema_missing() from error

    async def _schema_missing(self) -> SchemaNotInstalledError:
        return self._schema_missing_at(shown(await resolve_conninfo(self.pool)))

    def _schema_missing_at(self, where: str) -> SchemaNotInstalledError:
        flag = "" if self.prefix == "public" else f" --prefix {self.prefix}"
        return SchemaNotInstalledError(
            f"the oban tables are missing from schema {self.prefix!r} of {where}: run "
            f"`oban install --dsn <dsn>{flag}` (or oban.schema.install(pool)) first"
        )

    def channel(self, name: str) -> str:
        """The full channel name for ``name`` (``insert`` -> ``public.oban_insert``)."""
        return f"{self.prefix}.oban_{name}"

    def _connection(self, timeout: float | None = None) -> _Checkout:
        """``async with``: a pooled connection in autocommit mode (each operation is one
        statement, so autocommit saves the BEGIN/COMMIT round trips). The pool is the
        caller's, so a connection's own setting is restored when it goes back."""
        return _Checkout(self.pool, timeout)

    async def _run(self, name: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            return await self._execute(conn, name, params)

    async def _diagnose(self) -> None:
        """Connect directly (not through the pool) to surface why the database is
        unreachable; raise DatabaseUnavailableError with that reason."""
        await probe(await resolve_conninfo(self.pool), await _resolve(self.pool.kwargs))

    async def check_schema(self) -> None:
        try:
            try:
                async with self._connection(timeout=2.0) as conn:
                    rows = await self._execute(conn, "check_schema", (self.prefix,))
            except DatabaseUnavailableError:
                # No pooled connection quickly: find out why, else wait longer for one.
                await self._diagnose()
                async with self._connection(timeout=CONNECT_TIMEOUT) as conn:
                    rows = await self._execute(conn, "check_schema", (self.prefix,))
        except OperationalError as error:
            raise unavailable(await resolve_conninfo(self.pool), error) from error
        jobs, producers, _leaders, peers = rows[0]
        if not (jobs and producers):
            raise await self._schema_missing()
        self._legacy_leases = not peers

    async def insert_jobs(self, jobs: Sequence[Job], conn: Any = None) -> list[Job]:
        if not jobs:
            return []
        if _unique.stamp(jobs):
            return await self._insert_unique(jobs, conn)
        params = self._insert_params(jobs)
        if conn is not None:
            rows = await self._execute(await unwrap_connection(conn), "insert_jobs", params)
        else:
            rows = await self._run("insert_jobs", params)
        return _inserted(jobs, rows)

    def _insert_params(self, jobs: Sequence[Job]) -> tuple[str, str]:
        return (_payloads.new_jobs(jobs, _naive_utc), self.insert_channel)

    def insert_jobs_sync(self, jobs: Sequence[Job], conn: Any) -> list[Job]:
        """:meth:`insert_jobs` on the caller's synchronous connection ``conn``, inside its
        transaction, in the caller's thread (no event loop): the same statements (the NOTIFY
        in them wakes the nodes when the caller commits).

        ``conn``: a psycopg ``Connection``/``Cursor``, or a SQLAlchemy ``Connection``/
        ``Session`` on psycopg.

        Raises:
            TypeError: another kind of ``conn``.
            SchemaNotInstalledError: the tables (or the unique index) are missing.
        """
        if not jobs:
            return []
        target = _sync.psycopg_connection(conn)

        def execute(name: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            try:
                return _execute_sql_sync(target, self._q(name), params)
            except UndefinedTable as error:
                raise self._schema_missing_at(shown(target.info.dsn)) from error

        if _unique.stamp(jobs):
            if not self._unique_index:
                self._unique_index_found(execute("unique_index_check", (self.prefix,)))
            _sync.drive(self._insert_unique_with(_sync.awaitable(execute), jobs))
            return list(jobs)
        return _inserted(jobs, execute("insert_jobs", self._insert_params(jobs)))

    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the pool belongs to while it is open (it was opened there: its
        scheduler and workers are tasks of that loop), else ``None``."""
        # psycopg_pool keeps no public reference to its loop; its scheduler task has one.
        runner = getattr(self.pool, "_sched_runner", None)
        return runner.get_loop() if isinstance(runner, asyncio.Task) else None

    async def _insert_unique(self, jobs: Sequence[Job], conn: Any) -> list[Job]:
        """Insert a batch with unique jobs: skipped duplicates describe the job that holds
        their key (``conflict`` true); see docs/unique.md."""
        if not self._unique_index:
            await self._check_unique_index()
        if conn is not None:
            await self._insert_unique_on(await unwrap_connection(conn), jobs)
        else:
            async with self._connection() as own:
                await self._insert_unique_on(own, jobs)
        return list(jobs)

    async def _insert_unique_on(self, conn: AsyncConnection[Any], jobs: Sequence[Job]) -> None:
        await self._insert_unique_with(functools.partial(self._execute, conn), jobs)

    async def _insert_unique_with(
        self,
        execute: Callable[[str, tuple[Any, ...]], Awaitable[list[tuple[Any, ...]]]],
        jobs: Sequence[Job],
    ) -> None:
        """The unique insert, running each statement (by name) with ``execute``."""

        async def insert(pending: list[Job]) -> list[tuple[Any, ...] | None]:
            payload = _payloads.new_unique_jobs(pending, _naive_utc)
            rows = await execute("insert_unique_jobs", (payload, self.insert_channel))
            return [None if row[1] is None else _holder(row[1:]) for row in rows]

        async def holders(keys: list[str]) -> dict[str, tuple[Any, ...]]:
            rows = await execute("unique_holders", (keys,))
            return {key: _holder(row) for key, *row in rows}

        async def replace(pairs: list[_unique.Replacement]) -> list[tuple[Any, ...]]:
            payload = _payloads.replacements(pairs, _naive_utc)
            return [_holder(row) for row in await execute("replace_unique_jobs", (payload,))]

        await _unique.insert(jobs, insert=insert, holders=holders, replace=replace)

    async def _check_unique_index(self) -> None:
        self._unique_index_found(await self._run("unique_index_check", (self.prefix,)))

    def _unique_index_found(self, rows: Sequence[Sequence[Any]]) -> None:
        """Note the unique index valid from ``unique_index_check``'s rows, or raise."""
        if rows and rows[0][0] is True:
            self._unique_index = True
            return
        flag = "" if self.prefix == "public" else f" --prefix {self.prefix}"
        raise SchemaNotInstalledError(
            f"unique jobs need the index oban_jobs_unique_index in schema {self.prefix!r}, "
            f"which is missing or unfinished: run `oban install --dsn <dsn>{flag}` (or "
            "oban.schema.install(pool)) to build it"
        )

    def _ack_parts(self, acks_param: str, channel_param: str) -> tuple[str, str]:
        """ack_jobs.sql's UPDATE and ack_relayed.sql's CTE, comments dropped, with their
        parameters numbered as the statement that holds them needs."""

        def load(name: str) -> str:
            text = _sql.load(_ENGINE, name, self.prefix)
            return "\n".join(line for line in text.splitlines() if not line.startswith("--"))

        ack = re.sub(r"\$1\b", acks_param, load("ack_jobs")).strip()
        relayed = load("ack_relayed").replace("$channel", channel_param).strip()
        return ack, relayed

    def _fetch_sql(self) -> str:
        """fetch_jobs.sql with the ack statement and its relay notifications inside."""
        if self._fetch_sql_text is None:
            ack, relayed = self._ack_parts("$5", "$6")
            fetch = _sql.load(_ENGINE, "fetch_jobs", self.prefix)
            self._fetch_sql_text = fetch.replace("{acks}", ack).replace("{relayed}", relayed)
        return self._fetch_sql_text

    def _ack_sql(self) -> str:
        """The acks alone ($1) and their relay notifications ($2 the channel)."""
        if self._ack_sql_text is None:
            ack, relayed = self._ack_parts("$1", "$2")
            self._ack_sql_text = (
                f"WITH acked AS (\n{ack}\n), relayed AS (\n{relayed}\n)\n"
                "SELECT a.* FROM acked AS a CROSS JOIN (SELECT count(*) FROM relayed) AS n"
            )
        return self._ack_sql_text

    async def fetch_jobs(self, queue: str, demand: int, node: str, uuid: str) -> list[Job]:
        return (await self.ack_fetch_jobs((), queue, demand, node, uuid))[1]

    async def ack_fetch_jobs(
        self, acks: Sequence[Ack], queue: str, demand: int, node: str, uuid: str
    ) -> tuple[set[int], list[Job]]:
        payload = _ack_payload(acks) if acks else "[]"
        params = (queue, demand, node, uuid, payload, self.relay_channel)
        try:
            async with self._connection() as conn:
                rows = await self._execute_text(conn, self._fetch_sql(), params)
        except psycopg.Error as error:
            if not acks or not _notify_refused(error):
                raise
            # The relay notification failed, not the acks: write them, then fetch, apart.
            written = await self.ack_jobs(acks)
            return written, await self.fetch_jobs(queue, demand, node, uuid)
        acked: set[int] = set()
        jobs: list[Job] = []
        relayed: list[Job] = []
        for row in rows:
            if not row[0]:
                jobs.append(_row_to_job(row[1:-1]))
                continue
            acked.add(row[1])
            if row[2] is not None:  # a wanted ack's row (worker is never NULL)
                relayed.append(_row_to_job(row[1:-1]))
        if relayed:
            self._hand_over(relayed)
        return acked, jobs

    async def ack_jobs(self, acks: Sequence[Ack]) -> set[int]:
        if not acks:
            return set()
        payload = _ack_payload(acks)
        try:
            async with self._connection() as conn:
                rows = await self._execute_text(
                    conn, self._ack_sql(), (payload, self.relay_channel)
                )
            rows_relayed = [_row_to_job(row[:-1]) for row in rows if row[1] is not None]
            if rows_relayed:
                self._hand_over(rows_relayed)
            return {row[0] for row in rows}
        except psycopg.Error as error:
            if not _notify_refused(error):
                raise
            # The relay notification failed (PostgreSQL's notification queue is full): the
            # acks are written without it, then announced apart (or only logged: waiters poll).
            logger.warning("relay notification refused, acks written without it: %s", error)
            written = await self._run("ack_jobs", (payload,))
            relayed = [int(row[0]) for row in written if row[-1]]
            if relayed:
                step = _RELAY_IDS_PER_NOTIFICATION
                payloads = [
                    orjson.dumps({"ids": relayed[i : i + step]}).decode()
                    for i in range(0, len(relayed), step)
                ]
                try:
                    await self.notify("relay", payloads)
                except psycopg.Error as again:
                    logger.warning("could not announce %d relayed jobs: %s", len(relayed), again)
            return {row[0] for row in written}

    def _hand_over(self, jobs: list[Job]) -> None:
        """Rows of relayed jobs an ack statement wrote (committed): to the node's waiters."""
        if self.on_relayed_rows is None:
            return
        try:
            self.on_relayed_rows(jobs)
        except Exception:  # the waiters read the rows as they would have without these
            logger.exception("handing acked rows to waiters failed")

    async def stage_jobs(self, queues: Sequence[str] | None, limit: int) -> dict[str, int]:
        if queues is not None and not queues:
            return {}
        scope = None if queues is None else list(queues)
        rows = await self._run("stage_jobs", (scope, limit, self.insert_channel))
        conflicts = {row[0]: row[2] for row in rows if row[2]}
        if conflicts and self.on_unique_conflicts is not None:
            self.on_unique_conflicts(conflicts)
        return {row[0]: row[1] for row in rows}

    async def list_jobs(
        self, where: JobFilter, after: int | None, limit: int, floor: int | None = None
    ) -> list[Job]:
        params = (
            None if where.states is None else "{" + ",".join(where.states) + "}",
            where.queues,
            where.workers,
            where.tags,
            None if where.args is None else orjson.dumps(where.args).decode(),
            None if where.meta is None else orjson.dumps(where.meta).decode(),
            None if where.search is None else like_pattern(where.search),
            where.ids,
            after,
            limit,
            floor,
        )
        async with self._connection() as conn:
            rows = await _execute_sql(conn, self._q("list_jobs"), params, prepare=False)
        return [_row_to_job(row) for row in rows]

    async def max_job_id(self, below: int | None) -> int | None:
        rows = await self._run("max_job_id", (below,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def count_jobs(
        self, states: Sequence[str] | None, queues: Sequence[str] | None, limit: int
    ) -> list[tuple[str, str, bool, int]]:
        scope = (None if states is None else list(states), None if queues is None else list(queues))
        async with self._connection() as conn:
            async with conn.transaction():
                # Each pair's bounded count is cheap; its cost estimate is not, and would have
                # the statement JIT-compiled for longer than it runs.
                await conn.execute("SET LOCAL jit = off")
                sql = self._q("count_jobs")
                rows = await _execute_sql(conn, sql, (*scope, limit, self.prefix), prepare=False)
        return [
            (state, queue, bool(estimated), int(count)) for state, queue, estimated, count in rows
        ]

    async def last_cron_jobs(self, names: Sequence[str]) -> list[Job]:
        if not names:
            return []
        rows = await self._run("last_cron_jobs", (list(names),))
        return [_row_to_job(row) for row in rows]

    async def job_stats(self, window: int, bucket: int, limit: int) -> JobStats:
        async with self._connection() as conn:
            async with conn.transaction():
                # As for count_jobs: a large limit makes a large cost estimate, which would
                # have the statement JIT-compiled for longer than it runs.
                await conn.execute("SET LOCAL jit = off")
                rows = await _execute_sql(conn, self._q("job_stats"), (window, bucket, limit))
        return job_stats_from_rows(window, bucket, limit, rows)

    async def get_jobs(self, ids: Sequence[int]) -> list[Job]:
        async with self._connection() as conn:
            return await self._get_jobs(conn, ids)

    async def get_jobs_on(self, conn: AsyncConnection[Any], ids: Sequence[int]) -> dict[int, Job]:
        """:meth:`get_jobs` on ``conn`` (the relay listener's), by id."""
        return {job.id: job for job in await self._get_jobs(conn, ids)}  # type: ignore[misc]

    async def _get_jobs(self, conn: AsyncConnection[Any], ids: Sequence[int]) -> list[Job]:
        if len(ids) == 1:
            rows = await self._execute(conn, "get_job", (ids[0],))
        else:
            rows = await self._execute(conn, "get_jobs", (list(ids),))
        return [_row_to_job(row) for row in rows]

    async def insert_producer(
        self, uuid: str, name: str, node: str, queue: str, meta: dict[str, Any]
    ) -> None:
        await self._run("insert_producer", (uuid, name, node, queue, orjson.dumps(meta).decode()))

    async def delete_producer(self, uuid: str) -> None:
        await self._run("delete_producer", (uuid,))

    # Workflows

    async def release_workflows(self, ids: Sequence[str]) -> list[tuple[int, str, str, str]]:
        """Release or cancel the suspended jobs of workflows ``ids`` whose dependencies
        finished (see release_workflows.sql); the changed jobs: (id, state, queue, wid)."""
        rows = await self._run("release_workflows", (list(ids), self.insert_channel))
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    async def suspended_workflows(self, limit: int, after: int = 0) -> tuple[list[str], int]:
        """The workflows of the next ``limit`` suspended jobs after job ``after``, and where
        the next call goes on from (0: from the start again)."""
        rows = await self._run("suspended_workflows", (limit, after))
        return sweep_page(rows, limit)

    async def workflow_jobs(self, workflow_id: str) -> list[tuple[int, str, Any, Any]]:
        """(id, state, name, deps) of every job of the workflow, oldest first."""
        return [tuple(r) for r in await self._run("workflow_jobs", (workflow_id,))]

    async def notify(self, channel: str, payloads: Sequence[str]) -> None:
        await self._run("notify", (self.channel(channel), list(payloads)))

    # Cluster

    async def elect_leader(self, name: str, node: str, ttl: float) -> bool:
        if self._legacy_leases is None:
            await self.check_schema()
        if self._legacy_leases:
            rows = await self._run("elect_leader_legacy", (name, node, ttl))
            return bool(rows) and rows[0][0] == node
        # Elixir's peer row (oban_peers), elected as Elixir elects: expired leases go, then
        # our lease is inserted or extended, in one transaction.
        async with self._connection() as conn:
            async with conn.transaction():
                await self._execute(conn, "delete_expired_peers", (name,))
                rows = await self._execute(conn, "elect_leader", (name, node, ttl))
        return bool(rows) and rows[0][0] == node

    async def resign_leader(self, name: str, node: str) -> None:
        legacy = self._legacy_leases
        await self._run("resign_leader_legacy" if legacy else "resign_leader", (name, node))

    async def prune_jobs(self, max_age: float, limit: int) -> int:
        return len(await self._run("prune_jobs", (max_age, limit)))

    async def rescue_jobs(
        self, rescue_after: float, producer_max_age: float, limit: int
    ) -> dict[str, int]:
        rows = await self._run("rescue_jobs", (rescue_after, producer_max_age, limit))
        counts = {"available": 0, "discarded": 0}
        for _id, state in rows:
            counts[state] = counts.get(state, 0) + 1
        return counts

    async def list_producers(self, name: str, max_age: float) -> list[ProducerRow]:
        rows = await self._run("list_producers", (name, max_age))
        return [
            ProducerRow(
                uuid=row[0],
                node=row[1],
                queue=row[2],
                meta=row[3] if isinstance(row[3], dict) else {},
                started_at=row[4].replace(tzinfo=UTC),
                updated_at=row[5].replace(tzinfo=UTC),
                running=list(row[6]),
            )
            for row in rows
        ]

    async def refresh_producers(self, producers: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        if not producers:
            return set()
        uuids = [uuid for uuid, _meta in producers]
        metas = [orjson.dumps(meta).decode() for _uuid, meta in producers]
        rows = await self._run("refresh_producers", (uuids, metas))
        return {row[0] for row in rows}

    async def cleanup_producers(self, max_age: float) -> int:
        return len(await self._run("cleanup_producers", (max_age,)))

    async def expire_producer(self, uuid: str) -> None:
        await self._run("expire_producer", (uuid,))

    async def insert_cron_jobs(self, name: str, jobs: Sequence[Job]) -> list[int]:
        if not jobs:
            return []
        if _unique.stamp(jobs) and not self._unique_index:
            await self._check_unique_index()
        payload = _payloads.cron_jobs(jobs)
        async with self._connection() as conn:
            async with conn.transaction():
                await self._execute(conn, "lock_cron", (name,))
                rows = await self._execute(conn, "insert_cron_jobs", (payload, self.insert_channel))
        return [row[0] for row in rows]

    async def cancel_jobs(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Cancel ``ids``; return (cancelled ids, executing ids to signal)."""
        rows = await self._run("cancel_jobs", (list(ids), CANCELLED_WHILE_EXECUTING))
        return [r[0] for r in rows if not r[1]], [r[0] for r in rows if r[1]]

    # Management

    async def retry_jobs(self, ids: Sequence[int]) -> int:
        return len(await self._run("retry_jobs", (list(ids),)))

    async def delete_jobs(self, ids: Sequence[int]) -> int:
        return len(await self._run("delete_jobs", (list(ids),)))

    async def update_jobs(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            return []
        payload = _payloads.updates(jobs, _naive_utc)
        try:
            rows = await self._run("update_jobs", (payload,))
        except psycopg.errors.UniqueViolation as error:
            raise ValueError(_unique.UPDATE_CONFLICT) from error
        return [_row_to_job(row) for row in rows]

    # Testing

    async def all_enqueued(self) -> list[Job]:
        return [_row_to_job(row) for row in await self._run("all_enqueued", ())]

    async def stage_all_jobs(self, queue: str) -> int:
        try:
            return len(await self._run("stage_all_jobs", (queue,)))
        except psycopg.errors.UniqueViolation:
            # As stage_jobs: unique jobs that cannot take their key are discarded first.
            async with self._connection() as conn:
                async with conn.transaction():
                    await self._execute(conn, "stage_all_conflicts", (queue,))
                    return len(await self._execute(conn, "stage_all_jobs", (queue,)))

    async def reset(self) -> None:
        await self._run("reset", ())
