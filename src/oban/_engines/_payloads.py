"""JSON payloads both engines send: whole batches travel as one JSON parameter.

Each engine passes its own timestamp format (``timestamp``) and clamps durations (``seconds``)
as its database needs; the fields are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import orjson

from ..job import Job
from .base import Ack

Timestamp = Callable[[datetime | None], str | None]


def _same(value: float) -> float:
    return value


def new_jobs(jobs: Sequence[Job], timestamp: Timestamp) -> str:
    """Jobs to insert."""
    return orjson.dumps(
        [
            {
                "state": job.state.value,
                "queue": job.queue,
                "worker": job.worker,
                "args": job.args,
                "meta": job.meta,
                "tags": job.tags,
                "priority": job.priority,
                "max_attempts": job.max_attempts,
                "scheduled_at": timestamp(job.scheduled_at),
            }
            for job in jobs
        ]
    ).decode()


def cron_jobs(jobs: Sequence[Job]) -> str:
    """Cron jobs to insert (always available now)."""
    return orjson.dumps(
        [
            {
                "queue": job.queue,
                "worker": job.worker,
                "args": job.args,
                "meta": job.meta,
                "tags": job.tags,
                "priority": job.priority,
                "max_attempts": job.max_attempts,
            }
            for job in jobs
        ]
    ).decode()


def acks(
    items: Sequence[Ack], timestamp: Timestamp, seconds: Callable[[float], float] = _same
) -> str:
    """Finished executions to write."""
    return orjson.dumps(
        [
            {
                "id": ack.id,
                "attempted_at": timestamp(ack.attempted_at),
                "state": ack.state,
                "attempt_change": ack.attempt_change,
                "schedule_in": None if ack.schedule_in is None else seconds(ack.schedule_in),
                "error": ack.error,
                "meta": ack.meta,
                "snooze": ack.snooze,
                "replace_meta": ack.replace_meta,
            }
            for ack in items
        ]
    ).decode()


def updates(jobs: Sequence[Job], timestamp: Timestamp) -> str:
    """Validated job changes, with the state each job was read in."""
    return orjson.dumps(
        [
            {
                "id": job.id,
                "state": job.state.value,
                "args": job.args,
                "max_attempts": job.max_attempts,
                "meta": job.meta,
                "priority": job.priority,
                "queue": job.queue,
                "scheduled_at": timestamp(job.scheduled_at),
                "tags": job.tags,
                "worker": job.worker,
            }
            for job in jobs
        ]
    ).decode()
