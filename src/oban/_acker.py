"""Buffers acks and writes them in batches, one statement per batch.

Most acks ride along with a producer's next fetch (one statement claims new jobs and writes
the acks, see ``Engine.ack_fetch_jobs``); the acker writes whatever no fetch carried within
``delay``. A batch leaves the buffer while one of them writes it and is put back when the write
fails, so a failed round trip loses nothing: it is retried with backoff and flushed on stop.
"""

from __future__ import annotations

import asyncio
import logging
import time

from . import telemetry
from ._engines.base import Ack, Engine
from ._tasks import cancel_and_wait

logger = logging.getLogger("oban.acker")

MAX_BATCH = 5_000


class Acker:
    """One per ``Oban`` instance; producers ``push`` and the acker writes."""

    def __init__(self, engine: Engine, *, max_backoff: float = 5.0, delay: float = 0.005) -> None:
        self._engine = engine
        self._pending: list[Ack] = []
        self._inflight = 0
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._max_backoff = max_backoff
        self._delay = delay
        self._failures = 0
        self._deadline: float | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def pending(self) -> int:
        """Acks not yet written (buffered or being written)."""
        return len(self._pending) + self._inflight

    def push(self, ack: Ack) -> None:
        """Queue ``ack`` for the next batch."""
        self._pending.append(ack)
        self._drained.clear()
        self._event.set()

    def take(self) -> list[Ack]:
        """Remove the next batch from the buffer for writing; hand it to :meth:`settle` after
        the write or to :meth:`give_back` when it failed."""
        batch = self._pending[:MAX_BATCH]
        del self._pending[: len(batch)]
        self._inflight += len(batch)
        return batch

    def give_back(self, batch: list[Ack]) -> None:
        """A write of ``batch`` failed: buffer it again, ahead of newer acks."""
        self._pending[:0] = batch
        self._inflight -= len(batch)
        self._event.set()

    def settle(self, batch: list[Ack], written: set[int]) -> None:
        """``batch`` was written; ``written`` are the ids the database changed."""
        self._inflight -= len(batch)
        if not self._pending and not self._inflight:
            self._drained.set()
        if len(written) != len(batch):
            # A killed job's row was already written by whoever cancelled it.
            stale = [ack.id for ack in batch if ack.id not in written and not ack.killed]
        if len(written) != len(batch) and stale:
            logger.warning(
                "ignored %d stale acks for jobs no longer executing with the same attempt: %s",
                len(stale),
                stale[:20],
            )

    @staticmethod
    def telemetry_meta(batch: list[Ack]) -> dict[str, object]:
        """The metadata of an ``oban.producer.ack`` span for ``batch``."""
        queues = sorted({ack.queue for ack in batch})
        return {"queue": queues[0] if len(queues) == 1 else None, "queues": queues}

    def start(self) -> None:
        """Start writing in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="oban-acker")

    async def _loop(self) -> None:
        while True:
            await self._event.wait()
            if self._delay and self._deadline is None:
                # Give a producer's fetch the chance to carry these acks.
                await asyncio.sleep(self._delay)
            self._event.clear()
            while self._pending:
                if await self._flush_once():
                    continue
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    return
                await asyncio.sleep(min(self._max_backoff, 0.05 * 2**self._failures))
            if self._deadline is not None:
                return

    async def _flush_once(self) -> bool:
        batch = self.take()
        try:
            with telemetry.span("oban.producer.ack", self.telemetry_meta(batch)) as span:
                written = await self._engine.ack_jobs(batch)
                span.add({"count": len(written)})
        except BaseException as error:
            self.give_back(batch)
            if not isinstance(error, Exception):
                raise
            self._failures += 1
            logger.warning(
                "writing %d acks failed (attempt %d), will retry: %s",
                len(batch),
                self._failures,
                error,
            )
            return False
        self._failures = 0
        self.settle(batch, written)
        return True

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what is buffered now has been written; False on timeout."""
        self._event.set()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 15.0) -> None:
        """Write what is left, retrying for up to ``timeout`` seconds, then stop.

        The loop drains itself rather than being cancelled, so a batch the database already
        committed is never written twice.
        """
        task, self._task = self._task, None
        self._deadline = time.monotonic() + timeout
        if task is None and self._pending:
            task = asyncio.create_task(self._loop(), name="oban-acker-drain")
        self._event.set()
        if task is not None:
            await asyncio.wait({task}, timeout=timeout + 5.0)
            await cancel_and_wait(task, timeout=5.0)
        if self._pending:
            logger.error(
                "could not write %d acks before shutdown; those jobs stay executing until "
                "rescued: %s",
                len(self._pending),
                [ack.id for ack in self._pending[:20]],
            )
