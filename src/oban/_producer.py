"""One producer per queue: claims jobs up to the free slots and runs them."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import uuid as uuid_lib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import telemetry
from ._acker import Acker
from ._engines.base import Engine
from ._executor import Executor
from ._tasks import cancel_and_wait
from .job import Job

logger = logging.getLogger("oban.producer")

POLL_INTERVAL = 1.0
#: After a fetch that carried acks failed, fetches carry none for this many seconds.
CARRY_PAUSE = 1.0


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A snapshot of one queue on this node."""

    limit: int
    meta: dict[str, Any]
    node: str
    paused: bool
    queue: str
    running: list[int]
    started_at: datetime
    uuid: str = field(default="")


class Producer:
    """Fetches and executes the jobs of one queue on this node."""

    def __init__(
        self,
        *,
        acker: Acker,
        debounce_interval: float = 0.005,
        engine: Engine,
        executor: Executor,
        limit: int,
        name: str,
        node: str,
        paused: bool = False,
        poll_interval: float = POLL_INTERVAL,
        queue: str,
        **meta: Any,
    ) -> None:
        self.queue = queue
        self.limit = limit
        self._paused = paused
        self.meta = meta
        self.node = node
        self.name = name
        self.uuid = str(uuid_lib.uuid4())
        self.started_at = datetime.now(UTC)
        self._acker = acker
        self._debounce = debounce_interval
        self._poll_interval = poll_interval
        self._last_fetch = 0.0
        self._carry_after = 0.0
        self._engine = engine
        self._executor = executor
        self._running: dict[int, tuple[Job, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._saturated = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Clear while a fetch is in flight: a pause takes effect once that fetch is done.
        self._not_fetching = asyncio.Event()
        self._not_fetching.set()
        self._orphaned: list[int] = []
        # While a fetch is in flight: the ids of jobs a pkill named meanwhile that no producer
        # here was running (the fetch may be claiming them right now).
        self._kills_in_flight: set[int] | None = None

    def info(self) -> QueueInfo:
        """The queue's current state."""
        return QueueInfo(
            limit=self.limit,
            meta=dict(self.meta),
            node=self.node,
            paused=self.paused,
            queue=self.queue,
            running=list(self._running),
            started_at=self.started_at,
            uuid=self.uuid,
        )

    @property
    def paused(self) -> bool:
        """Whether the queue is paused: asked to pause, and no fetch that began before that
        is still in flight (so once this is true, this node claims no more jobs)."""
        return self._paused and self._not_fetching.is_set()

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = value

    async def settled(self) -> None:
        """Wait until no fetch is in flight."""
        await self._not_fetching.wait()

    @property
    def running(self) -> int:
        """How many jobs are executing now."""
        return len(self._running)

    def notify(self) -> None:
        """Fetch soon: jobs may be available."""
        self._wake.set()

    async def register(self) -> None:
        """Write (or restore) this producer's row."""
        await self._engine.insert_producer(
            self.uuid, self.name, self.node, self.queue, self.producer_meta()
        )

    async def start(self) -> None:
        """Record the producer and start its loop."""
        await self.register()
        self._task = asyncio.create_task(self._loop(), name=f"oban-producer-{self.queue}")
        self.notify()

    def producer_meta(self) -> dict[str, Any]:
        """What the producer row's ``meta`` holds."""
        return {"local_limit": self.limit, "paused": self._paused, **self.meta}

    async def pause(self) -> None:
        """Stop fetching; running jobs finish. Returns once a fetch in flight is done."""
        self._paused = True
        await self.settled()

    async def resume(self) -> None:
        """Fetch again."""
        self._paused = False
        self.notify()

    async def scale(self, limit: int) -> None:
        """Change the concurrency limit; a larger limit fetches at once."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        self.limit = limit
        self.notify()

    def note_kill(self, job_id: int) -> None:
        """A pkill for a job no producer here runs: if a fetch is in flight, it may be
        claiming that job, which must then not run."""
        if self._kills_in_flight is not None:
            self._kills_in_flight.add(job_id)

    def cancel_job(self, job_id: int) -> bool:
        """Stop a running job that was cancelled: ``job.cancelled()`` turns true, an async
        job's task is cancelled at once (its ``finally`` blocks run), and a job running in a
        thread, which cannot be interrupted, ends cancelled when ``process`` returns."""
        entry = self._running.get(job_id)
        if entry is None:
            return False
        job, task = entry
        if job._cancellation is None:  # created on demand, not for every job
            job._cancellation = asyncio.Event()
        if job._cancellation.is_set():
            return True
        job._cancellation.set()
        if self._executor.in_thread(job_id):
            logger.info(
                "job %s (%s) was cancelled while running in a thread: it ends cancelled when "
                "process() returns (check job.cancelled() to stop sooner)",
                job_id,
                job.worker,
            )
        else:
            logger.info("job %s (%s) was cancelled while running: stopping it", job_id, job.worker)
            task.cancel()
        return True

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            except TimeoutError:
                pass
            if self._stopping:
                break
            self._wake.clear()
            # Fetches are at least debounce_interval apart, which batches the wake-ups of
            # finishing jobs; a queue idle for longer than that fetches at once, and so does
            # a queue whose every slot is free (no later wake-up could grow the batch).
            wait = self._debounce - (time.monotonic() - self._last_fetch)
            if wait > 0 and self._running:
                await asyncio.sleep(wait * (0.75 + random.random() / 2))  # noqa: S311
            try:
                await self._dispatch()
                failures = 0
            except Exception as error:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                logger.warning(
                    "fetching jobs for queue %r failed (attempt %d), retrying in %.1fs: %s",
                    self.queue,
                    failures,
                    delay,
                    error,
                )
                await asyncio.sleep(delay)

    async def _dispatch(self) -> None:
        if self._paused or self._stopping:
            return
        demand = self.limit - len(self._running)
        if demand <= 0:
            return
        self._not_fetching.clear()
        try:
            await self._fetch(demand)
        finally:
            self._not_fetching.set()

    async def _fetch(self, demand: int) -> None:
        self._last_fetch = time.monotonic()
        # The fetch carries the acks waiting to be written: one statement for both.
        acks = self._acker.take() if self._last_fetch >= self._carry_after else []
        kills = self._kills_in_flight = set()
        try:
            with telemetry.span("oban.producer.get", {"queue": self.queue}) as span:
                jobs: list[Job] | None = None
                if acks:
                    try:
                        with telemetry.span("oban.producer.ack", Acker.telemetry_meta(acks)) as sub:
                            acked, jobs = await self._engine.ack_fetch_jobs(
                                acks, self.queue, demand, self.node, self.uuid
                            )
                            sub.add({"count": len(acked)})
                    except Exception:
                        # The acks may be what the database refused: the acker retries them on
                        # its own, and this queue fetches without carrying any for a while.
                        self._acker.give_back(acks)
                        acks = []
                        self._carry_after = time.monotonic() + CARRY_PAUSE
                if jobs is None:
                    jobs = await self._engine.fetch_jobs(self.queue, demand, self.node, self.uuid)
                span.add({"count": len(jobs)})
        except BaseException:
            if acks:
                self._acker.give_back(acks)
            raise
        finally:
            self._kills_in_flight = None
        if acks:
            self._acker.settle(acks, acked)
        # A full batch means more jobs are probably waiting: fetch again as slots free up.
        self._saturated = len(jobs) == demand
        for job in jobs:
            if job.id in kills:
                # Cancelled (and pkilled) while the fetch that claimed it was on its way.
                logger.info("job %s (%s) was cancelled as it was claimed", job.id, job.worker)
                self._acker.push(self._executor.killed_ack(job))
                continue
            task = asyncio.create_task(self._execute(job), name=f"oban-job-{job.id}")
            self._running[job.id] = (job, task)  # type: ignore[index]
            task.add_done_callback(functools.partial(self._finished, job.id))  # type: ignore[arg-type]
            self._idle.clear()

    async def _execute(self, job: Job) -> None:
        ack, _ = await self._executor.run(job)
        meta = job.meta
        if meta.get("relay") is True:
            ack.relay = True
        if meta.get("workflow") is True:
            workflow = meta.get("workflow_id")
            ack.workflow = workflow if isinstance(workflow, str) else None
        self._acker.push(ack)

    def _finished(self, job_id: int, task: asyncio.Task[None]) -> None:
        # A done callback rather than a finally in _execute: a task cancelled before it
        # first ran (cancel_job right after the claim) never runs its body.
        entry = self._running.pop(job_id, None)
        if task.cancelled() and entry is not None and entry[0].cancelled():
            # Stopped by a cancel before it ran: ack it cancelled (a no-op if the canceller
            # already wrote the row, as ours and Elixir's do).
            self._acker.push(self._executor.killed_ack(entry[0]))
        if not self._running:
            self._idle.set()
        if self._saturated:
            self._wake.set()

    async def stop(self, grace_period: float | None, timeout: float | None = None) -> list[int]:
        """Stop fetching, wait for running jobs, and return the ids of those left running.

        Jobs get ``grace_period`` seconds to finish. Then async jobs still running are
        cancelled and left ``executing`` for rescue. Jobs running in threads cannot be
        interrupted: they are waited for, and acked when they return, until ``timeout``
        seconds after the stop began (``None``: as long as they run); those still running
        then are left for rescue too (the process should exit, see ``oban start``).
        """
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        started = time.monotonic()
        orphaned: list[int] = []
        if self._running and not await self._wait_idle(grace_period):
            threaded = [i for i in self._running if self._executor.in_thread(i)]
            orphaned = [i for i in self._running if i not in threaded]
            await self._cancel_tasks(orphaned)
            if threaded:
                logger.warning(
                    "queue %r: %d jobs still run in threads after the %gs grace period; "
                    "waiting for them to record their results: %s",
                    self.queue,
                    len(threaded),
                    grace_period,
                    threaded,
                )
                left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
                if not await self._wait_idle(left):
                    abandoned = list(self._running)
                    orphaned += abandoned
                    await self._cancel_tasks(abandoned)
        telemetry.execute(
            "oban.queue.shutdown",
            {"elapsed": time.monotonic() - started, "orphaned": orphaned, "queue": self.queue},
        )
        if orphaned:
            logger.warning(
                "queue %r shut down with %d jobs still running; they will be rescued: %s",
                self.queue,
                len(orphaned),
                orphaned,
            )
        self._orphaned = orphaned
        return orphaned

    async def _wait_idle(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout)
        except TimeoutError:
            return False
        return True

    async def _cancel_tasks(self, ids: list[int]) -> None:
        tasks = [entry[1] for i in ids if (entry := self._running.get(i)) is not None]
        await asyncio.gather(*(cancel_and_wait(task, timeout=5.0) for task in tasks))

    async def forget(self) -> None:
        """Remove this producer's row (after acks are flushed).

        With orphaned jobs the row is expired instead, so the lifeline rescues them at once.
        """
        try:
            if self._orphaned:
                await self._engine.expire_producer(self.uuid)
            else:
                await self._engine.delete_producer(self.uuid)
        except Exception as error:
            logger.warning("could not remove producer %s: %s", self.uuid, error)
