"""The synchronous API: ``oban.sync`` (a :class:`SyncOban`) and the event loop its calls run on.

Without ``conn=``, a sync call runs the instance's own coroutine to its end on the event loop
that owns what the instance has open, and waits for it:

* the loop its PostgreSQL pool was opened on, or its SQLite connection is used from (where a
  running node lives too), when that loop runs in another thread: the call is handed to it
  with ``asyncio.run_coroutine_threadsafe``;
* otherwise one private loop per process, on a daemon thread named ``oban-sync`` started by
  the first such call; at interpreter exit, what instances opened on it is closed and it stops.

The calling thread never gets an event loop of its own, so a script or a WSGI worker makes no
loop per call and leaves none behind. A sync call made inside a running event loop raises
(it would block that loop, or wait for ever on it): ``await`` the async method there.

With ``conn=``, an insert runs on the caller's connection in the caller's thread, inside its
transaction (``Engine.insert_jobs_sync``): no event loop at all.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Never, TypeVar

from . import _hooks, decorators, telemetry
from ._modes import is_inline, run_inline
from ._query import (
    EXACT_COUNT_LIMIT,
    STATS_LIMIT,
    CronInfo,
    JobCounts,
    JobPage,
    JobStats,
    NodeInfo,
)
from ._results import JobOutcome
from .job import Job, JobState
from .telemetry.core import has_span_handlers
from .workflow import Workflow, WorkflowStatus

if TYPE_CHECKING:
    from ._producer import QueueInfo
    from .oban import Oban

__all__ = ["THREAD_NAME", "SyncOban", "run_blocking"]

logger = logging.getLogger("oban")

T = TypeVar("T")

#: The name of the private event loop's thread.
THREAD_NAME = "oban-sync"
#: Seconds between checks that the loop running a sync call still runs.
_STOPPED_CHECK = 1.0
#: Seconds the exit gives the instances opened on the private loop to close, and its thread
#: to end.
EXIT_TIMEOUT = 5.0


class _LoopThread:
    """An event loop running for ever on a daemon thread of its own."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        #: Instances whose calls ran here: what they opened here is closed at exit.
        self.users: weakref.WeakSet[Oban] = weakref.WeakSet()
        self.thread = threading.Thread(target=self._main, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self._finish()

    def _finish(self) -> None:
        loop = self.loop
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def close(self, timeout: float = EXIT_TIMEOUT) -> None:
        """Close what the instances opened on this loop (within ``timeout``), then stop it."""
        if self.pid != os.getpid() or not self.thread.is_alive():
            return
        release = asyncio.run_coroutine_threadsafe(self._release(timeout), self.loop)
        try:
            release.result(timeout + 1.0)
        except Exception as error:
            logger.warning("oban-sync: could not close every instance at exit: %r", error)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)

    async def _release(self, timeout: float) -> None:
        with _lock:
            owned = [o for o in self.users if o._engine.bound_loop() is self.loop]
        results = await asyncio.gather(
            *(asyncio.wait_for(o.stop(), timeout) for o in owned), return_exceptions=True
        )
        for instance, result in zip(owned, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("oban-sync: could not stop %s at exit: %r", instance.name, result)


_lock = threading.Lock()
_private: _LoopThread | None = None
#: Every private loop this process (or the one it was forked from) made, with its pid.
_private_pids: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = (
    weakref.WeakKeyDictionary()
)


def _private_loop(user: Oban | None) -> asyncio.AbstractEventLoop:
    """The private loop (started on first use; anew in a forked child)."""
    global _private
    with _lock:
        if _private is None or _private.pid != os.getpid() or not _private.thread.is_alive():
            first = _private is None
            _private = _LoopThread()
            _private_pids[_private.loop] = _private.pid
            if first:
                atexit.register(_close_private)
        if user is not None:
            _private.users.add(user)
        return _private.loop


def _close_private() -> None:
    with _lock:
        private = _private
    if private is not None:
        private.close()


def _owner_loop(oban: Oban) -> asyncio.AbstractEventLoop | None:
    """The loop that must run ``oban``'s calls, if any; checked to be usable from here."""
    loop = oban._engine.bound_loop()
    if loop is None:
        return None
    if _private_pids.get(loop, os.getpid()) != os.getpid():
        raise RuntimeError(
            f"Oban instance {oban.name!r} opened its database before this process was forked: "
            "its connections belong to the parent; create the instance in the child"
        )
    if loop.is_closed():
        raise RuntimeError(
            f"Oban instance {oban.name!r}: its database connections belong to an event loop "
            "that has closed, so they cannot be used any more. Stop the instance "
            "(`await oban.stop()`) before its loop ends (a later sync call then opens them "
            "again), or make a new instance"
        )
    if not loop.is_running():
        raise RuntimeError(
            f"Oban instance {oban.name!r}: its database connections belong to an event loop "
            "that is not running, so a synchronous call cannot run there: run the async call "
            "on that loop (`loop.run_until_complete(oban.<method>(...))`), or keep the loop "
            "running in a thread of its own to use oban.sync from other threads"
        )
    return loop


def run_blocking(
    call: Callable[[], Coroutine[Any, Any, T]],
    what: str,
    instead: str,
    oban: Oban | None = None,
) -> T:
    """Run the coroutine ``call()`` makes to its end on the loop that owns ``oban``'s
    connections (or the private loop) and return its result (or raise its exception).

    ``what`` names the sync call and ``instead`` the async one, for the error raised inside a
    running event loop.

    Raises:
        RuntimeError: called inside a running event loop, or ``oban``'s connections belong to
            a loop that has stopped.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            f"{what} waits for the database, and it was called inside a running event loop "
            f"(this thread's), which it would block: there, use `{instead}`"
        )
    loop = _owner_loop(oban) if oban is not None else None
    if loop is None:
        loop = _private_loop(oban)
    coroutine = call()
    try:
        # The task runs in a copy of this thread's context (contextvars: testing mode, tracing).
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    except BaseException:
        coroutine.close()
        raise
    try:
        while not future.done():
            concurrent.futures.wait((future,), timeout=_STOPPED_CHECK)
            if not future.done() and not loop.is_running():
                raise RuntimeError(
                    f"{what}: the event loop running it stopped before the call finished"
                )
        return future.result()
    except BaseException:
        future.cancel()  # interrupted here (KeyboardInterrupt): stop it there too
        raise


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _run_inline(jobs: list[Job]) -> None:
    for job in jobs:
        await run_inline(job)


class SyncOban:
    """The synchronous view of an :class:`~oban.Oban` instance: ``oban.sync``.

    The same methods, with the same arguments, as the instance's coroutines, returning their
    results instead: for code without a running event loop (scripts, Django and Flask views,
    WSGI apps, management commands, sync workers). Safe to call from many threads at once.
    Exceptions are those of the async calls.

    ``enqueue`` and ``enqueue_many`` take ``conn=``: a psycopg ``Connection``/``Cursor``, a
    SQLAlchemy ``Connection``/``Session`` (on psycopg, or on sqlite3 for the SQLite engine) or
    a ``sqlite3`` ``Connection``/``Cursor``: the jobs are inserted in that transaction, by one
    statement on that connection, in the calling thread. See docs/sync.md.

    >>> oban = Oban(dsn="postgresql://localhost/app")  # doctest: +SKIP
    >>> job = oban.sync.enqueue(Mailer.new({"to": "ada"}))  # doctest: +SKIP
    >>> oban.sync.get_job(job.id).state  # doctest: +SKIP
    'available'
    """

    __slots__ = ("_oban",)

    def __init__(self, oban: Oban) -> None:
        self._oban = oban

    def __repr__(self) -> str:
        return f"<SyncOban of {self._oban.name!r}>"

    def _run(
        self,
        method: str,
        call: Callable[[], Coroutine[Any, Any, T]],
        names: tuple[str, str] | None = None,
    ) -> T:
        what, instead = names or (f"oban.sync.{method}()", f"await oban.{method}(...)")
        return run_blocking(call, what, instead, self._oban)

    # Enqueueing

    def enqueue(self, job: Job, *, conn: Any = None) -> Job:
        """Insert one job and return it with ``id``, ``state`` and timestamps set; with
        ``conn``, inside that connection's transaction (see :meth:`enqueue_many`)."""
        return self._enqueue("enqueue", job, (), conn)[0]

    def enqueue_many(
        self, jobs_or_first: Job | Iterable[Job], /, *rest: Job, conn: Any = None
    ) -> list[Job]:
        """Insert many jobs in one statement; accepts an iterable or several jobs.

        ``conn``: the caller's synchronous connection (see the class); the statement runs on
        it in this thread, and the jobs commit or roll back with its transaction.

        Raises:
            TypeError: something other than a ``Job``, or a ``conn`` of another kind (named).
        """
        return self._enqueue("enqueue_many", jobs_or_first, rest, conn)

    def _enqueue(
        self,
        method: str,
        jobs_or_first: Job | Iterable[Job],
        rest: Iterable[Job],
        conn: Any,
        names: tuple[str, str] | None = None,
    ) -> list[Job]:
        """``enqueue``/``enqueue_many``; ``names``: the sync call and the async one to use
        instead, for the error inside a running loop (``Worker.enqueue_sync`` names its own)."""
        from .oban import _job_batch

        inline = is_inline()
        # Checked here: a warning about a job points at the caller's line, in its thread.
        jobs = _job_batch(jobs_or_first, rest, inline=inline)
        if conn is None:
            if _hooks.sync_enqueuer and not inline and not _in_running_loop():
                handled = _hooks.sync_enqueuer[0](self._oban, jobs)
                if handled is not None:
                    return handled
            return self._run(method, lambda: self._oban.enqueue_many(jobs), names)
        if inline:
            self._run(method, lambda: _run_inline(jobs), names)
            return jobs
        engine = self._oban._engine
        if not has_span_handlers("oban.enqueue"):
            return engine.insert_jobs_sync(jobs, conn)
        with telemetry.span("oban.enqueue", {"jobs": jobs, "count": len(jobs)}):
            return engine.insert_jobs_sync(jobs, conn)

    # Results

    def wait_for(
        self,
        job: Job | int,
        *,
        timeout: float | None = 30.0,
        with_retries: bool = False,
        poll_interval: float = 0.5,
        allow_nested: bool = False,
    ) -> JobOutcome:
        """Wait until ``job`` finishes and say how; see :meth:`Oban.wait_for`."""
        return self._run(
            "wait_for",
            lambda: self._oban.wait_for(
                job,
                timeout=timeout,
                with_retries=with_retries,
                poll_interval=poll_interval,
                allow_nested=allow_nested,
            ),
        )

    def await_many(
        self,
        jobs: Iterable[Job | int],
        *,
        timeout: float | None = 30.0,
        with_retries: bool = False,
        poll_interval: float = 0.5,
        allow_nested: bool = False,
    ) -> list[JobOutcome]:
        """Wait for many jobs at once; see :meth:`Oban.await_many`."""
        ids = list(jobs)
        return self._run(
            "await_many",
            lambda: self._oban.await_many(
                ids,
                timeout=timeout,
                with_retries=with_retries,
                poll_interval=poll_interval,
                allow_nested=allow_nested,
            ),
        )

    def relay(
        self,
        job: Job,
        *,
        timeout: float | None = 30.0,
        with_retries: bool = False,
        poll_interval: float = 0.5,
        allow_nested: bool = False,
    ) -> Any:
        """Enqueue ``job``, wait for it and return its value; see :meth:`Oban.relay`. (The
        job runs on a node, never here: waiting from a sync job of the node that must run it
        holds one of its slots.)"""
        return self._run(
            "relay",
            lambda: self._oban.relay(
                job,
                timeout=timeout,
                with_retries=with_retries,
                poll_interval=poll_interval,
                allow_nested=allow_nested,
            ),
        )

    # Workflows

    def workflow_status(self, workflow: Workflow | Job | str) -> WorkflowStatus:
        """The workflow's counts by state; see :meth:`Oban.workflow_status`."""
        return self._run("workflow_status", lambda: self._oban.workflow_status(workflow))

    def cancel_workflow(self, workflow: Workflow | Job | str) -> int:
        """Cancel the workflow's unfinished jobs; see :meth:`Oban.cancel_workflow`."""
        return self._run("cancel_workflow", lambda: self._oban.cancel_workflow(workflow))

    def workflow_results(self, job: Job | Workflow | str) -> dict[str, Any]:
        """The values of completed steps by name; see :meth:`Oban.workflow_results`."""
        return self._run("workflow_results", lambda: self._oban.workflow_results(job))

    def wait_for_workflow(
        self,
        workflow: Workflow | Job | str,
        *,
        timeout: float | None = 30.0,
        poll_interval: float = 0.5,
        allow_nested: bool = False,
    ) -> WorkflowStatus:
        """Wait until the workflow is done; see :meth:`Oban.wait_for_workflow`."""
        return self._run(
            "wait_for_workflow",
            lambda: self._oban.wait_for_workflow(
                workflow, timeout=timeout, poll_interval=poll_interval, allow_nested=allow_nested
            ),
        )

    # Jobs

    def get_job(self, job_id: int | Job) -> Job | None:
        """The job as it is now in the database, or ``None``; see :meth:`Oban.get_job`."""
        return self._run("get_job", lambda: self._oban.get_job(job_id))

    def list_jobs(
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
        """One page of jobs, newest first; see :meth:`Oban.list_jobs`."""
        return self._run(
            "list_jobs",
            lambda: self._oban.list_jobs(
                state=state,
                queue=queue,
                worker=worker,
                tags=tags,
                args=args,
                meta=meta,
                search=search,
                ids=ids,
                limit=limit,
                after=after,
                scan=scan,
            ),
        )

    def count_jobs(
        self,
        by: str | Iterable[str] = ("state",),
        *,
        state: str | JobState | Iterable[str | JobState] | None = None,
        queue: str | Iterable[str] | None = None,
        limit: int = EXACT_COUNT_LIMIT,
    ) -> JobCounts:
        """How many jobs there are, grouped; see :meth:`Oban.count_jobs`."""
        return self._run(
            "count_jobs",
            lambda: self._oban.count_jobs(by, state=state, queue=queue, limit=limit),
        )

    def crons(self) -> list[CronInfo]:
        """Every cron entry with its last and next run; see :meth:`Oban.crons`."""
        return self._run("crons", self._oban.crons)

    def job_stats(
        self, *, bucket: int = 60, limit: int = STATS_LIMIT, window: int = 3600
    ) -> JobStats:
        """Jobs finished per bucket and queue, with wait and run percentiles; see
        :meth:`Oban.job_stats`."""
        return self._run(
            "job_stats",
            lambda: self._oban.job_stats(bucket=bucket, limit=limit, window=window),
        )

    def cancel_job(self, job: Job | int) -> int:
        """Cancel one job; see :meth:`Oban.cancel_many_jobs`."""
        return self._run("cancel_job", lambda: self._oban.cancel_job(job))

    def cancel_many_jobs(self, jobs: Iterable[Job | int]) -> int:
        """Cancel incomplete jobs, running ones included; see :meth:`Oban.cancel_many_jobs`."""
        return self._run("cancel_many_jobs", lambda: self._oban.cancel_many_jobs(jobs))

    def retry_job(self, job: Job | int) -> int:
        """Retry one job; see :meth:`Oban.retry_many_jobs`."""
        return self._run("retry_job", lambda: self._oban.retry_job(job))

    def retry_many_jobs(self, jobs: Iterable[Job | int]) -> int:
        """Make jobs available to run now; see :meth:`Oban.retry_many_jobs`."""
        return self._run("retry_many_jobs", lambda: self._oban.retry_many_jobs(jobs))

    def delete_job(self, job: Job | int) -> int:
        """Delete one job; see :meth:`Oban.delete_many_jobs`."""
        return self._run("delete_job", lambda: self._oban.delete_job(job))

    def delete_many_jobs(self, jobs: Iterable[Job | int]) -> int:
        """Delete jobs that are not executing; see :meth:`Oban.delete_many_jobs`."""
        return self._run("delete_many_jobs", lambda: self._oban.delete_many_jobs(jobs))

    def update_job(
        self, job: Job | int, changes: dict[str, Any] | Callable[[Job], dict[str, Any]]
    ) -> Job:
        """Update one job; see :meth:`Oban.update_job`."""
        return self._run("update_job", lambda: self._oban.update_job(job, changes))

    def update_many_jobs(
        self,
        jobs: Iterable[Job | int],
        changes: dict[str, Any] | Callable[[Job], dict[str, Any]],
    ) -> list[Job]:
        """Change jobs that are not running; see :meth:`Oban.update_many_jobs`."""
        return self._run("update_many_jobs", lambda: self._oban.update_many_jobs(jobs, changes))

    # Queues and nodes

    def pause_queue(self, queue: str, *, node: str | None = None) -> None:
        """Stop fetching from ``queue``, here and on other nodes; see :meth:`Oban.pause_queue`."""
        self._run("pause_queue", lambda: self._oban.pause_queue(queue, node=node))

    def resume_queue(self, queue: str, *, node: str | None = None) -> None:
        """Fetch from ``queue`` again; see :meth:`Oban.resume_queue`."""
        self._run("resume_queue", lambda: self._oban.resume_queue(queue, node=node))

    def pause_all_queues(self, *, node: str | None = None) -> None:
        """Pause every queue."""
        self._run("pause_all_queues", lambda: self._oban.pause_all_queues(node=node))

    def resume_all_queues(self, *, node: str | None = None) -> None:
        """Resume every queue."""
        self._run("resume_all_queues", lambda: self._oban.resume_all_queues(node=node))

    def scale_queue(
        self, *, queue: str, limit: int, node: str | None = None, **unknown: Never
    ) -> None:
        """Change ``queue``'s concurrency limit; see :meth:`Oban.scale_queue`."""
        self._run(
            "scale_queue",
            lambda: self._oban.scale_queue(queue=queue, limit=limit, node=node, **unknown),
        )

    def queues(self) -> list[QueueInfo]:
        """Every node's queues, from the database; see :meth:`Oban.queues`."""
        return self._run("queues", self._oban.queues)

    def nodes(self) -> list[NodeInfo]:
        """Every node running queues for this instance's name; see :meth:`Oban.nodes`."""
        return self._run("nodes", self._oban.nodes)

    # Lifecycle

    def stop(self) -> None:
        """:meth:`Oban.stop`: close what the instance opened (its pool, its SQLite connection)
        and, on a running node, stop it. A later call opens them again."""
        self._run("stop", self._oban.stop)


decorators.set_blocking_runner(run_blocking)
