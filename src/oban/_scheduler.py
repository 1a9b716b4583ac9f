"""Inserts cron jobs at each minute boundary (leader only).

Each entry inserts at most one job per minute however many nodes run: only the leader
evaluates, and the insert itself skips an entry that already has a job for that minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from . import telemetry
from ._cron import CronEntry
from ._engines.base import Engine
from ._looper import Looper
from ._query import CronInfo
from .job import Job

logger = logging.getLogger("oban.scheduler")


def cron_job(entry: CronEntry, at: datetime) -> Job:
    """The job ``entry`` inserts for minute ``at``."""
    worker: Any = entry.worker
    job: Job = worker.new({})
    job.meta = {
        **job.meta,
        "cron": True,
        "cron_expr": entry.expression.source,
        "cron_name": entry.name,
        "cron_at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return job


def describe(entry: CronEntry, timezone: str, last: Job | None, now: datetime) -> CronInfo:
    """``entry`` as :meth:`Oban.crons` shows it: the job it inserts, ``last`` (its newest
    job) and the first minute after ``now`` it is due, read in its timezone (else
    ``timezone``, the scheduler's)."""
    zone = entry.timezone or timezone
    job = cron_job(entry, now)
    options = {k: v for k, v in getattr(entry.worker, "_opts", {}).items() if k != "queue"}
    try:
        local = entry.expression.next_after(now.astimezone(ZoneInfo(zone)))
        next_at: datetime | None = local.astimezone(UTC)
    except ValueError:  # it never matches again
        next_at = None
    return CronInfo(
        name=entry.name,
        expression=entry.expression.source,
        worker=job.worker,
        queue=job.queue,
        args=job.args,
        options=options,
        timezone=zone,
        last_job=last,
        next_at=next_at,
    )


class Scheduler(Looper):
    """Wakes just after each minute boundary and inserts the entries due at that minute."""

    name = "scheduler"
    leader_only = True

    def __init__(
        self,
        *,
        engine: Engine,
        entries: Callable[[], Sequence[CronEntry]],
        instance: str,
        is_leader: Callable[[], bool],
        timezone: str = "UTC",
    ) -> None:
        super().__init__(interval=60.0, is_leader=is_leader)
        self._engine = engine
        self._entries = entries
        self._instance = instance
        self._timezone = timezone
        self._last: datetime | None = None

    async def evaluate(self, at: datetime) -> list[int]:
        """Insert the jobs of every entry due at minute ``at``; return the new ids."""
        minute = at.astimezone(UTC).replace(second=0, microsecond=0)
        due = [e for e in self._entries() if e.is_due(minute, self._timezone)]
        with telemetry.span("oban.scheduler.evaluate", {"cron_at": minute}) as span:
            ids: list[int] = []
            if due:
                ids = await self._engine.insert_cron_jobs(
                    self._instance, [cron_job(entry, minute) for entry in due]
                )
            span.add({"enqueued_count": len(ids)})
        return ids

    async def tick(self) -> None:
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        # A clock stepping backwards must not evaluate a minute twice.
        if self._last is not None and minute <= self._last:
            return
        self._last = minute
        await self.evaluate(minute)

    async def _loop(self) -> None:
        while True:
            now = datetime.now(UTC)
            boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            await asyncio.sleep((boundary - now).total_seconds() + 0.01)
            if self._should_tick():
                await self.tick_safely()
