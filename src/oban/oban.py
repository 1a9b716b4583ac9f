"""The ``Oban`` facade: configuration, engine and runtime wired together."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import os
import socket
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Never, Self, cast

import psycopg
from psycopg_pool import AsyncConnectionPool

from . import _hooks, telemetry
from ._acker import Acker
from ._config import (
    MAX_QUEUE_LIMIT,
    UNSET,
    Config,
    Unset,
    _unknown_option,
    producer_options,
    resolve,
)
from ._cron import CronEntry
from ._engines._dsn import is_postgres, sqlite_path
from ._engines.base import Ack, Engine
from ._engines.postgres import PostgresEngine, new_pool, open_pool, resolve_conninfo, shown
from ._executor import Executor
from ._gossip import Gossip
from ._instances import get_instance, instances
from ._isolation import close_pool
from ._leader import Leader
from ._lifeline import Lifeline
from ._looper import Looper
from ._modes import is_inline, run_inline
from ._notifier import ConnectionWork, Drops, PostgresNotifier
from ._producer import Producer, QueueInfo
from ._pruner import Pruner
from ._query import (
    COUNT_BY,
    EXACT_COUNT_LIMIT,
    MAX_ID,
    MAX_PAGE,
    STATS_LIMIT,
    CronInfo,
    JobCounts,
    JobPage,
    JobStats,
    NodeInfo,
    check_stats_window,
    job_filter,
    page_after,
)
from ._refresher import Refresher
from ._results import (
    DELETED,
    IDS_PER_NOTIFICATION,
    UNKNOWN,
    JobOutcome,
    Waiter,
    Waiters,
    outcome_of,
    relay_ids,
)
from ._scheduler import Scheduler, describe
from ._signal_poller import SignalPoller
from ._stager import Stager
from ._sync import SyncOban
from ._tasks import cancel_and_wait
from ._wire import SIGNATURE, SIGNED_AT, encode_payload, sign, verify
from ._workflows import Sweeper as WorkflowSweeper
from ._workflows import release as release_workflows
from .decorators import cron_entries, inline_relay
from .errors import (
    OptionNotImplementedError,
    RelayCancelled,
    RelayDiscard,
    RelayError,
    RelayTimeout,
    UnknownOptionError,
)
from .job import MAX_NAME_LENGTH, Job, JobState, current_job
from .telemetry.core import has_span_handlers
from .worker import warn_if_unimportable
from .workflow import Workflow, WorkflowStatus, status_of, workflow_id_of

__all__ = ["Oban", "QueueInfo"]

logger = logging.getLogger("oban")

# The registry lives in the model layer (``Worker.enqueue`` reads it); kept here by its old name.
_instances: dict[str, Oban] = instances

# (database file, prefix) -> the SQLite-backed instances of this process using it
_sqlite_peers: dict[tuple[str, str], weakref.WeakSet[Oban]] = {}


def _broadcast_local(
    key: tuple[str, str], channel: str, message: dict[str, Any], skip: Oban | None = None
) -> None:
    """An in-process notification to every SQLite instance of this process on the same file
    (but ``skip``), each on the event loop it runs on: from any thread (a sync call's)."""
    for instance in list(_sqlite_peers.get(key, ())):
        if instance is not skip:
            _deliver_local(instance, channel, message)


def _deliver_local(peer: Oban, channel: str, message: dict[str, Any]) -> None:
    loop = peer._engine.bound_loop()
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if loop is None or loop is here:
        peer._on_local_message(channel, message)
    else:
        loop.call_soon_threadsafe(peer._on_local_message, channel, message)


def default_node() -> str:
    """``hostname.pid``, so two processes on one host are distinct nodes."""
    return f"{socket.gethostname()}.{os.getpid()}"


class Oban:
    """A job system instance: enqueue jobs and, with ``queues``, run them.

    Settings are resolved as ``oban start`` resolves them: a keyword argument given here wins
    over its ``OBAN_*`` environment variable, which wins over ``oban.toml`` in the working
    directory; with none of them, the embedded SQLite engine runs on ``./oban.db``. So
    ``OBAN_DSN=postgresql://...`` alone moves ``Oban(queues=...)`` to PostgreSQL.
    (:meth:`from_config` takes settings already loaded, e.g. by :meth:`Config.load`.)

    Args:
        pool: a ``psycopg_pool.AsyncConnectionPool`` (see :meth:`create_pool`); it wins over
            every DSN setting.
        dsn: instead of ``pool``: ``postgresql://...`` (a pool is opened and closed with the
            instance, sized by the ``pool_*`` settings) or ``sqlite:///path/to/jobs.db``.
        queues: queue name -> limit, or -> ``{"limit": n, "paused": bool,
            "debounce_interval": s, "meta": {...}}``. Without queues the instance only
            enqueues (client mode).
        name: registry name for :meth:`get_instance` and ``@worker(oban=...)``.
        node: this node's name, default ``hostname.pid``.
        prefix: the PostgreSQL schema holding the tables, default ``public``.
        notifier: ``{"type": "postgres"}`` (LISTEN/NOTIFY, default) or ``{"type": "poll"}``.
        shutdown_grace_period: seconds ``stop()`` waits for running jobs (``None``: forever).
        leadership: take part in leader election (default: when the instance runs queues);
            the leader stages (on PostgreSQL), prunes, rescues orphans and inserts cron jobs
            for the whole cluster.
        leader: ``{"interval": 30.0}``, the leadership lease in seconds.
        stager, pruner, lifeline, refresher, scheduler: component options.
        metrics: ``True`` or ``{"interval": 1.0}`` (PostgreSQL only): every ``interval``
            seconds, gossip this node's queue checks for Oban Met / Oban Web.
        pool_min_size, pool_max_size, pool_timeout, pool_max_lifetime, pool_max_idle,
            pool_check: the pool an instance opens for a ``postgresql://`` DSN.
        worker_modules: module prefixes (``["myapp"]``) that a job's worker may be imported
            from; default: any module but the standard library, ``__main__`` modules and
            oban itself. Registered workers always resolve (docs/security.md).

    Raises:
        TypeError: an unknown keyword argument (naming the near match), or an option of the
            wrong type.
        ValueError: an invalid option value, both ``pool`` and ``dsn``, or ``metrics`` on
            SQLite.
        OptionNotImplementedError: an option not implemented yet (``metrics`` keys for
            counts or crontab, ...).

    >>> async def main():                                      # doctest: +SKIP
    ...     pool = await Oban.create_pool(dsn="postgresql://localhost/app")
    ...     async with Oban(pool=pool, queues={"default": 10}):
    ...         await asyncio.sleep(60)
    """

    _instances: ClassVar[dict[str, Oban]] = _instances

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any] | None = None,
        dispatcher: Any = None,
        dsn: str | None = None,
        leader: dict[str, Any] | None = None,
        leadership: bool | None = None,
        lifeline: dict[str, Any] | None = None,
        metrics: bool | dict[str, Any] | None = None,
        name: str | None = None,
        node: str | None = None,
        notifier: dict[str, Any] | None = None,
        pool_check: bool | None = None,
        pool_max_idle: float | None = None,
        pool_max_lifetime: float | None = None,
        pool_max_size: int | None = None,
        pool_min_size: int | None = None,
        pool_timeout: float | None = None,
        prefix: str | None = None,
        pruner: dict[str, Any] | None = None,
        queues: dict[str, int | dict[str, Any]] | None = None,
        refresher: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        shutdown_grace_period: float | Unset | None = UNSET,
        stager: dict[str, Any] | None = None,
        worker_modules: list[str] | None = None,
        **unknown: Never,
    ) -> None:
        for key in unknown:
            if key in _DEPLOYMENT_OPTIONS:
                raise UnknownOptionError(f"Oban(): {_DEPLOYMENT_OPTIONS[key]}")
            raise UnknownOptionError(f"Oban(): {_unknown_option(key, _INIT_OPTIONS)}")
        if dispatcher is not None:
            raise ValueError("dispatcher: custom dispatchers are not supported; leave it None")
        if pool is not None and dsn is not None:
            raise ValueError("pass pool= or dsn=, not both: a pool already names its database")
        # Every argument but pool and dispatcher is a Config field (a unit test keeps it so);
        # None means "not given", so OBAN_* and oban.toml may supply it.
        arguments = locals()
        given = {k: arguments[k] for k in _CONFIG_FIELDS if arguments[k] is not None}
        if shutdown_grace_period is not UNSET:
            given["shutdown_grace_period"] = shutdown_grace_period  # None: wait for ever
        self._configure(Config(**resolve(given)), pool)

    @classmethod
    def from_config(
        cls,
        config: Config | None = None,
        *,
        config_path: str | os.PathLike[str] | None = None,
        pool: AsyncConnectionPool[Any] | None = None,
    ) -> Self:
        """An instance with the settings of ``config``, taken as they are (no environment
        variable or file is read again); without ``config``, ``Config.load(config_path=...)``.

        This is how ``oban start`` builds its instance. ``pool``, when given, is used instead
        of the config's DSN.

        Raises:
            TypeError, ValueError: an invalid setting (``config`` is validated again, so one
                changed after loading is checked too), or both ``config`` and ``config_path``.
            FileNotFoundError: ``config_path`` does not exist.

        >>> oban = Oban.from_config(Config.load(queues={"default": 10}))  # doctest: +SKIP
        """
        if config is None:
            config = Config.load(config_path=config_path)
        elif config_path is not None:
            raise ValueError("pass config or config_path, not both")
        instance = cls.__new__(cls)
        instance._configure(dataclasses.replace(config), pool)
        return instance

    def _configure(self, config: Config, pool: AsyncConnectionPool[Any] | None) -> None:
        self._gossip_options = _gossip_options(config.metrics)
        self.config = config
        self.name = config.name
        self.node = config.node or default_node()
        self.prefix = config.prefix
        self._ready_lock = asyncio.Lock()
        self._engine_ready = False
        # An instance given a DSN opens its pool at start (or the first call that needs
        # it) and closes it at stop.
        self._owns_pool = pool is None and is_postgres(config.dsn)
        self.pool = self._new_pool() if self._owns_pool else pool
        self.sqlite_path: str | None = None
        self._engine: Engine = self._make_engine()
        if self._gossip_options is not None and self.sqlite_path is not None:
            raise ValueError(
                f"metrics={config.metrics!r} needs PostgreSQL: queue checks are gossiped by "
                "NOTIFY for Oban Met / Oban Web, which cannot read a SQLite database; leave "
                "metrics unset on SQLite"
            )
        self._leadership = bool(config.queues) if config.leadership is None else config.leadership
        self._producers: dict[str, Producer] = {}
        self._local_drops = Drops("in-process notifications")
        self._waiters = Waiters(self._read_waited)
        self._release_pending: set[str] = set()
        self._release_loop: asyncio.Task[None] | None = None
        #: Hears ``relay`` notifications for waiters of an instance that runs no node.
        self._relay_listener: PostgresNotifier | None = None
        self._notifier: PostgresNotifier | None = None
        self._acker: Acker | None = None
        self._stager: Stager | None = None
        self._leader: Leader | None = None
        self._plugins: list[Looper] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._executor: Executor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._started = False
        self._lock = asyncio.Lock()
        _instances[self.name] = self

    def _new_pool(self) -> AsyncConnectionPool[Any]:
        assert self.config.dsn is not None
        return new_pool(self.config.dsn, self.config.pool_kwargs())

    def _make_engine(self) -> Engine:
        if self.pool is not None:
            engine: Engine = PostgresEngine(self.pool, prefix=self.prefix)
            engine.on_unique_conflicts = _report_unique_conflicts
            return engine
        from ._engines.sqlite import SQLiteEngine

        self.sqlite_path = sqlite_path(self.config.dsn)
        engine = SQLiteEngine(self.sqlite_path, prefix=self.prefix)
        engine.on_unique_conflicts = _report_unique_conflicts
        # Every instance on this file in this process hears the others at once.
        key = (os.path.realpath(self.sqlite_path), self.prefix)
        _sqlite_peers.setdefault(key, weakref.WeakSet()).add(self)
        engine.local_notify = functools.partial(_broadcast_local, key)
        return engine

    async def _ready(self) -> Engine:
        """The engine, opened (and for SQLite, installed) on first use."""
        if self._engine_ready:
            return self._engine
        async with self._ready_lock:
            if not self._engine_ready:
                await self._open_engine()
                self._engine_ready = True
                logger.info("%s (node %s) uses %s", self.name, self.node, await self._database())
        return self._engine

    async def _open_engine(self) -> None:
        if self.sqlite_path is not None:
            await self._engine.open()  # type: ignore[attr-defined]
            await self._engine.install()  # type: ignore[attr-defined]
        elif self._owns_pool and self.pool is not None:
            try:
                await open_pool(self.pool, timeout=self.config.pool_timeout)
            except BaseException:
                self._renew_pool()  # a pool that failed to open cannot open again
                raise

    def _renew_pool(self) -> None:
        self.pool = self._new_pool()
        self._engine = self._make_engine()

    async def _database(self) -> str:
        """The engine and database, for logs (password masked)."""
        if self.pool is None:
            return f"SQLite {self.sqlite_path}"
        return f"PostgreSQL {shown(await resolve_conninfo(self.pool))}, schema {self.prefix}"

    def _on_remote_message(self, channel: str, message: dict[str, Any]) -> None:
        # What other processes wrote to the SQLite file's oban_signals table.
        if channel == "signal":
            self._on_remote_signal(message)
        else:
            self._on_local_message(channel, message)

    def _on_remote_signal(self, message: dict[str, Any]) -> None:
        """A signal from another process (NOTIFY, or the SQLite signals table): with
        ``notifier.secret`` set, only one signed with it (and recent) is acted on."""
        secret = self.config.notifier.get("secret")
        if secret is not None:
            problem = verify(message, secret)
            if problem is not None:
                self._refuse_signal(problem, message)
                return
        self._on_signal(message)

    def _refuse_signal(self, reason: str, message: dict[str, Any]) -> None:
        drops = self._notifier.dropped if self._notifier is not None else self._local_drops
        drops("signal", reason, message)

    def _signed(self, message: dict[str, Any]) -> dict[str, Any]:
        secret = self.config.notifier.get("secret")
        return message if secret is None else sign(message, secret)

    def _on_local_message(self, channel: str, message: dict[str, Any]) -> None:
        # The SQLite engine's in-process notifications.
        if channel == "insert":
            self._on_insert(message)
        elif channel == "signal":
            self._on_signal(message)
        elif channel == "leader":
            self._on_leader(message)
        elif channel == "relay":
            self._on_relay(message)

    # Registry and pool

    @classmethod
    def get_instance(cls, name: str = "Oban") -> Oban:
        """The instance registered under ``name``.

        Raises:
            InstanceNotFoundError: (a ``RuntimeError``) no such instance.
        """
        return cast("Oban", get_instance(name))

    @staticmethod
    async def create_pool(
        dsn: str | None = None,
        *,
        max_size: int | None = None,
        min_size: int | None = None,
        timeout: float | None = None,
    ) -> AsyncConnectionPool[Any]:
        """Open a connection pool from ``dsn`` (or ``OBAN_DSN`` / ``oban.toml``), sized by
        the arguments or the ``pool_*`` settings.

        A database that cannot be reached fails within seconds with the server's reason.

        Raises:
            ValueError: no PostgreSQL DSN anywhere.
            DatabaseUnavailableError: the database cannot be reached (the message names the
                reason and the DSN, its password masked).

        >>> pool = await Oban.create_pool("postgresql://localhost/app")  # doctest: +SKIP
        """
        config = Config.load(
            dsn=dsn, pool_max_size=max_size, pool_min_size=min_size, pool_timeout=timeout
        )
        if not is_postgres(config.dsn):
            raise ValueError(
                "no PostgreSQL DSN: pass dsn='postgresql://...', set OBAN_DSN or dsn in oban.toml"
            )
        assert config.dsn is not None
        pool = new_pool(config.dsn, config.pool_kwargs())
        await open_pool(pool, timeout=config.pool_timeout)
        return pool

    # Lifecycle

    @property
    def is_leader(self) -> bool:
        """Whether this node leads the cluster (always ``False`` with leadership off)."""
        return self._leader is not None and self._leader.is_leader

    async def __aenter__(self) -> Oban:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> Self:
        """Start the queues, and with leadership the leader-only plugins; return the instance.

        Without queues and leadership nothing runs yet: the first :meth:`start_queue` starts
        what running a queue takes. Starting a started instance does nothing.

        Raises:
            SchemaNotInstalledError: the tables are missing (run ``oban install``).
            DatabaseUnavailableError: the database cannot be reached.

        >>> oban = await Oban(queues={"default": 10}).start()  # doctest: +SKIP
        """
        async with self._lock:
            if not self._started:
                if self.config.queues or self._leadership:
                    await self._boot(self.config.queues)
                self._started = True
        return self

    async def _boot(self, queues: dict[str, dict[str, Any]]) -> None:
        """Open the engine, check the schema and start the runtime running ``queues``; a
        failure releases whatever had started."""
        await self._ready()
        await self._engine.check_schema()
        if self.config.leadership is None:
            # An instance that runs queues takes part (on PostgreSQL the leader alone stages,
            # also for a queue started later on an instance started without any).
            self._leadership = bool(queues)
        try:
            await self._start_components(queues)
        except BaseException:
            await self._teardown()
            raise

    async def _start_components(self, queues: dict[str, dict[str, Any]]) -> None:
        total = sum(opts["limit"] for opts in queues.values())
        self._threads = ThreadPoolExecutor(
            max_workers=max(4, total), thread_name_prefix=f"oban-{self.name}"
        )
        self._acker = Acker(self._engine)
        self._acker.on_settled = self._on_acks_settled
        if isinstance(self._engine, PostgresEngine):
            # The ack statements return the rows of the relayed jobs waited for here: no
            # read after the ack.
            self._acker.wanted = self._waiters.waits_for
            self._engine.on_relayed_rows = self._waiters.resolve
        self._acker.start()
        self._executor = Executor(threads=self._threads, worker_modules=self.config.worker_modules)
        await self._start_notifier(bool(queues))
        poller = None
        if self.sqlite_path is not None:
            # Other processes on the file signal through its oban_signals table. Primed before
            # any producer row exists: once other processes see the rows, they may signal.
            poller = SignalPoller(
                engine=self._engine, deliver=self._on_remote_message, interval=self._poll_interval()
            )
            await poller.prime()
        for queue, opts in queues.items():
            self._producers[queue] = self._make_producer(queue, opts)
        await asyncio.gather(*(p.start() for p in self._producers.values()))
        if self._leadership:
            self._leader = Leader(
                engine=self._engine,
                interval=self.config.leader.get("interval", 30.0),
                name=self.name,
                node=self.node,
            )
            await self._leader.tick_safely()
            self._leader.start()
        self._plugins = self._make_plugins()
        if poller is not None:
            self._plugins.append(poller)
        for plugin in self._plugins:
            plugin.start()

    async def _start_notifier(self, has_queues: bool) -> None:
        config = self.config.notifier
        if self.sqlite_path is not None:
            return  # in-process notifications; other processes are noticed by polling
        if config.get("type", "postgres") == "postgres" and self.pool is not None:
            self._notifier = PostgresNotifier(
                beat_interval=config.get("beat_interval", 30.0),
                conninfo=self.pool.conninfo,
                connect_kwargs=self.pool.kwargs,
                on_reconnect=self._on_reconnect,
                prefix=self.prefix,
            )
            self._notifier.listen("insert", self._on_insert)
            self._notifier.listen("signal", self._on_remote_signal)
            self._notifier.listen("relay", self._on_relay)
            self._notifier.on_connection["relay"] = self._relay_on_connection
            if self._leadership:
                self._notifier.listen("leader", self._on_leader)
            await self._notifier.start()
            # Waits before start() opened a relay listener: the notifier hears relay now.
            listener, self._relay_listener = self._relay_listener, None
            if listener is not None:
                await listener.stop()
        elif has_queues:
            logger.info("notifier: poll mode, producers poll every %ss", self._poll_interval())
            telemetry.execute(
                "oban.notifier.status", {"status": "polling", "reason": "poll mode configured"}
            )

    def _make_plugins(self) -> list[Looper]:
        plugins = self._make_maintenance()
        if self._gossip_options is not None:
            gossip = Gossip(
                engine=self._engine,
                infos=self.check_all_queues,
                name=self.name,
                **self._gossip_options,
            )
            plugins.append(gossip)
        return plugins

    def _make_maintenance(self) -> list[Looper]:
        config = self.config
        refresher = Refresher(
            engine=self._engine,
            is_leader=lambda: self.is_leader,
            producers=lambda: list(self._producers.values()),
            **config.refresher,
        )
        self._stager = self._make_stager()
        if not self._leadership:
            return [refresher] if self._stager.leader_only else [self._stager, refresher]
        return [
            self._stager,
            refresher,
            Pruner(engine=self._engine, is_leader=lambda: self.is_leader, **config.pruner),
            Lifeline(
                engine=self._engine,
                is_leader=lambda: self.is_leader,
                producer_max_age=refresher.max_age,
                on_rescued=self._after_rescue,
                **config.lifeline,
            ),
            Scheduler(
                engine=self._engine,
                entries=self._cron_entries,
                instance=self.name,
                is_leader=lambda: self.is_leader,
                **config.scheduler,
            ),
            WorkflowSweeper(
                engine=self._engine,
                is_leader=lambda: self.is_leader,
                on_changed=self._on_jobs_changed,
            ),
        ]

    def _make_stager(self) -> Stager:
        # PostgreSQL: the leader alone stages, every queue, as Elixir's leader does; a second
        # stager beside Elixir's (which locks nothing) could make a claimed job available
        # again. SQLite has no Elixir nodes and no notifications across processes: each node
        # stages its own queues (claims are serialised by BEGIN IMMEDIATE).
        leader_only = self.sqlite_path is None
        return Stager(
            engine=self._engine,
            is_leader=(lambda: self.is_leader) if leader_only else None,
            on_staged=self._wake,
            queues=lambda: list(self._producers),
            **self.config.stager,
        )

    def _make_producer(self, queue: str, opts: dict[str, Any]) -> Producer:
        assert self._acker is not None and self._executor is not None
        poll = self._poll_interval()
        return Producer(
            acker=self._acker,
            engine=self._engine,
            executor=self._executor,
            name=self.name,
            node=self.node,
            poll_interval=poll,
            queue=queue,
            **producer_options(opts),
        )

    def _poll_interval(self) -> float:
        interval: float = self.config.notifier.get("poll_interval", 1.0)
        return interval

    def _cron_entries(self) -> list[CronEntry]:
        return [e for e in cron_entries if getattr(e.worker, "_oban_name", "Oban") == self.name]

    async def stop(self) -> None:
        """Stop fetching, wait for running jobs (up to the grace period), flush acks, and
        close what the instance opened (also for an instance that only enqueued)."""
        async with self._lock:
            if not self._started:
                await self._close_engine()
                return
            self._started = False
            await self._teardown()

    async def _teardown(self) -> None:
        for plugin in self._plugins:
            await plugin.stop()
        self._plugins = []
        self._stager = None
        if self._leader is not None:
            await self._leader.resign()
            self._leader = None
        grace, timeout = self._shutdown_limits()
        await asyncio.gather(*(p.stop(grace, timeout) for p in self._producers.values()))
        if self._acker is not None:
            await self._acker.stop()
            self._acker = None
        await asyncio.gather(*(p.forget() for p in self._producers.values()))
        self._producers.clear()
        for task in list(self._background):
            await cancel_and_wait(task)
        if self._notifier is not None:
            await self._notifier.stop()
            self._notifier = None
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
        await close_pool()  # idle children of isolation="process" workers
        await self._close_engine()

    def _shutdown_limits(self) -> tuple[float | None, float | None]:
        """The grace period for running jobs, and how long in all a stop waits for jobs in
        threads (which cannot be cancelled): a second grace period."""
        grace = self.config.shutdown_grace_period
        return grace, None if grace is None else 2 * grace

    def _threads_busy(self) -> int:
        """How many jobs run in this instance's worker threads (after a ``stop()`` that
        outwaited its deadline: threads still finishing jobs handed back for rescue)."""
        return 0 if self._executor is None else self._executor.threads_busy

    async def _close_engine(self) -> None:
        await self._waiters.stop()
        listener, self._relay_listener = self._relay_listener, None
        if listener is not None:
            await listener.stop()
        if not self._engine_ready:
            return
        self._engine_ready = False
        if self.sqlite_path is not None:
            await self._engine.close()  # type: ignore[attr-defined]
        elif self._owns_pool and self.pool is not None:
            await self.pool.close()
            self._renew_pool()  # a closed pool cannot reopen: a fresh one for a later start()

    async def _after_rescue(self) -> None:
        """Rescued jobs are available again: wake this node's producers now and, on
        PostgreSQL, stage at once, which notifies every node's queues that have available
        jobs (rather than leave them for the next poll or staging pass)."""
        self._wake(list(self._producers))
        if self._stager is not None and self._stager.leader_only:
            await self._stager.stage()

    def _wake(self, queues: Iterable[str]) -> None:
        for queue in queues:
            producer = self._producers.get(queue)
            if producer is not None:
                producer.notify()

    def _on_insert(self, message: dict[str, Any]) -> None:
        queue = message.get("queue")
        if isinstance(queue, str):
            self._wake([queue])

    def _on_leader(self, message: dict[str, Any]) -> None:
        if self._leader is not None:
            self._leader.on_message(message)

    def _on_reconnect(self) -> None:
        if self._started:  # not while stop() takes the runtime down
            self._spawn(self._recover())

    async def _recover(self) -> None:
        """After an outage the database may have restarted: its unlogged peer and producer
        tables are empty and pooled connections broken. Replace the broken connections, then
        elect and heartbeat (restoring producer rows) now rather than at the next interval."""
        if self.pool is not None:
            try:
                await self.pool.check()
            except Exception as error:
                logger.warning("could not check the pool's connections: %s", error)
        if self._leader is not None:
            self._leader.poke()
        for plugin in self._plugins:
            if plugin.name == "refresher":
                plugin.poke()
            elif isinstance(plugin, Lifeline):
                plugin.note_outage()

    def _spawn(self, coro: Any, name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_signal(self, message: dict[str, Any]) -> None:
        if SIGNATURE in message or SIGNED_AT in message:  # checked (or not required) already
            message = {k: v for k, v in message.items() if k not in (SIGNATURE, SIGNED_AT)}
        ident = message.get("ident", "any")
        if ident not in ("any", f"{self.name}.{self.node}"):
            return
        problem = _signal_problem(message)
        if problem is not None:
            logger.warning("ignoring a signal (%s): %.200r", problem, message)
            return
        action = message.get("action")
        if action == "pkill":
            job_id = message["job_id"]
            if not any(producer.cancel_job(job_id) for producer in self._producers.values()):
                for producer in self._producers.values():
                    producer.note_kill(job_id)
            return
        queue = message.get("queue")
        if action == "start" and isinstance(queue, str):
            self._spawn(self._start_queue(queue, message))
            return
        if action == "stop" and isinstance(queue, str):
            self._spawn(self._stop_queue(queue))
            return
        targets = (
            list(self._producers.values())
            if queue == "*"
            else [p for q, p in self._producers.items() if q == queue]
        )
        for producer in targets:
            if action == "pause":
                producer.paused = True
            elif action == "resume":
                producer.paused = False
                producer.notify()
            elif (
                action == "scale"
                and _is_limit(message.get("limit"))
                and message["limit"] <= MAX_QUEUE_LIMIT
            ):
                producer.limit = message["limit"]
                producer.notify()
        if action == "scale":
            self._grow_threads()  # sync workers need threads for the new limit
        if targets and action in ("pause", "resume", "scale"):
            # Other nodes read a queue's state from its producer row: update it now rather
            # than at the next heartbeat.
            self._spawn(self._refresh_rows(targets))

    async def _refresh_rows(self, producers: list[Producer]) -> None:
        try:
            await self._engine.refresh_producers([(p.uuid, p.producer_meta()) for p in producers])
        except Exception as error:
            logger.warning("could not update producer rows after a signal: %s", error)

    async def _start_queue(self, queue: str, message: dict[str, Any]) -> None:
        # A start signal from any node: checked as start_queue checks its arguments.
        try:
            opts = _signalled_queue_options(queue, message)
            await self._run_queue(queue, opts)
        except Exception as error:
            logger.warning("could not start queue %r on a signal: %s", queue, error)

    async def _run_queue(self, queue: str, opts: dict[str, Any], *, boot: bool = False) -> None:
        """Run ``queue`` here if this instance is started. With ``boot``, an instance created
        without queues first starts what running one takes (thread pool, executor, acker,
        notifier subscription, stager, refresher); ``stop()`` stops it all."""
        if boot and self._acker is None:
            async with self._lock:
                if self._started and self._acker is None and queue not in self._producers:
                    await self._boot({queue: opts})
                    return
        if queue in self._producers or not self._started or self._acker is None:
            return
        producer = self._make_producer(queue, opts)
        self._producers[queue] = producer
        try:
            await producer.start()
        except Exception:
            self._producers.pop(queue, None)
            raise
        self._grow_threads()

    async def _stop_queue(self, queue: str) -> None:
        producer = self._producers.pop(queue, None)
        if producer is None:
            return
        await producer.stop(*self._shutdown_limits())
        if self._acker is not None:
            await self._acker.flush()
        await producer.forget()

    def _grow_threads(self) -> None:
        if self._threads is not None:
            total = sum(p.limit for p in self._producers.values())
            # ThreadPoolExecutor creates threads lazily up to this bound.
            self._threads._max_workers = max(self._threads._max_workers, total)

    # The synchronous API

    @functools.cached_property
    def sync(self) -> SyncOban:
        """This instance's synchronous view: the same methods and arguments as its coroutines
        (``enqueue``, ``enqueue_many``, ``get_job``, ``list_jobs``, ``cancel_job``, ...),
        returning their results, for code without a running event loop. ``enqueue`` and
        ``enqueue_many`` also take a synchronous ``conn=`` (psycopg, SQLAlchemy, sqlite3) to
        insert inside the caller's transaction. Thread safe; see docs/sync.md.

        >>> job = oban.sync.enqueue(Mailer.new({"to": "ada"}))  # doctest: +SKIP
        """
        return SyncOban(self)

    # Enqueueing

    async def enqueue(self, job: Job, *, conn: Any = None) -> Job:
        """Insert one job and return it with ``id``, ``state`` and timestamps set.

        ``conn`` (a psycopg ``AsyncConnection``, or a SQLAlchemy ``AsyncConnection`` /
        ``AsyncSession``) inserts inside the caller's transaction: rolled back, no job.
        """
        jobs = await self.enqueue_many([job], conn=conn)
        return jobs[0]

    async def enqueue_many(
        self, jobs_or_first: Job | Iterable[Job], /, *rest: Job, conn: Any = None
    ) -> list[Job]:
        """Insert many jobs in one statement; accepts an iterable or several jobs."""
        inline = is_inline()
        jobs = _job_batch(jobs_or_first, rest, inline=inline)
        if inline:
            for job in jobs:
                await run_inline(job)
            return jobs
        if conn is None and _hooks.async_enqueuer and not self._started:
            handled = await _hooks.async_enqueuer[0](self, jobs)
            if handled is not None:
                return handled
        if not has_span_handlers("oban.enqueue"):
            return await (await self._ready_for(conn)).insert_jobs(jobs, conn=conn)
        # Handlers of oban.enqueue.start may still add to each job's meta (trace context).
        with telemetry.span("oban.enqueue", {"jobs": jobs, "count": len(jobs)}):
            return await (await self._ready_for(conn)).insert_jobs(jobs, conn=conn)

    async def _ready_for(self, conn: Any) -> Engine:
        """The engine for an insert on ``conn``. On SQLite the caller's connection may hold
        the file's write lock, which opening and installing on our own connection would wait
        for (a deadlock: the caller waits for us): before the engine is ready, everything
        this call needs runs on the caller's connection instead."""
        if conn is None or self._engine_ready or self.sqlite_path is None:
            return await self._ready()
        engine: Any = self._engine
        async with self._ready_lock:
            if not self._engine_ready:
                if await engine.try_open(_CALLER_LOCK_WAIT):
                    self._engine_ready = True
                    logger.info(
                        "%s (node %s) uses %s", self.name, self.node, await self._database()
                    )
                else:
                    await engine.install_on(conn)
        return self._engine

    # Jobs

    async def get_job(self, job_id: int | Job) -> Job | None:
        """The job with ``job_id`` as it is now in the database, or ``None`` (also for a
        ``Job`` never inserted).

        Raises:
            TypeError: ``job_id`` is neither a ``Job`` nor an ``int`` (``1.5``, ``True``, ``"1"``).
            ValueError: ``job_id`` is outside the 64-bit range of job ids.
        """
        if isinstance(job_id, Job) and job_id.id is None:
            return None
        [key] = _ids([job_id])
        found = await (await self._ready()).get_jobs([key])
        return found[0] if found else None

    # Results

    async def wait_for(
        self,
        job: Job | int,
        *,
        timeout: float | None = 30.0,
        with_retries: bool = False,
        poll_interval: float = 0.5,
        allow_nested: bool = False,
    ) -> JobOutcome:
        """Wait until ``job`` (a ``Job`` or an id) finishes, however it was enqueued, and say
        how: a :class:`JobOutcome` with its state, the value it recorded and its last error.
        Never raises for the job's fate: a timeout returns ``done=False``.

        The wait ends at ``completed``, ``cancelled`` or ``discarded``, at ``retryable``
        unless ``with_retries``, and when the row is gone (``"deleted"``). It hears this
        instance's acks at once, other nodes' acks of jobs enqueued with :meth:`relay`
        through a notification (PostgreSQL), and otherwise reads the row every
        ``poll_interval`` seconds. ``timeout=None`` waits for ever.

        Raises:
            TypeError, ValueError: a bad id, timeout or poll interval.
        """
        [outcome] = await self.await_many(
            [job],
            timeout=timeout,
            with_retries=with_retries,
            poll_interval=poll_interval,
            allow_nested=allow_nested,
        )
        return outcome

    async def await_many(
        self,
        jobs: Iterable[Job | int],
        *,
        timeout: float | None = 30.0,
        with_retries: bool = False,
        poll_interval: float = 0.5,
        allow_nested: bool = False,
    ) -> list[JobOutcome]:
        """:meth:`wait_for` for many jobs at once, within one ``timeout``: their outcomes in
        the order given (``[]`` at once for no jobs). ``stop()`` ends the wait, unfinished."""
        ids = _ids(jobs)
        _check_wait(timeout, poll_interval)
        if not ids:
            return []
        if not allow_nested:
            _warn_if_nested("await_many/wait_for")
        outcomes, _stopped = await self._await(ids, timeout, with_retries, poll_interval)
        return outcomes

    async def _await(
        self,
        ids: list[int],
        timeout: float | None,
        with_retries: bool,
        poll_interval: float,
        window: tuple[int, int] | None = None,
    ) -> tuple[list[JobOutcome], bool]:
        """``await_many`` of ``ids``, and whether the instance stopped before they finished.
        ``window``: the jobs were inserted inside a window of the waiters (open_window) that
        this closes, and :meth:`_hearing` said this before. ``timeout`` counts from here,
        the start of a relay listener included."""
        started = time.monotonic()
        stops = self._waiters.stops  # a stop() before this wait registers ends it too
        try:
            engine = await self._ready()
            if self._waiters.stops == stops:  # not after a stop(): it would stay open
                await self._listen_for_relays(5.0 if timeout is None else min(timeout, 5.0))
            waiter = Waiter(ids, with_retries, poll_interval)
            # Nothing about the jobs can have been missed, unless a wake-up for one came or
            # the listener was not hearing all along: then read them first.
            read_first = window is None or window != self._hearing() or self._waiters.seen(ids)
            self._waiters.add(waiter, read_first, stops)
        finally:
            if window is not None:
                self._waiters.close_window()
        try:
            if timeout is None:
                await waiter.done.wait()
            else:
                # asyncio.timeout, not wait_for: no task of its own, one hand-over less.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, started + timeout - time.monotonic())):
                        await waiter.done.wait()
            if waiter.pending and not waiter.stopped:
                # At the deadline: read once more, a completion just now counts.
                left = sorted(waiter.pending)
                waiter.take(await _read_jobs(engine, left), left)
        finally:
            self._waiters.remove(waiter)
        outcomes = [
            outcome_of(job_id, waiter.latest.get(job_id), job_id not in waiter.pending)
            if job_id in waiter.latest or job_id not in waiter.pending
            else JobOutcome(job_id, UNKNOWN, False)  # stopped before its row was ever read
            for job_id in ids
        ]
        return outcomes, waiter.stopped and bool(waiter.pending)

    async def relay(
        self,
        job: Job,
        *,
        timeout: float | None = 30.0,
        with_retries: bool = False,
        poll_interval: float = 0.5,
        allow_nested: bool = False,
    ) -> Any:
        """Enqueue ``job``, wait for it, and return what its ``process`` returned (``Record``
        unwrapped). ``Worker.relay(args, ...)`` and ``fn.relay(...)`` call this.

        The job is enqueued with ``meta.relay``: its return value is recorded (as
        ``Record(value)`` would) and the node that runs it announces its ack. In inline test
        mode the job runs here, now.

        Raises:
            RelayTimeout: not finished within ``timeout`` (it keeps running; the exception
                carries the job as last read).
            RelayCancelled: cancelled (or ``process`` returned ``Cancel``).
            RelayDiscard: discarded, or deleted before it finished.
            RelayError: an attempt failed and ``with_retries`` is false (``error`` holds the
                formatted exception), or the value could not be recorded.
        """
        if not isinstance(job, Job):
            raise TypeError(f"relay takes a Job, got {type(job).__name__}")
        if not allow_nested:
            _warn_if_nested("relay")
        job.meta = {**job.meta, "relay": True}
        if is_inline():
            return await inline_relay(job)
        _check_wait(timeout, poll_interval)
        hearing = self._hearing()
        if hearing is not None:
            self._waiters.open_window()
        try:
            inserted = await self.enqueue(job)
            ids = _ids([inserted])
        except BaseException:
            if hearing is not None:
                self._waiters.close_window()
            raise
        if inserted.conflict and hearing is not None:
            # A unique job matched an existing one, which may have finished before the
            # window opened: read its row first.
            self._waiters.close_window()
            hearing = None
        [outcome], stopped = await self._await(
            ids, timeout, with_retries, poll_interval, window=hearing
        )
        if inserted.conflict:
            _check_value_recorded(job.worker, outcome)
        return relay_result(job.worker, outcome, timeout, stopped)

    def _hearing(self) -> tuple[int, int] | None:
        """While ``relay`` notifications reach this instance's waiters: which listener hears
        them and its connection's generation (the same at two moments: it heard everything
        in between); else ``None``."""
        listener = self._notifier or self._relay_listener
        if listener is None or not listener.hears("relay"):
            return None
        return (id(listener), listener.generation)

    async def _read_waited(self, ids: list[int]) -> dict[int, Job]:
        return await _read_jobs(await self._ready(), ids)

    def _on_acks_settled(self, batch: list[Ack], written: set[int]) -> None:
        """The acker wrote ``batch`` (committed): wake this instance's waiters for those jobs,
        tell the others of the jobs enqueued with ``relay``, and check the workflows whose
        jobs finished."""
        self._waiters.wake(ack.id for ack in batch)
        if self.pool is not None:
            # The ack statement announced the written ones at its commit (ack_relayed.sql);
            # a killed job's row was written by whoever cancelled it.
            relayed = [
                ack.id for ack in batch if ack.relay and ack.killed and ack.id not in written
            ]
        else:
            relayed = [ack.id for ack in batch if ack.relay and (ack.id in written or ack.killed)]
        if relayed:
            self._announce_relayed(relayed)
        workflows = {
            ack.workflow
            for ack in batch
            if ack.workflow is not None
            and ack.state in _FINISHED
            and (ack.id in written or ack.killed)
        }
        if workflows:
            # Coalesced: while a check runs, later acks' workflows wait for the next one (one
            # statement in flight per instance, whatever the ack rate: a 10,000-to-1 fan-in
            # does not run 200 checks side by side).
            self._release_pending |= workflows
            if self._release_loop is None or self._release_loop.done():
                self._release_loop = asyncio.create_task(
                    self._release_pending_workflows(), name="oban-workflow-release"
                )
                self._background.add(self._release_loop)
                self._release_loop.add_done_callback(self._background.discard)

    async def _release_pending_workflows(self) -> None:
        while self._release_pending:
            workflow_ids, self._release_pending = self._release_pending, set()
            await self._release_workflows(workflow_ids)

    async def _release_workflows(self, workflow_ids: Iterable[str]) -> None:
        try:
            await release_workflows(await self._ready(), workflow_ids, self._on_jobs_changed)
        except Exception as error:  # the sweeper releases them later
            logger.warning("workflow release check failed, the sweeper retries: %s", error)

    def _on_jobs_changed(self, rows: list[tuple[int, str, str, str]]) -> None:
        """Workflow jobs were released or cancelled: wake their waiters, and this node's
        producers of the queues that got available jobs (other nodes hear the NOTIFY)."""
        self._waiters.wake(row[0] for row in rows)
        self._wake({row[2] for row in rows if row[1] == "available"})

    def _announce_relayed(self, ids: list[int]) -> None:
        if self.sqlite_path is not None:
            key = (os.path.realpath(self.sqlite_path), self.prefix)
            step = IDS_PER_NOTIFICATION  # as a notification carries them (relay_ids)
            for i in range(0, len(ids), step):
                _broadcast_local(key, "relay", {"ids": ids[i : i + step]}, skip=self)
            return
        self._spawn(self._notify_relayed(ids), "oban-relay-notify")

    async def _notify_relayed(self, ids: list[int]) -> None:
        step = IDS_PER_NOTIFICATION
        payloads = [encode_payload({"ids": ids[i : i + step]}) for i in range(0, len(ids), step)]
        try:
            await self._engine.notify("relay", payloads)
        except Exception as error:  # waiters elsewhere poll: late, never lost
            logger.warning("could not announce %d relayed jobs: %s", len(ids), error)

    def _on_relay(self, message: dict[str, Any]) -> None:
        ids = relay_ids(message)
        if ids is None:
            drops = self._notifier.dropped if self._notifier is not None else self._local_drops
            drops("relay", "not a list of job ids", message)
            return
        self._waiters.wake(self._not_in_flight(ids))

    def _not_in_flight(self, ids: list[int]) -> list[int]:
        """``ids`` but this node's own acks whose statement has not answered yet (their relay
        notification can arrive first): their rows come with the answer, or, if it never
        comes, the acks wake their waiters when written."""
        if self._acker is None or not self._acker.relaying:
            return ids
        return [job_id for job_id in ids if job_id not in self._acker.relaying]

    def _relay_on_connection(self, message: dict[str, Any]) -> ConnectionWork | bool:
        """A relay notification, met on the listening connection with nothing else queued:
        read the rows waited for there (its backend is awake: it just sent the
        notification), rather than wake the waiters' loop to read them on a pool connection
        (one task switch and one pool checkout more). At most one per packet of notifications
        (see PostgresNotifier._receive): the rest wake the loop."""
        ids = relay_ids(message)
        if ids is None:
            return False  # dropped, with a reason, on the usual path
        wanted = self._waiters.wanted(self._not_in_flight(ids))
        if not wanted:
            return True
        if len(wanted) > _READ_ON_LISTENER:
            self._waiters.wake(wanted)
            return True

        async def read(conn: psycopg.AsyncConnection[Any]) -> None:
            engine = cast(PostgresEngine, self._engine)  # a listener means PostgreSQL
            mark = self._waiters.mark()
            try:
                async with asyncio.timeout(_READ_ON_LISTENER_TIMEOUT):
                    found = await engine.get_jobs_on(conn, wanted)
            except BaseException as error:
                self._waiters.wake(wanted)  # read by the waiters' loop, on the pool
                if _connection_sound(conn, error):
                    return  # the statement failed, not the link: it keeps listening
                raise  # the listener reconnects
            self._waiters.deliver(found, wanted, mark)

        return read

    async def _listen_for_relays(self, wait: float) -> None:
        """On PostgreSQL, make sure ``relay`` notifications reach this instance's waiters: a
        running node hears them already; an instance that only enqueues gets a listener of
        its own (one connection, closed by ``stop()``), or polls if it cannot have one.
        Waits up to ``wait`` seconds for its link (the waits poll meanwhile)."""
        if self.pool is None or self._notifier is not None or self._relay_listener is not None:
            return
        if self.config.notifier.get("type", "postgres") != "postgres":
            return
        listener = PostgresNotifier(
            beat_interval=self.config.notifier.get("beat_interval", 30.0),
            conninfo=self.pool.conninfo,
            connect_kwargs=self.pool.kwargs,
            prefix=self.prefix,
        )
        listener.listen("relay", self._on_relay)
        listener.on_connection["relay"] = self._relay_on_connection
        self._relay_listener = listener
        await listener.start(wait)

    # Workflows

    async def workflow_status(self, workflow: Workflow | Job | str) -> WorkflowStatus:
        """How many of the workflow's jobs are in each state, and whether it is done (given
        as a ``Workflow``, one of its jobs, or its id); one indexed read."""
        workflow_id = workflow_id_of(workflow)
        rows = await (await self._ready()).workflow_jobs(workflow_id)  # type: ignore[attr-defined]
        counts: dict[str, int] = {}
        for _id, state, _name, _deps in rows:
            counts[state] = counts.get(state, 0) + 1
        return status_of(workflow_id, counts)

    async def cancel_workflow(self, workflow: Workflow | Job | str) -> int:
        """Cancel every unfinished job of the workflow, running ones included (as
        :meth:`cancel_many_jobs`); return how many were cancelled."""
        workflow_id = workflow_id_of(workflow)
        rows = await (await self._ready()).workflow_jobs(workflow_id)  # type: ignore[attr-defined]
        unfinished = [job_id for job_id, state, _n, _d in rows if state not in _FINISHED]
        cancelled = await self.cancel_many_jobs(unfinished) if unfinished else 0
        await self._release_workflows([workflow_id])
        return cancelled

    async def workflow_results(self, job: Job | Workflow | str) -> dict[str, Any]:
        """The values the workflow's completed steps returned, by step name: for a ``Job`` of
        the workflow (inside its ``process``), those of its dependencies; for a workflow or
        its id, those of every completed step (``None`` for a step that returned nothing).
        A step not completed is left out."""
        workflow_id = workflow_id_of(job)
        engine = await self._ready()
        rows = await engine.workflow_jobs(workflow_id)  # type: ignore[attr-defined]
        wanted: set[str] | None = None
        if isinstance(job, Job):
            deps = job.meta.get("deps")
            wanted = {d for d in deps if isinstance(d, str)} if isinstance(deps, list) else set()
        ids = [
            job_id
            for job_id, state, name, _deps in rows
            if state == "completed" and isinstance(name, str) and (wanted is None or name in wanted)
        ]
        found = await _read_jobs(engine, ids)
        return {str(row.meta.get("name")): row.recorded for row in found.values()}

    async def wait_for_workflow(
        self,
        workflow: Workflow | Job | str,
        *,
        timeout: float | None = 30.0,
        poll_interval: float = 0.5,
        allow_nested: bool = False,
    ) -> WorkflowStatus:
        """Wait until no job of the workflow can run any more (or ``timeout``), and return its
        status (``done`` false on timeout; ``state`` ``"missing"`` at once when no job of it
        exists)."""
        workflow_id = workflow_id_of(workflow)
        _check_wait(timeout, poll_interval)
        rows = await (await self._ready()).workflow_jobs(workflow_id)  # type: ignore[attr-defined]
        await self.await_many(
            [row[0] for row in rows],
            timeout=timeout,
            with_retries=True,
            poll_interval=poll_interval,
            allow_nested=allow_nested,
        )
        return await self.workflow_status(workflow_id)

    # Querying

    async def list_jobs(
        self,
        *,
        state: str | JobState | Iterable[str | JobState] | None = None,
        queue: str | Iterable[str] | None = None,
        worker: Any = None,
        tags: str | Iterable[str] | None = None,
        args: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        search: str | None = None,
        ids: Iterable[int | Job] | None = None,
        limit: int = 50,
        after: str | None = None,
        scan: int | None = None,
    ) -> JobPage:
        """One page of jobs, newest first, that match every filter given.

        ``state``, ``queue`` and ``worker`` take a value or a list of values (a worker as its
        name, its class or its ``@job`` function); ``tags``: jobs with all of these tags;
        ``args``/``meta``: a dict the job's args/meta contain (as PostgreSQL's ``@>``: nested
        dicts match by key); ``search``: a case-insensitive piece of the worker name or of
        the args' JSON; ``ids``: only these jobs. ``limit`` (1 to 1,000) jobs per page; give
        the page's ``next`` as ``after`` for the following one (keyset paging: no offset,
        no count, as fast on the last page as on the first).

        ``scan`` bounds the work of a filter no index serves (a rare ``search`` reads every
        row): only jobs whose ids lie in the ``scan`` ids below the cursor (or the newest id)
        are examined. The page then ends where the scan ended, with fewer than ``limit`` jobs
        (even none) and a ``next`` cursor that resumes the scan below, while older jobs exist.

        Raises:
            TypeError: a filter, limit or scan of the wrong type.
            ValueError: an unknown state, a limit or scan out of range, a cursor that is not
                one, an id out of range.
        """
        where = job_filter(
            state=state,
            queue=queue,
            worker=worker,
            tags=tags,
            args=args,
            meta=meta,
            search=search,
            ids=ids,
        )
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an integer, got {limit!r}")
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be from 1 to {MAX_PAGE}, got {limit}")
        if scan is not None:
            if isinstance(scan, bool) or not isinstance(scan, int):
                raise TypeError(f"scan must be an integer, got {scan!r}")
            if not 1 <= scan <= MAX_ID:
                raise ValueError(f"scan must be a positive number of ids, got {scan}")
        before = page_after(after)
        engine = await self._ready()
        floor = None
        if scan is not None:
            # The window is fixed now (jobs inserted later wait for the next first page); the
            # newest possible id has no id above it to bound the listing with.
            top = before if before is not None else (await engine.max_job_id(None) or 0) + 1
            if top <= MAX_ID:
                before = top
            floor = top - scan if top > scan else None
        jobs = await engine.list_jobs(where, before, limit + 1, floor)
        if len(jobs) > limit:
            return JobPage(jobs[:limit], str(jobs[limit - 1].id))
        if floor is None:
            return JobPage(jobs, None)
        # The scan ended before the page filled: resume it at the next older job, if any.
        below = await engine.max_job_id(floor)
        return JobPage(jobs, None if below is None else str(below + 1))

    async def count_jobs(
        self,
        by: str | Iterable[str] = ("state",),
        *,
        state: str | JobState | Iterable[str | JobState] | None = None,
        queue: str | Iterable[str] | None = None,
        limit: int = EXACT_COUNT_LIMIT,
    ) -> JobCounts:
        """How many jobs there are, grouped by ``by`` (any of ``"state"`` and ``"queue"``,
        in that order of the key, or nothing for one total), optionally only of some states
        or queues. Groups without jobs are absent.

        Never a pass over the whole table: on PostgreSQL each (state, queue) pair is counted
        exactly up to ``limit`` jobs and estimated by the planner above that (its keys are in
        the result's ``estimated``); SQLite counts exactly.

        Raises:
            ValueError: an unknown ``by`` field or state, or a limit below 1.
        """
        fields = (by,) if isinstance(by, str) else tuple(by)
        for name in fields:
            if name not in COUNT_BY:
                raise ValueError(f"count_jobs can group by {', '.join(COUNT_BY)}, not {name!r}")
        if len(set(fields)) != len(fields):
            raise ValueError(f"count_jobs: {fields!r} names a field twice")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an integer, got {limit!r}")
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        where = job_filter(state=state, queue=queue)
        rows = await (await self._ready()).count_jobs(where.states, where.queues, limit)
        counts: dict[tuple[str, ...], int] = {}
        estimated: set[tuple[str, ...]] = set()
        for row_state, row_queue, is_estimate, count in rows:
            values = {"state": row_state, "queue": row_queue}
            key = tuple(values[name] for name in fields)
            counts[key] = counts.get(key, 0) + count
            if is_estimate:
                estimated.add(key)
        return JobCounts(counts, estimated)

    async def crons(self) -> list[CronInfo]:
        """Every cron entry this instance schedules (the workers of this process declared with
        ``cron=`` for this instance's name), in declaration order: the job it inserts, the
        newest job it inserted (looked up by name through an index, never by reading the
        table) and the next minute it is due, read in its timezone (else the scheduler's).

        >>> [(c.expression, c.next_at) for c in await oban.crons()]  # doctest: +SKIP
        [('*/5 * * * *', datetime.datetime(2024, 5, 1, 12, 5, tzinfo=datetime.timezone.utc))]
        """
        entries = self._cron_entries()
        last: dict[Any, Job] = {}
        if entries:
            names = sorted({entry.name for entry in entries})
            jobs = await (await self._ready()).last_cron_jobs(names)
            last = {job.meta.get("cron_name"): job for job in jobs}
        now = datetime.now(UTC)
        zone = str(self.config.scheduler.get("timezone", "UTC"))
        return [describe(entry, zone, last.get(entry.name), now) for entry in entries]

    async def job_stats(
        self, *, bucket: int = 60, limit: int = STATS_LIMIT, window: int = 3600
    ) -> JobStats:
        """How many jobs finished (completed, discarded, cancelled) in the last ``window``
        seconds, per ``bucket`` seconds and per queue, with the p50 and p95 of their wait
        (``attempted_at - scheduled_at``) and run time (``completed_at - attempted_at``):
        one bounded query along the ``*_at`` indexes of the finished states.

        The buckets are aligned on the epoch and the last one holds the database's now. At
        most the newest ``limit`` finished jobs are read: past that, ``complete_since`` says
        from when the figures are whole.

        Raises:
            TypeError: an argument that is not an integer.
            ValueError: a window that is not a whole number of buckets, more than 1,440
                buckets, a limit below 1.

        >>> stats = await oban.job_stats()                      # doctest: +SKIP
        >>> stats.total("mailers").completed, stats.total("mailers").run_p95  # doctest: +SKIP
        (1250, 0.84)
        """
        window, bucket, limit = check_stats_window(window, bucket, limit)
        return await (await self._ready()).job_stats(window, bucket, limit)

    async def nodes(self) -> list[NodeInfo]:
        """Every node running queues for this instance's name, from :meth:`queues`: its
        queues, how many jobs it is running and when its first queue started."""
        found: dict[str, list[QueueInfo]] = {}
        for info in await self.queues():
            found.setdefault(info.node, []).append(info)
        return [
            NodeInfo(
                node=node,
                queues=sorted({info.queue for info in infos}),
                running=sum(len(info.running) for info in infos),
                started_at=min((i.started_at for i in infos if i.started_at), default=None),
            )
            for node, infos in sorted(found.items())
        ]

    # Queues

    @property
    def notifier_status(self) -> str:
        """How this node hears about new jobs and signals: ``"listening"`` (LISTEN/NOTIFY
        works), ``"polling"`` (the LISTEN connection is down, or ``notifier={"type":
        "poll"}``), ``"local"`` (SQLite: in-process wake-ups plus polling) or
        ``"stopped"``."""
        if self.sqlite_path is not None:
            # In-process wake-ups; other processes' inserts are found by polling.
            return "local" if self._started else "stopped"
        if self._notifier is not None:
            return "listening" if self._notifier.status == "listening" else "polling"
        return "polling" if self._started and self._producers else "stopped"

    def check_queue(self, queue: str) -> QueueInfo | None:
        """This node's view of ``queue``, or ``None`` if it does not run here.

        ``meta`` holds the queue's extra options plus ``"notifier"``, the
        :attr:`notifier_status`.

        Raises:
            TypeError: ``queue`` is not a string.
            ValueError: ``queue`` is blank or too long.

        >>> oban.check_queue("default").limit  # doctest: +SKIP
        10
        """
        _check_queue(queue)
        producer = self._producers.get(queue)
        return self._info(producer) if producer else None

    def check_all_queues(self) -> list[QueueInfo]:
        """This node's view of every queue it runs (see :meth:`check_queue`)."""
        return [self._info(p) for p in self._producers.values()]

    async def queues(self) -> list[QueueInfo]:
        """Every node's queues (this instance's name, on any engine), from the producer rows
        the nodes heartbeat and the jobs they are running: one ``QueueInfo`` per node and
        queue, ordered by queue then node. Unlike :meth:`check_all_queues` (this node only,
        no database access), this reads the database, so it also sees other processes.

        A node that stopped heartbeating for ``refresher.max_age`` is left out.
        """
        max_age = float(self.config.refresher.get("max_age", 60.0))
        rows = await (await self._ready()).list_producers(self.name, max_age)
        infos = []
        for row in rows:
            meta = dict(row.meta)
            limit = meta.pop("local_limit", 0)
            paused = meta.pop("paused", False)
            infos.append(
                QueueInfo(
                    limit=limit if _is_limit(limit) else 0,
                    meta=meta,
                    node=row.node,
                    paused=paused is True,
                    queue=row.queue,
                    running=row.running,
                    started_at=row.started_at,
                    uuid=row.uuid,
                )
            )
        return infos

    def _info(self, producer: Producer) -> QueueInfo:
        info = producer.info()
        info.meta["notifier"] = self.notifier_status
        return info

    async def _signal(self, message: dict[str, Any], node: str | None) -> None:
        message["ident"] = "any" if node is None else f"{self.name}.{node}"
        await (await self._ready()).notify("signal", [encode_payload(self._signed(message))])

    async def pause_queue(self, queue: str, *, node: str | None = None) -> None:
        """Stop fetching from ``queue`` (running jobs finish), here and on other nodes."""
        if node in (None, self.node):
            self._on_signal({"action": "pause", "queue": queue, "ident": "any"})
            # A fetch already in flight may still claim jobs: return once it is done.
            targets = [p for name, p in self._producers.items() if queue in ("*", name)]
            await asyncio.gather(*(p.settled() for p in targets))
        if node != self.node:
            await self._signal({"action": "pause", "queue": queue}, node)

    async def resume_queue(self, queue: str, *, node: str | None = None) -> None:
        """Fetch from ``queue`` again, here and on other nodes."""
        if node in (None, self.node):
            self._on_signal({"action": "resume", "queue": queue, "ident": "any"})
        if node != self.node:
            await self._signal({"action": "resume", "queue": queue}, node)

    async def pause_all_queues(self, *, node: str | None = None) -> None:
        """Pause every queue."""
        await self.pause_queue("*", node=node)

    async def resume_all_queues(self, *, node: str | None = None) -> None:
        """Resume every queue."""
        await self.resume_queue("*", node=node)

    async def scale_queue(
        self, *, queue: str, limit: int, node: str | None = None, **unknown: Never
    ) -> None:
        """Change ``queue``'s concurrency ``limit`` here and on other nodes (or only on
        ``node``); ``queue="*"`` scales every queue. A larger limit fetches at once.

        Raises:
            TypeError: ``queue``, ``limit`` (an ``int``) or ``node`` of the wrong type.
            ValueError: a limit below 1, a blank queue, or an unknown option.

        >>> await oban.scale_queue(queue="media", limit=20)  # doctest: +SKIP
        """
        _reject_unknown(unknown, _SCALE_QUEUE_OPTIONS)
        _check_target(queue, node)
        _check_limit(limit)
        if node in (None, self.node):
            self._on_signal({"action": "scale", "queue": queue, "limit": limit, "ident": "any"})
            self._grow_threads()
        if node != self.node:
            await self._signal({"action": "scale", "queue": queue, "limit": limit}, node)

    async def start_queue(
        self,
        *,
        queue: str,
        limit: int,
        paused: bool = False,
        node: str | None = None,
        debounce_interval: float | None = None,
        **unknown: Never,
    ) -> None:
        """Run ``queue`` here and on the other nodes, or only on ``node``.

        Any started instance runs it, also one created without queues: its first queue
        starts what running jobs takes, and :meth:`stop` stops that again. An instance that
        is not started only tells the other nodes; a queue already running is left alone.

        Args:
            queue: the queue's name.
            limit: how many of its jobs run at once on each node.
            paused: start paused; :meth:`resume_queue` starts fetching.
            node: the one node to start it on.
            debounce_interval: seconds between fetches, as in ``queues=``.

        Raises:
            TypeError: an option of the wrong type, named in the message.
            ValueError: a blank queue, a limit below 1, a negative debounce_interval, or an
                unknown option.
            SchemaNotInstalledError, DatabaseUnavailableError: the first queue of an
                instance without queues could not start.

        >>> await oban.start_queue(queue="reports", limit=2)  # doctest: +SKIP
        """
        _reject_unknown(unknown, _START_QUEUE_OPTIONS)
        _check_target(queue, node)
        opts = _queue_options(limit=limit, paused=paused, debounce_interval=debounce_interval)
        if node in (None, self.node):
            await self._run_queue(queue, opts, boot=True)
        if node != self.node:
            await self._signal({"action": "start", "queue": queue, **_start_signal(opts)}, node)

    async def stop_queue(self, queue: str, *, node: str | None = None) -> None:
        """Stop running ``queue`` (running jobs finish first), here and on other nodes.

        Raises:
            TypeError: ``queue`` or ``node`` of the wrong type.
            ValueError: a blank queue.

        >>> await oban.stop_queue("reports")  # doctest: +SKIP
        """
        _check_target(queue, node)
        if node in (None, self.node):
            await self._stop_queue(queue)
        if node != self.node:
            await self._signal({"action": "stop", "queue": queue}, node)

    async def cancel_job(self, job: Job | int) -> int:
        """Cancel one job; see :meth:`cancel_many_jobs`."""
        return await self.cancel_many_jobs([job])

    async def cancel_many_jobs(self, jobs: Iterable[Job | int]) -> int:
        """Cancel incomplete jobs, running ones included; return how many were cancelled.

        Every job not yet finished becomes ``cancelled`` at once, with ``cancelled_at``. A
        running job is also stopped on whichever node runs it: an async job's task is
        cancelled there (its ``finally`` blocks run); a sync job, which a thread cannot
        interrupt, sees ``job.cancelled()`` turn true and ends cancelled whatever it returns.
        Its errors record ``"cancelled while executing"``. Finished jobs are left alone.
        The ``oban.job.cancel`` telemetry event lists the ids, and which of them were running.
        """
        ids = _ids(jobs)
        if not ids:
            return 0
        cancelled, executing = await (await self._ready()).cancel_jobs(ids)
        if executing:
            logger.info("cancelled %d running jobs, stopping them: %s", len(executing), executing)
            messages = [{"action": "pkill", "job_id": job_id} for job_id in executing]
            for message in messages:
                self._on_signal({**message, "ident": "any"})
            await (await self._ready()).notify(
                "signal", [encode_payload(self._signed({**m, "ident": "any"})) for m in messages]
            )
        telemetry.execute(
            "oban.job.cancel",
            {"ids": sorted(cancelled + executing), "running": executing},
        )
        self._waiters.wake(cancelled + executing)
        return len(cancelled) + len(executing)

    async def retry_job(self, job: Job | int) -> int:
        """Retry one job; see :meth:`retry_many_jobs`."""
        return await self.retry_many_jobs([job])

    async def retry_many_jobs(self, jobs: Iterable[Job | int]) -> int:
        """Make jobs available to run now; return how many changed.

        Applies to every state except ``available`` and ``executing``. A job that used all
        its attempts gets one more; finished timestamps are cleared.
        """
        return await (await self._ready()).retry_jobs(_ids(jobs))

    async def delete_job(self, job: Job | int) -> int:
        """Delete one job; see :meth:`delete_many_jobs`."""
        return await self.delete_many_jobs([job])

    async def delete_many_jobs(self, jobs: Iterable[Job | int]) -> int:
        """Delete jobs that are not executing; return how many were deleted."""
        ids = _ids(jobs)
        deleted = await (await self._ready()).delete_jobs(ids)
        self._waiters.wake(ids)
        return deleted

    async def update_job(
        self, job: Job | int, changes: dict[str, Any] | Callable[[Job], dict[str, Any]]
    ) -> Job:
        """Update one job; see :meth:`update_many_jobs`. Returns the updated job.

        Raises:
            ValueError: the job does not exist, is executing, or a change is invalid.
        """
        updated = await self.update_many_jobs([job], changes)
        if not updated:
            raise ValueError(
                f"job {_ids([job])[0]} is executing (or changed state while being updated) "
                "and was not updated"
            )
        return updated[0]

    async def update_many_jobs(
        self,
        jobs: Iterable[Job | int],
        changes: dict[str, Any] | Callable[[Job], dict[str, Any]],
    ) -> list[Job]:
        """Change args, max_attempts, meta, priority, queue, scheduled_at/scheduled_in, tags
        or worker of jobs that are not running; return them as stored.

        ``changes`` is a dict, or a callable ``job -> dict`` for per-job changes. Each job is
        re-validated. Waiting jobs become ``scheduled`` or ``available`` by their new
        ``scheduled_at``. Executing jobs, and jobs whose state changes between the read and
        the write, are not changed (and not returned).

        Raises:
            ValueError: an id that does not exist, or an invalid change.
        """
        ids = _ids(jobs)
        current = {job.id: job for job in await (await self._ready()).get_jobs(ids)}
        missing = [i for i in ids if i not in current]
        if missing:
            raise ValueError(f"cannot update jobs that do not exist: {missing}")
        for job in current.values():
            job.update(changes(job) if callable(changes) else changes)
        return await (await self._ready()).update_jobs(list(current.values()))


def _job_batch(
    jobs_or_first: Job | Iterable[Job], rest: Iterable[Job], *, inline: bool
) -> list[Job]:
    """The jobs ``enqueue_many`` (async or sync) was given, checked to be ``Job`` objects;
    unless ``inline``, a worker other processes cannot import is warned about."""
    if isinstance(jobs_or_first, Job):
        jobs = [jobs_or_first, *rest]
    else:
        jobs = [*jobs_or_first, *rest]
    for job in jobs:
        if not isinstance(job, Job):
            raise TypeError(f"enqueue_many takes Job objects, got {type(job).__name__}")
        if not inline:
            warn_if_unimportable(job.worker)
    return jobs


def _check_wait(timeout: float | None, poll_interval: float) -> None:
    for name, value in (("timeout", timeout), ("poll_interval", poll_interval)):
        if value is None and name == "timeout":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or value < 0 or (name == "poll_interval" and value == 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def _warn_if_nested(call: str) -> None:
    running = current_job()
    if running is not None:
        warnings.warn(
            f"{call} called inside job {running.id} ({running.worker}): if every slot of the "
            "queue that runs the awaited job is held by jobs that wait like this one, none "
            "finishes (pass allow_nested=True when that cannot happen)",
            RuntimeWarning,
            stacklevel=_callers_level(),
        )


def _callers_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside oban (the line
    that called ``relay``/``wait_for``), so each such line is warned about once."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


async def _read_jobs(engine: Engine, ids: list[int]) -> dict[int, Job]:
    found: dict[int, Job] = {}
    for start in range(0, len(ids), 500):
        for row in await engine.get_jobs(ids[start : start + 500]):
            found[row.id] = row  # type: ignore[index]
    return found


def _connection_sound(conn: psycopg.AsyncConnection[Any], error: BaseException) -> bool:
    """Whether ``conn`` is fit to go on after a statement on it raised ``error``: an error
    the server sent about the statement, not a lost link, a timeout (the statement may still
    run) or a cancellation."""
    if not isinstance(error, psycopg.DatabaseError) or isinstance(error, psycopg.OperationalError):
        return False
    return not (conn.closed or conn.broken)


def _check_value_recorded(worker: str, outcome: JobOutcome) -> None:
    """A unique ``relay`` that matched an existing job: that job completed without recording
    its value (enqueued without relay, and ``process`` did not return ``Record``)."""
    job = outcome.job
    if outcome.state != "completed" or job is None or job.meta.get("recorded") is True:
        return
    if outcome.error is not None:
        return  # relay_result raises with it
    raise RelayError(
        f"{worker} (job {outcome.id}): the relay matched this existing unique job, which "
        "completed without recording its return value (it was enqueued without relay): "
        "there is no value to return",
        job,
        None,
    )


def relay_result(
    worker: str, outcome: JobOutcome, timeout: float | None, stopped: bool = False
) -> Any:
    """What ``relay`` returns for ``outcome``, or the exception it raises (the message has the
    last line of the job's error; the exception's ``error``, all of it). ``stopped``: the
    instance stopped before the job finished."""
    where = f"{worker} (job {outcome.id})"
    error = outcome.error
    reason = f": {error.strip().splitlines()[-1]}" if error and error.strip() else ""
    if not outcome.done:
        why = "before the instance stopped" if stopped else f"within {timeout}s"
        raise RelayTimeout(
            f"{where} did not finish {why} (it is {outcome.state})", outcome.job, error
        )
    if outcome.state == "completed":
        if error is not None:
            raise RelayError(f"{where} completed, but {error}", outcome.job, error)
        return outcome.value
    if outcome.state == "cancelled":
        raise RelayCancelled(f"{where} was cancelled{reason}", outcome.job, error)
    if outcome.state == "discarded":
        raise RelayDiscard(f"{where} was discarded{reason}", outcome.job, error)
    if outcome.state == DELETED:
        raise RelayDiscard(f"{where} was deleted before it finished", None, None)
    raise RelayError(f"{where} failed{reason}", outcome.job, error)


#: Ack states after which a job never runs again (unless retried by hand).
_FINISHED = frozenset({"completed", "cancelled", "discarded"})
#: A relay notification naming at most this many jobs waited for here has their rows read on
#: the listening connection (see Oban._relay_on_connection); within this many seconds, or the
#: listener reconnects and the waiters' loop reads them.
_READ_ON_LISTENER = 50
_READ_ON_LISTENER_TIMEOUT = 5.0

_ID_MIN = -(2**63)
_ID_MAX = 2**63 - 1


def _ids(jobs: Iterable[Job | int]) -> list[int]:
    """The ids of ``jobs`` (Jobs or ints), checked: each an ``int`` (not a ``bool``, a float or
    a string) within the 64-bit range both engines store ids in."""
    if isinstance(jobs, Job | int | str | bytes | bytearray) or not isinstance(jobs, Iterable):
        raise TypeError(
            f"expected an iterable of Jobs or integer ids, got {type(jobs).__name__} {jobs!r}"
        )
    ids: list[int] = []
    for job in jobs:
        key = job.id if isinstance(job, Job) else job
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"expected a Job with an id or an integer id, got {job!r}")
        if not _ID_MIN <= key <= _ID_MAX:
            raise ValueError(f"job ids are 64-bit integers, got {key}")
        ids.append(key)
    return ids


#: Configuration options of ``oban start`` alone, each with why ``Oban(...)`` refuses it
#: (from ``OBAN_*`` or ``oban.toml`` they are read and ignored: an instance is one node).
_DEPLOYMENT_OPTIONS = {
    "processes": "processes is an `oban start` setting (it runs that many node processes "
    "under one supervisor); an Oban instance is one node in one process: use "
    "`oban start --processes N`, OBAN_PROCESSES or `processes = N` in oban.toml",
}
#: The keyword arguments of ``Oban(...)``: every configuration option but the deployment
#: ones, ``pool`` and ``dispatcher``.
_INIT_OPTIONS = frozenset(
    {*(f.name for f in dataclasses.fields(Config)), "dispatcher", "pool"} - set(_DEPLOYMENT_OPTIONS)
)
#: The options ``Oban(...)`` takes with ``None`` for "not given" (``shutdown_grace_period``
#: uses UNSET: its ``None`` means "wait for ever").
_CONFIG_FIELDS = tuple(sorted(_INIT_OPTIONS - {"dispatcher", "pool", "shutdown_grace_period"}))
_SCALE_QUEUE_OPTIONS = ("limit", "node", "queue")
#: Seconds a transactional enqueue on SQLite waits to open the instance's own connection
#: before it does what it needs on the caller's (whose transaction may hold the write lock).
_CALLER_LOCK_WAIT = 0.05
_START_QUEUE_OPTIONS = ("debounce_interval", "limit", "node", "paused", "queue")
#: What a start signal may carry besides its options.
_SIGNAL_FIELDS = frozenset({"action", "ident", "queue"})
#: What a scale signal may carry besides its limit: Elixir's ``Oban.scale_queue/2`` also
#: sends the ``node`` and ``local_only`` it was given (its producer drops them too).
_SCALE_SIGNAL_FIELDS = frozenset({*_SIGNAL_FIELDS, "local_only", "node"})
_QUEUE_SIGNALS = frozenset({"pause", "resume", "scale", "start", "stop"})


#: oban-py 0.7.0 metrics options for Oban Met's counts and crontab, which are not gossiped yet.
_METRICS_NOT_IMPLEMENTED = {
    "counts_enabled": "queue/state counts",
    "cronitor_interval": "crontab sharing",
    "estimate_limit": "queue/state counts",
}


def _gossip_options(metrics: bool | dict[str, Any] | None) -> dict[str, Any] | None:
    """The :class:`Gossip` options ``metrics`` asks for, or ``None`` when gossip is off.

    Raises:
        OptionNotImplementedError: a metrics key for something not gossiped yet (counts,
            crontab); ``counts_enabled=False`` asks for what this node does and is accepted.
    """
    if metrics is None or metrics is False:
        return None
    options = dict(metrics) if isinstance(metrics, dict) else {}
    if options.get("counts_enabled") is False:
        del options["counts_enabled"]
    for key in sorted(options.keys() & _METRICS_NOT_IMPLEMENTED.keys()):
        raise OptionNotImplementedError(
            f"metrics.{key} is not implemented yet: only queue checks are gossiped, not "
            f"{_METRICS_NOT_IMPLEMENTED[key]}; remove {key} from metrics"
        )
    return options


def _reject_unknown(given: Iterable[str], known: Iterable[str]) -> None:
    for key in given:
        raise _unknown_option(key, known)


def _check_queue(queue: object) -> None:
    if not isinstance(queue, str):
        raise TypeError(f"queue must be a str, got {type(queue).__name__}: {queue!r}")
    if not queue.strip() or len(queue) > MAX_NAME_LENGTH:
        raise ValueError(
            f"queue must be a non-blank name of at most {MAX_NAME_LENGTH} characters, got {queue!r}"
        )


def _check_target(queue: object, node: object) -> None:
    _check_queue(queue)
    if node is not None and not isinstance(node, str):
        raise TypeError(f"node must be a str or None, got {type(node).__name__}: {node!r}")


def _is_limit(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {type(limit).__name__}: {limit!r}")
    if limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if limit > MAX_QUEUE_LIMIT:
        raise ValueError(f"limit must be at most {MAX_QUEUE_LIMIT:,}, got {limit!r}")
    return limit


def _queue_options(*, limit: object, paused: object, debounce_interval: object) -> dict[str, Any]:
    """The producer options of a queue started at runtime, checked."""
    if not isinstance(paused, bool):
        raise TypeError(f"paused must be a bool, got {type(paused).__name__}: {paused!r}")
    opts: dict[str, Any] = {"limit": _check_limit(limit), "paused": paused}
    if debounce_interval is None:
        return opts
    if isinstance(debounce_interval, bool) or not isinstance(debounce_interval, int | float):
        raise TypeError(
            "debounce_interval must be a number of seconds, got "
            f"{type(debounce_interval).__name__}: {debounce_interval!r}"
        )
    if not 0 <= debounce_interval < math.inf:
        raise ValueError(f"debounce_interval must be 0 or more seconds, got {debounce_interval!r}")
    opts["debounce_interval"] = debounce_interval
    return opts


def _signal_problem(message: dict[str, Any]) -> str | None:
    """What makes a signal from another node (or any database login) invalid, checked as the
    public API checks the same request; ``None`` if it may be acted on. Actions this node
    does not know are ignored, as Elixir's producers ignore them."""
    action = message.get("action")
    if action == "pkill":
        job_id = message.get("job_id")
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            return f"job_id must be an integer, got {job_id!r}"
        return None
    if not isinstance(action, str) or action not in _QUEUE_SIGNALS:
        return None
    try:
        _check_queue(message.get("queue"))
        if action == "scale":
            known = _SCALE_SIGNAL_FIELDS | {"limit"}
            _reject_unknown([k for k in message if k not in known], ["limit"])
            _check_limit(message.get("limit"))
    except (TypeError, ValueError) as error:
        return str(error)
    return None


#: The options a start signal may carry. ``dispatch_cooldown`` is Elixir's name and unit for
#: the least time between fetches (whole milliseconds), what :meth:`Oban.start_queue` sends;
#: ``debounce_interval`` (seconds) is what Python nodes sent before. Elixir's
#: ``Oban.start_queue/2`` may also send ``local_only`` (its Midwife drops it: the signal's
#: ident already addresses it) and ``refresh_interval`` (ms between an Elixir producer's
#: heartbeats; ours heartbeat on the refresher's interval): both are checked, then ignored.
_START_SIGNAL_OPTIONS = frozenset(
    {"debounce_interval", "dispatch_cooldown", "limit", "local_only", "paused", "refresh_interval"}
)
#: Erlang timers take at most 2**32 - 1 ms: a longer cooldown would crash an Elixir producer.
_MAX_COOLDOWN_MS = 2**32 - 1


def _signalled_queue_options(queue: str, message: dict[str, Any]) -> dict[str, Any]:
    """A start signal's options, checked as :meth:`Oban.start_queue` checks its arguments."""
    _reject_unknown(
        [k for k in message if k not in _SIGNAL_FIELDS | _START_SIGNAL_OPTIONS],
        _START_SIGNAL_OPTIONS,
    )
    _check_queue(queue)
    debounce = message.get("debounce_interval")
    cooldown = message.get("dispatch_cooldown")
    if cooldown is not None:
        if isinstance(cooldown, bool) or not isinstance(cooldown, int) or cooldown < 0:
            raise ValueError(f"dispatch_cooldown must be whole milliseconds, got {cooldown!r}")
        if debounce is None:
            debounce = cooldown / 1000
    if not isinstance(message.get("local_only", False), bool):
        raise TypeError(f"local_only must be a bool, got {message['local_only']!r}")
    if "refresh_interval" in message and not _is_limit(message["refresh_interval"]):
        raise ValueError(
            f"refresh_interval must be a positive integer, got {message['refresh_interval']!r}"
        )
    return _queue_options(
        limit=message.get("limit"),
        paused=message.get("paused", False),
        debounce_interval=debounce,
    )


def _start_signal(opts: dict[str, Any]) -> dict[str, Any]:
    """A queue's start options as Elixir's nodes read them from a start signal.

    Elixir's Midwife makes every key of the signal an existing atom and hands them to the
    queue's producer: an unknown key (``debounce_interval``) crashes it, and restarting it
    restarts every queue of that node. So the debounce goes as the producer's own option,
    ``dispatch_cooldown``, in whole milliseconds (at least 1, Elixir's ``pos_integer``),
    which Python nodes read back as seconds.
    """
    sent: dict[str, Any] = {"limit": opts["limit"], "paused": opts["paused"]}
    debounce = opts.get("debounce_interval")
    if debounce is not None:
        sent["dispatch_cooldown"] = min(max(1, round(debounce * 1000)), _MAX_COOLDOWN_MS)
    return sent


def _report_unique_conflicts(counts: dict[str, int]) -> None:
    """Unique jobs staging discarded because another job holds their key (queue to count):
    the ``oban.unique.conflict`` event and a warning, per queue."""
    for queue, count in counts.items():
        telemetry.execute("oban.unique.conflict", {"queue": queue, "count": count, "at": "stage"})
        logger.warning(
            "discarded %d job(s) of queue %r at staging: another job holds their unique key "
            "(meta.unique_conflict)",
            count,
            queue,
        )
