"""Runs one job and turns its result into an Ack."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import _hooks, telemetry
from ._backoff import jittery_clamped
from ._engines import _payloads
from ._engines._payloads import UnreadableJob, UnreadableJobError, storable_text
from ._engines.base import CANCELLED_WHILE_EXECUTING, Ack
from ._isolation import JobError, run_isolated
from .errors import JobTimeoutError, WorkerResolutionError
from .job import Cancel, Job, JobState, Record, Snooze, _current_job
from .telemetry.core import has_handlers
from .worker import resolve_worker

logger = logging.getLogger("oban.executor")

# worker class -> whether process is a coroutine function
_is_async: dict[type[Any], bool] = {}


def _worker_is_async(cls: type[Any]) -> bool:
    known = _is_async.get(cls)
    if known is None:
        known = _is_async[cls] = inspect.iscoroutinefunction(cls.process)
    return known


def _format_error(error: BaseException) -> str:
    if isinstance(error, JobError):  # raised in an isolated job's process: its traceback
        return error.formatted
    return "".join(traceback.format_exception(error)).rstrip()


def _workflow_of(job: Job) -> str | None:
    workflow = job.meta.get("workflow_id") if job.meta.get("workflow") is True else None
    return workflow if isinstance(workflow, str) else None


async def _hooked_async(pending: Any) -> Any:
    try:
        await _hooks.before_async()
    except BaseException:
        pending.close()
        raise
    try:
        return await pending
    finally:
        await _hooks.after_async()


def _snooze_seconds(seconds: float) -> float:
    """A snooze's delay as the engines take it: at most ``_payloads.MAX_SECONDS`` (about 317
    years), so that ``Snooze(10**400)``, which no float holds, is a bounded snooze."""
    try:
        value = float(seconds)
    except OverflowError:
        value = _payloads.MAX_SECONDS
    if value != value:  # NaN (Snooze refuses it; a subclass might not)
        raise ValueError(f"cannot snooze for {seconds!r} seconds")
    return _payloads.clamp_seconds(value)


def _log_unresolved(job: Job, error: WorkerResolutionError) -> None:
    # Not the worker's own failure: a deploy or a row names code this node does not have.
    logger.error(
        "job %s names worker %r, which this node cannot load: %s", job.id, job.worker, error
    )


def _backoff(instance: Any, job: Job) -> float:
    custom = getattr(instance, "backoff", None)
    if custom is not None:
        try:
            return float(custom(job))
        except Exception:
            logger.exception("backoff() of %s failed; using the default backoff", job.worker)
    return jittery_clamped(job.attempt, job.max_attempts)


class Executor:
    """Executes jobs: async workers on the loop, sync workers in a thread pool."""

    def __init__(
        self,
        *,
        threads: ThreadPoolExecutor,
        safe: bool = True,
        worker_modules: Sequence[str] | None = None,
    ) -> None:
        self._threads = threads
        self._safe = safe
        # The instance's worker_modules: None imports any worker on demand (but the standard
        # library, __main__ modules and oban), a list only those under its prefixes.
        self._worker_modules = None if worker_modules is None else tuple(worker_modules)
        # Ids of jobs whose process() runs in a thread right now: a thread cannot be
        # interrupted, so cancel and shutdown wait for these instead of cancelling their task.
        self._in_threads: set[int] = set()

    def in_thread(self, job_id: int) -> bool:
        """Whether ``job_id``'s ``process`` is running in a worker thread now."""
        return job_id in self._in_threads

    @property
    def threads_busy(self) -> int:
        """How many jobs run in worker threads now."""
        return len(self._in_threads)

    async def run(self, job: Job) -> tuple[Ack, Any]:
        """Execute ``job``; return its ack and the worker's raw result."""
        token = _current_job.set(job)
        started = time.monotonic_ns()
        if has_handlers("oban.job.start"):
            telemetry.execute("oban.job.start", {"job": job, "monotonic_time": started})
        instance: Any = None
        result: Any = None
        error: BaseException | None = None
        try:
            if type(job) is UnreadableJob:  # its row could not be read: never run it
                raise UnreadableJobError(job.unreadable)
            cls = resolve_worker(job.worker, modules=self._worker_modules)
            instance = cls()
            timeout = instance.timeout(job) if hasattr(instance, "timeout") else None
            result = await self._call(cls, instance, job, timeout)
        except asyncio.CancelledError as cancelled:
            if job.cancelled():
                # cancel_job stopped it: the task ends here, and the job ends cancelled.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                ack = self.killed_ack(job)
                self._emit(job, ack, None, started)
                _current_job.reset(token)
                return ack, None
            # Shutdown cut the job short: it stays executing for rescue, but observers still
            # get the end of what they saw start.
            self._emit(job, Ack(job.id, job.attempted_at, JobState.EXECUTING), cancelled, started)  # type: ignore[arg-type]
            _current_job.reset(token)
            raise
        except Exception as caught:
            error = caught
            if self._safe and isinstance(caught, WorkerResolutionError):
                _log_unresolved(job, caught)
        try:
            ack = self._outcome(job, instance, result, error)
            if job._cancellation is not None and job._cancellation.is_set():
                # Cancelled while it ran (a thread cannot be stopped): whatever it returned,
                # the job ends cancelled, as the canceller already recorded.
                ack, error = self.killed_ack(job, ack), None
            self._emit(job, ack, error, started)
        finally:
            # Reset after the stop/exception events so their handlers see current_job().
            _current_job.reset(token)
        if error is not None and not self._safe:
            # Unsafe (process_job, drain_queue): observers saw the exception event first.
            raise error
        return ack, result

    @staticmethod
    def killed_ack(job: Job, ack: Ack | None = None) -> Ack:
        """The ack of a job cancelled while it ran here (or before it ran): ``cancelled``, with
        the reason the worker gave when it noticed and returned ``Cancel``."""
        reason = CANCELLED_WHILE_EXECUTING
        if ack is not None and ack.state == JobState.CANCELLED and ack.error:
            reason = ack.error  # the worker noticed and returned Cancel(reason)
        return Ack(
            job.id,  # type: ignore[arg-type]
            job.attempted_at,
            JobState.CANCELLED,
            error=reason,
            queue=job.queue,
            killed=True,
            relay=job.meta.get("relay") is True,
            workflow=_workflow_of(job),
        )

    async def _call(self, cls: type[Any], instance: Any, job: Job, timeout: float | None) -> Any:
        if _worker_is_async(cls):
            pending: Any = instance.process(job)
            if _hooks.async_job_hooks:
                pending = _hooked_async(pending)
        elif getattr(cls, "_isolation", "thread") == "process":
            pending = run_isolated(cls, job)
        else:
            context = contextvars.copy_context()
            job_id: int = job.id  # type: ignore[assignment]
            self._in_threads.add(job_id)
            process = instance.process
            if _hooks.job_hooks:
                process = _hooks.around_sync(process)
            running = self._threads.submit(context.run, process, job)
            # Done when the thread returns, not when an awaiting task gives up on it (that
            # cancels the asyncio future, but never the thread's own future once it runs).
            running.add_done_callback(lambda _f: self._in_threads.discard(job_id))
            pending = asyncio.wrap_future(running)
        if timeout is None:
            result = await pending
        else:
            try:
                async with asyncio.timeout(timeout) as scope:
                    result = await pending
            except TimeoutError:
                if scope.expired():
                    raise JobTimeoutError(f"{job.worker} timed out after {timeout:g}s") from None
                raise
        if result is not None and inspect.isawaitable(result):
            result = await result
        return result

    def _outcome(self, job: Job, instance: Any, result: Any, error: BaseException | None) -> Ack:
        """The ack of ``job``'s execution. Whatever ``process`` returned or raised, this gives
        an ack (a result that cannot be read becomes the job's error), and every value in it
        can be stored (see ``_payloads.storable_text``)."""
        if error is None and result is None:  # the common case, first
            return Ack(job.id, job.attempted_at, JobState.COMPLETED, queue=job.queue)  # type: ignore[arg-type]
        try:
            return self._result_ack(job, instance, result, error)
        except Exception as failure:
            # str() of a Cancel reason raised, a recorded value too large to store, ...
            return self._error_ack(job, instance, failure)

    def _result_ack(self, job: Job, instance: Any, result: Any, error: BaseException | None) -> Ack:
        base = {"id": job.id, "attempted_at": job.attempted_at, "queue": job.queue}
        if error is not None:
            if isinstance(error, UnreadableJobError):
                # Reading the row again would fail the same way: no retry can help.
                logger.error("job %s is discarded without running: %s", job.id, error)
                text = storable_text(
                    f"{error}; the job is discarded without running, since reading its row "
                    "again would fail the same way"
                )
                return Ack(**base, state=JobState.DISCARDED, error=text)  # type: ignore[arg-type]
            return self._error_ack(job, instance, error)
        if isinstance(result, Snooze):
            return Ack(
                **base,  # type: ignore[arg-type]
                state=JobState.SCHEDULED,
                schedule_in=_snooze_seconds(result.seconds),
                attempt_change=-1,
                meta=result.meta,
                snooze=True,
            )
        if isinstance(result, Cancel):
            reason = storable_text(str(result.reason))
            return Ack(**base, state=JobState.CANCELLED, error=reason)  # type: ignore[arg-type]
        if not isinstance(result, Record) and (
            job.meta.get("relay") is True or job.meta.get("workflow") is True
        ):
            try:
                result = Record(result)  # relay: the value goes back to whoever waits
            except (TypeError, ValueError) as problem:
                # The work is done: it completes, and a waiter is told why no value came.
                text = storable_text(f"the value process returned cannot be recorded: {problem}")
                return Ack(**base, state=JobState.COMPLETED, meta={"relay_error": text})  # type: ignore[arg-type]
        if isinstance(result, Record):
            encoded = result.encoded
            if len(encoded) > _payloads.MAX_RECORDED_CHARS:
                raise ValueError(
                    f"the recorded value is {len(encoded)} characters once encoded, over the "
                    f"{_payloads.MAX_RECORDED_CHARS} a job can store"
                )
            return Ack(
                **base,  # type: ignore[arg-type]
                state=JobState.COMPLETED,
                meta={"recorded": True, "return": encoded},
            )
        return Ack(**base, state=JobState.COMPLETED)  # type: ignore[arg-type]

    @staticmethod
    def _error_ack(job: Job, instance: Any, error: BaseException) -> Ack:
        text = storable_text(_format_error(error))
        base = {"id": job.id, "attempted_at": job.attempted_at, "queue": job.queue}
        if job.attempt >= job.max_attempts:
            return Ack(**base, state=JobState.DISCARDED, error=text)  # type: ignore[arg-type]
        return Ack(
            **base,  # type: ignore[arg-type]
            state=JobState.RETRYABLE,
            error=text,
            schedule_in=_backoff(instance, job),
        )

    def _emit(self, job: Job, ack: Ack, error: BaseException | None, started: int) -> None:
        event = "oban.job.exception" if error is not None else "oban.job.stop"
        if not has_handlers(event):
            return
        now = time.monotonic_ns()
        queue_time = 0
        if job.attempted_at is not None and job.scheduled_at is not None:
            # Both are the database's wall clock, which may step back a little between two
            # transactions (NTP): a job never waits a negative time.
            waited = (job.attempted_at - job.scheduled_at).total_seconds()
            queue_time = max(0, int(waited * 1e9))
        meta: dict[str, Any] = {
            "job": job,
            "monotonic_time": now,
            "duration": now - started,
            "queue_time": queue_time,
            "state": ack.state,
        }
        if error is not None:
            meta["error_message"] = str(error)
            meta["error_type"] = getattr(error, "type_name", type(error).__name__)
            meta["traceback"] = ack.error
        telemetry.execute(event, meta)
