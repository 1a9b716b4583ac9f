"""Runs one job and turns its result into an Ack."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import telemetry
from ._backoff import jittery_clamped
from ._engines.base import Ack
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
    return "".join(traceback.format_exception(error)).rstrip()


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

    def __init__(self, *, threads: ThreadPoolExecutor, safe: bool = True) -> None:
        self._threads = threads
        self._safe = safe

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
            cls = resolve_worker(job.worker)
            instance = cls()
            timeout = instance.timeout(job) if hasattr(instance, "timeout") else None
            result = await self._call(cls, instance, job, timeout)
        except asyncio.CancelledError as cancelled:
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
            self._emit(job, ack, error, started)
        finally:
            # Reset after the stop/exception events so their handlers see current_job().
            _current_job.reset(token)
        if error is not None and not self._safe:
            # Unsafe (process_job, drain_queue): observers saw the exception event first.
            raise error
        return ack, result

    async def _call(self, cls: type[Any], instance: Any, job: Job, timeout: float | None) -> Any:
        if _worker_is_async(cls):
            pending: Any = instance.process(job)
        else:
            context = contextvars.copy_context()
            pending = asyncio.get_running_loop().run_in_executor(
                self._threads, context.run, instance.process, job
            )
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
        if error is None and result is None:  # the common case, first
            return Ack(job.id, job.attempted_at, JobState.COMPLETED, queue=job.queue)  # type: ignore[arg-type]
        base = {"id": job.id, "attempted_at": job.attempted_at, "queue": job.queue}
        if error is not None:
            text = _format_error(error)
            if job.attempt >= job.max_attempts:
                return Ack(**base, state=JobState.DISCARDED, error=text)  # type: ignore[arg-type]
            return Ack(
                **base,  # type: ignore[arg-type]
                state=JobState.RETRYABLE,
                error=text,
                schedule_in=_backoff(instance, job),
            )
        if isinstance(result, Snooze):
            return Ack(
                **base,  # type: ignore[arg-type]
                state=JobState.SCHEDULED,
                schedule_in=float(result.seconds),
                attempt_change=-1,
                meta=result.meta,
                snooze=True,
            )
        if isinstance(result, Cancel):
            return Ack(**base, state=JobState.CANCELLED, error=str(result.reason))  # type: ignore[arg-type]
        if isinstance(result, Record):
            return Ack(
                **base,  # type: ignore[arg-type]
                state=JobState.COMPLETED,
                meta={"recorded": True, "return": result.encoded},
            )
        return Ack(**base, state=JobState.COMPLETED)  # type: ignore[arg-type]

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
            meta["error_type"] = type(error).__name__
            meta["traceback"] = ack.error
        telemetry.execute(event, meta)
