"""The engine protocol every database implementation provides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .._query import JobFilter, JobStats
from ..job import Job

#: The error recorded for a job cancelled while it ran (the canceller writes it with the
#: state; the ack that follows the stop is only a fallback for a canceller that did not).
CANCELLED_WHILE_EXECUTING = "cancelled while executing"


def sweep_page(rows: Sequence[Sequence[Any]], limit: int) -> tuple[list[str], int]:
    """The workflow sweeper's page of suspended jobs, ``rows`` of (workflow id or None, job
    id) in id order: the distinct workflow ids, and the job id the next page starts after
    (0 when this page was the last: the next starts over)."""
    workflows = sorted({str(row[0]) for row in rows if row[0] is not None})
    after = int(rows[-1][1]) if len(rows) >= limit else 0
    return workflows, after


@dataclass(slots=True)
class Ack:
    """The outcome of one execution, waiting to be written.

    ``attempted_at`` is the value the job was fetched with; the write is guarded by it.
    """

    id: int
    attempted_at: datetime | None
    state: str
    attempt_change: int = 0
    schedule_in: float | None = None
    error: str | None = None
    meta: dict[str, Any] | None = None
    snooze: bool = False
    queue: str = ""
    #: ``meta`` is the job's whole new meta rather than keys to merge (engine-internal).
    replace_meta: bool = False
    #: The job was cancelled while it ran: whoever cancelled it already wrote the row, so
    #: this ack normally changes nothing (and that is expected, not stale).
    killed: bool = False
    #: The job was enqueued with ``relay``: waiters on other nodes hear of this ack.
    relay: bool = False
    #: A waiter of this instance waits for the job: the ack statement returns its row as
    #: written (PostgreSQL), so that it is not read again.
    wanted: bool = False
    #: The id of the job's workflow, if any: once written, its waiting jobs are checked.
    workflow: str | None = None


@dataclass(frozen=True, slots=True)
class ProducerRow:
    """One producer as its row and the executing jobs it claimed describe it."""

    uuid: str
    node: str
    queue: str
    meta: dict[str, Any]
    started_at: datetime
    updated_at: datetime
    running: list[int]


class Engine(Protocol):
    """Whole database operations, taking and returning model objects."""

    prefix: str
    #: Told, per queue, how many unique jobs staging discarded because another job holds
    #: their key (docs/unique.md).
    on_unique_conflicts: Callable[[dict[str, int]], None] | None

    async def check_schema(self) -> None:
        """Raise SchemaNotInstalledError/DatabaseUnavailableError when not usable."""

    async def insert_jobs(self, jobs: Sequence[Job], conn: Any = None) -> list[Job]:
        """Insert ``jobs`` in one statement; fill id, state and timestamps; return them."""

    def insert_jobs_sync(self, jobs: Sequence[Job], conn: Any) -> list[Job]:
        """:meth:`insert_jobs` on the caller's synchronous connection (the sync API's
        ``conn=``), in its transaction and thread, without an event loop."""

    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop that must run this engine's operations (its connections belong to
        it), or ``None`` while any loop may."""

    async def fetch_jobs(self, queue: str, demand: int, node: str, uuid: str) -> list[Job]:
        """Claim up to ``demand`` available jobs of ``queue``, marking them executing."""

    async def ack_jobs(self, acks: Sequence[Ack]) -> set[int]:
        """Write finished executions; return the ids that were still executing."""

    async def ack_fetch_jobs(
        self, acks: Sequence[Ack], queue: str, demand: int, node: str, uuid: str
    ) -> tuple[set[int], list[Job]]:
        """:meth:`ack_jobs` and :meth:`fetch_jobs` at once, all or nothing: a producer's
        fetch carries the acks waiting to be written. Returns (acked ids, claimed jobs)."""

    async def list_jobs(
        self, where: JobFilter, after: int | None, limit: int, floor: int | None = None
    ) -> list[Job]:
        """Up to ``limit`` jobs matching ``where`` with an id below ``after`` and not below
        ``floor``, newest first."""

    async def max_job_id(self, below: int | None) -> int | None:
        """The largest job id (below ``below`` when given), ``None`` without such a job; one
        probe of the primary key."""

    async def count_jobs(
        self, states: Sequence[str] | None, queues: Sequence[str] | None, limit: int
    ) -> list[tuple[str, str, bool, int]]:
        """(state, queue, estimated, count) for every pair with jobs; past ``limit`` a pair's
        count may be an estimate (``estimated`` true)."""

    async def last_cron_jobs(self, names: Sequence[str]) -> list[Job]:
        """The newest job (latest ``meta.cron_at``) of each cron entry named, where there is
        one; an indexed lookup per name, never a pass over the table."""

    async def job_stats(self, window: int, bucket: int, limit: int) -> JobStats:
        """Jobs finished in the last ``window`` seconds per ``bucket`` and queue, from at most
        the newest ``limit`` of them (see :class:`~oban._query.JobStats`)."""

    async def stage_jobs(self, queues: Sequence[str] | None, limit: int) -> dict[str, int]:
        """Make up to ``limit`` due scheduled/retryable jobs of ``queues`` (``None``: every
        queue) available, locked first and guarded by their state; wake those queues'
        producers. Returns how many jobs each woken queue received (every queue that
        received some, and on PostgreSQL every other queue with available jobs, at 0)."""

    async def get_jobs(self, ids: Sequence[int]) -> list[Job]:
        """Load jobs by id."""

    async def insert_producer(
        self, uuid: str, name: str, node: str, queue: str, meta: dict[str, Any]
    ) -> None:
        """Record a running producer."""

    async def delete_producer(self, uuid: str) -> None:
        """Forget a producer."""

    async def notify(self, channel: str, payloads: Sequence[str]) -> None:
        """Send ``payloads`` on ``channel`` (the short name, e.g. ``signal``)."""

    async def elect_leader(self, name: str, node: str, ttl: float) -> bool:
        """Take or extend the lead for ``name``; whether ``node`` leads now."""

    async def resign_leader(self, name: str, node: str) -> None:
        """Give up the lead if ``node`` holds it (the caller announces it on ``leader``)."""

    async def prune_jobs(self, max_age: float, limit: int) -> int:
        """Delete up to ``limit`` finished jobs older than ``max_age`` seconds."""

    async def rescue_jobs(
        self, rescue_after: float, producer_max_age: float, limit: int
    ) -> dict[str, int]:
        """Rescue orphaned executing jobs; counts by the state they moved to."""

    async def refresh_producers(self, producers: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
        """Heartbeat producers (uuid, meta); return the uuids that had a row."""

    async def list_producers(self, name: str, max_age: float) -> list[ProducerRow]:
        """Every node's producers of instance ``name`` that heartbeated within ``max_age``."""

    async def cleanup_producers(self, max_age: float) -> int:
        """Delete producers silent for ``max_age`` seconds with nothing executing."""

    async def expire_producer(self, uuid: str) -> None:
        """Mark a producer's heartbeat as long gone."""

    async def insert_cron_jobs(self, name: str, jobs: Sequence[Job]) -> list[int]:
        """Insert cron jobs, skipping entries that already have a job for their minute."""

    async def cancel_jobs(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Cancel ``ids``; return (cancelled ids, executing ids to signal)."""

    async def retry_jobs(self, ids: Sequence[int]) -> int:
        """Make non-running, non-available jobs available now; return how many."""

    async def delete_jobs(self, ids: Sequence[int]) -> int:
        """Delete non-running jobs; return how many."""

    async def update_jobs(self, jobs: Sequence[Job]) -> list[Job]:
        """Write the updatable fields of non-running ``jobs``; return them as stored."""

    async def all_enqueued(self) -> list[Job]:
        """Jobs waiting to run, newest first (testing)."""

    async def stage_all_jobs(self, queue: str) -> int:
        """Make every scheduled/retryable job of ``queue`` available (testing)."""

    async def reset(self) -> None:
        """Empty the oban tables (testing)."""
