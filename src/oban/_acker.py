"""Buffers acks and writes them in batches, one statement per batch.

Most acks ride along with a producer's next fetch (one statement claims new jobs and writes
the acks, see ``Engine.ack_fetch_jobs``); the acker writes whatever no fetch carried within
``delay``. A batch leaves the buffer while one of them writes it and is put back when the write
fails, so a failed round trip loses nothing: it is retried with backoff and flushed on stop.

A batch holds at most :data:`MAX_BATCH` acks and about ``_payloads.MAX_BATCH_WEIGHT``
characters of errors and meta. One ack the database refuses (:func:`refused`: a value it
cannot store or compute with, not a lost connection) never holds back the others: the acker
splits the refused batch in halves, again and again, until the ack is alone, and writes
everything else. The ack alone is then written in the first of these forms the database
accepts:

1. its outcome (state, schedule, attempt) without its meta, its error text followed by a note
   that the outcome could not be stored as given, and why;
2. the job discarded, with only that note as its error;
3. the job discarded, recording nothing else.

When even the last is refused, the ack is dropped and logged (the job stays ``executing``
until the lifeline rescues it, once this node's producer no longer heartbeats): an ack is
never retried for ever. A failure that is not a refusal
(the database cannot be reached) puts the acks not yet written back, for a later retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator

from . import _faults, telemetry
from ._engines import _payloads
from ._engines.base import Ack, Engine
from ._tasks import cancel_and_wait
from .job import JobState

logger = logging.getLogger("oban.acker")

MAX_BATCH = 5_000

#: SQLSTATE classes of PostgreSQL errors about a statement's values, not the connection or
#: the server: data exceptions (a NUL in text, a cast that fails), integrity constraint
#: violations and program limits (a jsonb value over 255 MB).
_REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
#: SQLite result codes of errors about a statement's values.
_REFUSED_SQLITE_CODES = frozenset(
    {
        sqlite3.SQLITE_TOOBIG,
        sqlite3.SQLITE_CONSTRAINT,
        sqlite3.SQLITE_MISMATCH,
        sqlite3.SQLITE_RANGE,
    }
)


def refused(error: BaseException) -> bool:
    """Whether ``error`` says the database (or the encoding of the payload) refused the values
    of a statement, so that the same statement would fail again however often it is
    retried; ``False`` for errors about reaching the database, which a retry may cure."""
    if isinstance(error, TypeError | ValueError | OverflowError | RecursionError):
        return True  # the payload could not be built (a value the JSON encoder refuses)
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in _REFUSED_SQLSTATE_CLASSES
    if isinstance(error, sqlite3.DataError | sqlite3.IntegrityError):
        return True
    if isinstance(error, sqlite3.OperationalError):
        code = getattr(error, "sqlite_errorcode", None)
        if code is None:
            return False
        if code & 0xFF == sqlite3.SQLITE_ERROR:
            return "json" in str(error).lower()  # malformed JSON, JSON cannot hold BLOB...
        return code & 0xFF in _REFUSED_SQLITE_CODES
    return False


def _alone_forms(ack: Ack, reason: str) -> Iterator[Ack]:
    """What to write, in turn, for an ``ack`` refused when alone (see the module's doc)."""
    note = f"oban could not store this outcome as given ({reason})"
    if ack.meta is not None or ack.snooze or ack.replace_meta:
        note += "; it is stored without its meta"
    error = note if ack.error is None else f"{ack.error}\n\n{note}"
    yield dataclasses.replace(
        ack,
        error=_payloads.storable_text(error),
        meta=None,
        snooze=False,
        replace_meta=False,
    )
    yield Ack(
        ack.id,
        ack.attempted_at,
        JobState.DISCARDED,
        error=f"oban could not store this job's {ack.state} outcome ({reason}): the job is "
        "discarded",
        queue=ack.queue,
        killed=ack.killed,
    )
    yield Ack(ack.id, ack.attempted_at, JobState.DISCARDED, queue=ack.queue, killed=ack.killed)


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
        self._urgent = False
        #: Told of every written batch and the ids it changed (waiters for those jobs).
        self.on_settled: Callable[[list[Ack], set[int]], None] | None = None
        #: The ids of the relay acks being written (taken, not yet settled or given back).
        self.relaying: set[int] = set()
        #: Whether a waiter of this instance waits for a job (its ack then asks for the row).
        self.wanted: Callable[[int], bool] | None = None

    @property
    def pending(self) -> int:
        """Acks not yet written (buffered or being written)."""
        return len(self._pending) + self._inflight

    def push(self, ack: Ack) -> None:
        """Queue ``ack`` for the next batch (at once, with no wait for a fetch to carry it,
        when someone waits for the job: a relay)."""
        self._pending.append(ack)
        if ack.relay:
            self._urgent = True
            if self.wanted is not None and self.wanted(ack.id):
                ack.wanted = True
        self._drained.clear()
        self._event.set()

    def take(self) -> list[Ack]:
        """Remove the next batch from the buffer for writing; hand it to :meth:`settle` after
        the write or to :meth:`give_back` when it failed.

        A batch holds at most :data:`MAX_BATCH` acks weighing at most
        ``_payloads.MAX_BATCH_WEIGHT`` together, or one ack that weighs more."""
        pending = self._pending
        count = min(len(pending), MAX_BATCH)
        budget = _payloads.MAX_BATCH_WEIGHT
        for index in range(count):
            ack = pending[index]
            if ack.error is None and ack.meta is None:  # nearly every ack: weighs nothing
                continue
            budget -= _payloads.ack_weight(ack)
            if budget < 0:
                count = max(index, 1)
                break
        batch = pending[:count]
        del pending[:count]
        self._inflight += count
        self.relaying.update(ack.id for ack in batch if ack.relay)
        return batch

    def give_back(self, batch: list[Ack]) -> None:
        """A write of ``batch`` failed: buffer it again, ahead of newer acks."""
        self._pending[:0] = batch
        self._inflight -= len(batch)
        if self.relaying:
            self.relaying.difference_update(ack.id for ack in batch)
        self._event.set()

    def settle(self, batch: list[Ack], written: set[int]) -> None:
        """``batch`` was written; ``written`` are the ids the database changed."""
        if batch:
            _faults.hit("after_ack")
        self._inflight -= len(batch)
        if self.relaying:
            self.relaying.difference_update(ack.id for ack in batch)
        if self.on_settled is not None and batch:
            self.on_settled(batch, written)
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
            if self._delay and self._deadline is None and not self._urgent:
                # Give a producer's fetch the chance to carry these acks.
                await asyncio.sleep(self._delay)
            self._urgent = False
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
        # Parts of the batch still to write, the next one last; see the module's doc.
        parts = [batch]
        part: list[Ack] = []
        done: list[Ack] = []
        written: set[int] = set()
        try:
            with telemetry.span("oban.producer.ack", self.telemetry_meta(batch)) as span:
                while parts:
                    part = parts.pop()
                    try:
                        ids = await self._engine.ack_jobs(part)
                    except Exception as error:
                        if not refused(error):
                            raise
                        if len(part) > 1:
                            half = len(part) // 2
                            parts += [part[half:], part[:half]]
                            continue
                        ids = await self._write_alone(part[0], error)
                    written |= ids
                    done += part
                    part = []
                span.add({"count": len(written)})
        except BaseException as error:
            unwritten = part + [ack for rest in reversed(parts) for ack in rest]
            self.settle(done, written)
            self.give_back(unwritten)
            if not isinstance(error, Exception):
                raise
            self._failures += 1
            logger.warning(
                "writing %d acks failed (attempt %d), will retry: %s",
                len(unwritten),
                self._failures,
                error,
            )
            return False
        self._failures = 0
        self.settle(batch, written)
        return True

    async def _write_alone(self, ack: Ack, error: Exception) -> set[int]:
        """Write ``ack``, which the database refused with ``error`` when alone, in the first
        form it accepts; ``set()`` (the ack dropped) if it accepts none."""
        reason = _payloads.describe(error)
        for form in _alone_forms(ack, reason):
            try:
                written = await self._engine.ack_jobs([form])
            except Exception as again:
                if not refused(again):
                    raise
                reason = _payloads.describe(again)
                continue
            stripped = form.state == ack.state and (ack.meta is not None or ack.snooze)
            logger.error(
                "the database refused the %s ack of job %s (%s); it was written as %s%s",
                ack.state,
                ack.id,
                _payloads.describe(error),
                form.state,
                " without its meta" if stripped else "",
            )
            return written
        logger.error(
            "the database refused every form of the %s ack of job %s (%s); the ack is dropped "
            "and the job stays executing until it is rescued (once no producer of this node "
            "heartbeats for it)",
            ack.state,
            ack.id,
            reason,
        )
        return set()

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
