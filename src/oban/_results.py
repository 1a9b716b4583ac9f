"""Waiting for jobs to finish: ``Oban.wait_for``, ``await_many`` and ``relay``.

A waiter registers itself under the job's id *before* it reads the row, so a completion that
lands between the two is never missed: either the read sees it, or the wake-up comes after the
registration. Wake-ups come from this instance's acks (in-process), from the ``relay``
notification other nodes send after acking jobs enqueued with ``relay`` (PostgreSQL), or from
SQLite peers in this process; a poll every ``poll_interval`` covers everything else (a lost
notification, another process on SQLite, a job not enqueued for relay).

``relay`` skips the first read when nothing can have been missed: its listener was hearing
``relay`` notifications, without a break, from before the insert until the waiter registered,
and no wake-up for the new job came in between (a *window*, opened before the insert, notes
the ids of every wake-up until the waiter registers). Whatever finishes the job after that
wakes the waiter; the poll covers the rest, as for any waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .job import Job, JobState

__all__ = [
    "DELETED",
    "UNKNOWN",
    "JobOutcome",
    "Waiter",
    "Waiters",
    "is_done",
    "outcome_of",
    "relay_ids",
]

logger = logging.getLogger("oban")

#: The state a :class:`JobOutcome` reports for a job whose row no longer exists.
DELETED = "deleted"
#: The state a :class:`JobOutcome` reports when the instance stopped before the job's row
#: could be read even once.
UNKNOWN = "unknown"
#: States a job does not leave without help (a retry): the wait ends there.
FINAL = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.DISCARDED})
#: Ids per relay notification: a NOTIFY payload stays far below PostgreSQL's 8,000 bytes.
IDS_PER_NOTIFICATION = 400
#: Ids woken while relays wait for their inserts that are noted, at most; past that, the
#: waiters of those relays read their rows first (as every other wait does).
MAX_SEEN = 10_000
#: Seconds stop() gives its last read of the jobs still waited for.
_LAST_READ_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a wait for one job ended (:meth:`Oban.wait_for`, :meth:`Oban.await_many`).

    ``done`` is false when the timeout (or the instance's ``stop()``) came first; ``state``
    is then the state last seen (``"unknown"`` if the row was never read before the stop).
    ``state`` is ``"deleted"`` when the row no longer exists. ``value`` is what ``process``
    returned when the job was enqueued with ``relay`` or returned ``Record(value)`` (else
    ``None``); ``error`` the last recorded error of a failed, discarded or cancelled job.
    ``job`` is the row as last read (``None`` once deleted).
    """

    id: int
    state: str
    done: bool
    value: Any = None
    error: str | None = None
    job: Job | None = None


def is_done(job: Job | None, with_retries: bool) -> bool:
    """Whether a wait for ``job`` (``None``: deleted) ends: completed, cancelled, discarded,
    deleted; retryable too unless ``with_retries``."""
    if job is None:
        return True
    return job.state in FINAL or (not with_retries and job.state == JobState.RETRYABLE)


def outcome_of(job_id: int, job: Job | None, done: bool) -> JobOutcome:
    if job is None:
        return JobOutcome(job_id, DELETED, done)
    state = str(job.state.value if isinstance(job.state, JobState) else job.state)
    error = None
    if job.state != JobState.COMPLETED and job.errors:
        last = job.errors[-1]
        error = str(last.get("error")) if isinstance(last, dict) else str(last)
    value = None
    if job.state == JobState.COMPLETED:
        if isinstance(job.meta.get("relay_error"), str):
            error = job.meta["relay_error"]
        try:
            value = job.recorded
        except ValueError as problem:  # a meta.return nothing can decode
            error = f"the recorded value cannot be read: {problem}"
    return JobOutcome(job_id, state, done, value, error, job)


class Waiter:
    """One ``await_many`` call: the ids it still waits for and what was last read of each."""

    __slots__ = (
        "done",
        "latest",
        "next_read",
        "pending",
        "poll_interval",
        "serial",
        "stopped",
        "with_retries",
    )

    def __init__(self, ids: Iterable[int], with_retries: bool, poll_interval: float) -> None:
        self.pending = set(ids)
        self.with_retries = with_retries
        self.poll_interval = poll_interval
        self.latest: dict[int, Job | None] = {}
        self.done = asyncio.Event()
        #: When this waiter's rows are read next, failing a wake-up (``time.monotonic()``).
        self.next_read = 0.0
        #: Its place in the order of registrations (Waiters.add): only reads that started
        #: after it registered are handed to it.
        self.serial = 0
        #: The instance stopped while it waited: it ended then, unfinished.
        self.stopped = False
        if not self.pending:
            self.done.set()  # nothing to wait for

    def take(self, found: dict[int, Job], read: Iterable[int]) -> None:
        """Rows were read for ``read`` (``found``: those that exist)."""
        for job_id in read:
            if job_id in self.pending:
                self.latest[job_id] = row = found.get(job_id)
                if is_done(row, self.with_retries):
                    self.pending.discard(job_id)
        if not self.pending:
            self.done.set()


Reader = Callable[[list[int]], Awaitable[dict[int, Job]]]


class Waiters:
    """Every waiter of one instance, served by one loop: whenever jobs they wait for may have
    changed (an ack here, a notification, a cancel) it reads the rows of those jobs, with the
    rows of every waiter whose poll is due (each waiter's rows are read at least every
    ``poll_interval``), 500 ids per statement, and hands them out. However many wait, the
    database sees one read per pass, never one per waiter, and a wake-up reads only the jobs
    it names (and polls due), not every job still waited for.

    A new waiter is read at the loop's next pass, which starts after it registered: a job that
    finished before is seen then (no wake-up can be lost between a registration and a read).
    A read that started before a waiter registered is not handed to it (it could be older
    than the registration: a job retried meanwhile would look finished).

    :meth:`stop` ends every wait still pending (``Waiter.stopped``); the loop starts again,
    on the running event loop, with the next waiter.
    """

    __slots__ = (
        "_dirty",
        "_ids",
        "_logged",
        "_overflow",
        "_read",
        "_registered",
        "_seen",
        "_stops",
        "_task",
        "_waiters",
        "_windows",
        "_woken",
    )

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._waiters: set[Waiter] = set()
        self._ids: dict[int, list[Waiter]] = {}  # id -> the waiters that wait for it
        self._dirty = asyncio.Event()
        self._woken: set[int] = set()  # ids woken since the last pass (and waited for)
        self._task: asyncio.Task[None] | None = None
        self._logged = 0.0
        self._windows = 0  # open windows (see open_window)
        self._seen: set[int] = set()  # the ids woken while one was open
        self._overflow = False  # too many to note: every open window has seen everything
        self._registered = 0  # waiters registered so far (the next one's serial)
        self._stops = 0  # how many times stop() ran (see stops)

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def add(self, waiter: Waiter, read_first: bool = True, stops: int | None = None) -> None:
        """Serve ``waiter``: its rows are read at the next pass, or, with ``read_first=False``
        (nothing about its jobs can have been missed), at the next wake-up or poll.
        ``stops``: :attr:`stops` as the wait began; if :meth:`stop` ran since, the wait
        ends at once, stopped, instead."""
        if stops is not None and stops != self._stops and waiter.pending:
            waiter.stopped = True
            waiter.done.set()
            return
        if not waiter.pending:
            return  # done already
        waiter.serial = self._registered
        self._registered += 1
        self._waiters.add(waiter)
        for job_id in waiter.pending:
            self._ids.setdefault(job_id, []).append(waiter)
        waiter.next_read = 0.0 if read_first else time.monotonic() + waiter.poll_interval
        if self._task is None or self._task.done():
            # An Event belongs to the event loop it was first awaited on: a new one for the
            # loop this runs on now (an instance used by sync calls, stopped, then started
            # again with asyncio, serves its waiters on the new loop).
            self._dirty = asyncio.Event()
            self._task = asyncio.create_task(self._serve(), name="oban-waiters")
        self._dirty.set()

    def remove(self, waiter: Waiter) -> None:
        if waiter not in self._waiters:
            return
        self._waiters.discard(waiter)
        for job_id in waiter.latest.keys() | waiter.pending:
            waiters = self._ids.get(job_id)
            if waiters is None:
                continue
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters:
                del self._ids[job_id]

    def wake(self, ids: Iterable[int]) -> None:
        """Jobs ``ids`` may have changed: read again now if anyone still waits for one of
        them."""
        if self._windows:
            ids = self._note(ids)
        if not self._ids:
            return
        woken = [job_id for job_id in ids if self.waits_for(job_id)]
        if woken:
            self._woken.update(woken)
            self._dirty.set()

    def resolve(self, jobs: Iterable[Job]) -> None:
        """``jobs`` are rows as just written and committed (this node's acks of relayed jobs):
        the waiters for them take these instead of reading them again."""
        found = {job.id: job for job in jobs if job.id is not None}
        if self._windows:
            self._note(found)
        self.deliver(found, found)

    def wanted(self, ids: Iterable[int]) -> list[int]:
        """Of ``ids``, which jobs may have changed, those some waiter still waits for (to be
        read and handed to :meth:`deliver`)."""
        if self._windows:
            ids = self._note(ids)
        if not self._ids:
            return []
        return [job_id for job_id in ids if self.waits_for(job_id)]

    def mark(self) -> int:
        """Taken before a read: given to :meth:`deliver`, the read goes only to the waiters
        registered before it started."""
        return self._registered

    def deliver(
        self, found: dict[int, Job], read: Iterable[int], before: int | None = None
    ) -> None:
        """Rows were read for ``read`` (``found``: those that exist): to the waiters of those
        ids, those registered before :meth:`mark` returned ``before`` when it is given (rows
        as just written by this node's acks need none)."""
        for job_id in read:
            for waiter in self._ids.get(job_id, ()):
                if job_id in waiter.pending and (before is None or waiter.serial < before):
                    waiter.take(found, (job_id,))

    def open_window(self) -> None:
        """Note the ids of every wake-up from now until :meth:`close_window`: a job inserted
        meanwhile whose id was not noted had no wake-up before its waiter registered."""
        self._windows += 1

    def seen(self, ids: Iterable[int]) -> bool:
        """Whether a wake-up for one of ``ids`` came since a window still open opened (or
        too many came to tell)."""
        return self._overflow or any(job_id in self._seen for job_id in ids)

    def close_window(self) -> None:
        self._windows -= 1
        if self._windows <= 0:
            self._windows = 0
            self._seen.clear()
            self._overflow = False

    def _note(self, ids: Iterable[int]) -> list[int]:
        noted = list(ids)
        if len(self._seen) + len(noted) > MAX_SEEN:
            self._overflow = True
        elif not self._overflow:
            self._seen.update(noted)
        return noted

    def waits_for(self, job_id: int) -> bool:
        """Whether a waiter still waits for job ``job_id``."""
        return any(job_id in waiter.pending for waiter in self._ids.get(job_id, ()))

    @property
    def stops(self) -> int:
        """How many times :meth:`stop` ran: a wait that read it before it registers and
        finds it changed after, was stopped meanwhile (see :meth:`add`)."""
        return self._stops

    async def stop(self) -> None:
        """Stop the loop and end every wait still pending, unfinished."""
        self._stops += 1
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # it died before: log it, the stop goes on
                logger.exception("the waiters' loop had failed")
        # One last read (the database is still open): the waits end with the latest state.
        left = sorted({job_id for waiter in self._waiters for job_id in waiter.pending})
        if left:
            try:
                async with asyncio.timeout(_LAST_READ_TIMEOUT):
                    found = await self._read(left)
            except Exception as error:
                logger.warning("the last read of the jobs waited for failed: %s", error)
            else:
                self.deliver(found, left)
        for waiter in list(self._waiters):
            if waiter.pending:
                waiter.stopped = True
                waiter.done.set()
        self._woken.clear()

    async def _serve(self) -> None:
        while self._waiters:
            self._dirty.clear()  # before the read: a change during it triggers another
            woken, self._woken = self._woken, set()
            mark = self._registered
            now = time.monotonic()
            due = [w for w in self._waiters if w.pending and w.next_read <= now]
            wanted = {job_id for job_id in woken if self.waits_for(job_id)}
            wanted.update(job_id for waiter in due for job_id in waiter.pending)
            if wanted:
                ids = sorted(wanted)
                try:
                    found = await self._read(ids)
                except Exception as error:  # waiters time out; the next pass tries again
                    self._woken.update(woken)  # a wake-up is never dropped by a failed read
                    now = time.monotonic()
                    if now - self._logged > 5.0:
                        self._logged = now
                        logger.warning("reading the jobs waited for failed: %s", error)
                else:
                    self.deliver(found, ids, mark)
                now = time.monotonic()
                for waiter in due:
                    waiter.next_read = now + waiter.poll_interval
            pending = [w.next_read for w in self._waiters if w.pending]
            if not pending:
                await self._dirty.wait()  # only finished waiters left: until one comes
                continue
            delay = min(pending) - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._dirty.wait()


def relay_ids(message: dict[str, Any]) -> list[int] | None:
    """The job ids of a ``relay`` notification, or ``None`` when it is not one (hostile or
    malformed input: dropped)."""
    ids = message.get("ids")
    if not isinstance(ids, list) or len(ids) > IDS_PER_NOTIFICATION:
        return None
    if not all(type(job_id) is int and 0 < job_id < 2**63 for job_id in ids):
        return None
    return ids
