"""What both engines send and read: JSON batch payloads (a whole batch travels as one JSON
parameter) and the conversion of job rows back to ``Job`` objects.

Each engine passes its own timestamp format (``timestamp``) and clamps durations (``seconds``)
as its database needs; the fields are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

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


def _keep(value: Any) -> Any:
    return value


def row_to_job(
    row: Sequence[Any],
    *,
    array: Callable[[Any], Any] = _keep,
    timestamp: Callable[[Any], datetime | None] = _keep,
) -> Job:
    """A job from a row in the column order every ``*_jobs.sql`` query returns: id, worker,
    queue, attempt, max_attempts, priority, args, meta, errors (JSON text), tags,
    attempted_by, inserted_at, attempted_at, scheduled_at, state, cancelled_at,
    completed_at, discarded_at. ``array`` and ``timestamp`` convert the engine's own types."""
    return Job(
        row[1],
        id=row[0],
        queue=row[2],
        attempt=row[3],
        max_attempts=row[4],
        priority=row[5],
        args=orjson.loads(row[6]),
        meta=orjson.loads(row[7]) if row[7] is not None else {},
        errors=orjson.loads(row[8]) if row[8] is not None else [],
        tags=array(row[9]) or [],
        attempted_by=array(row[10]),
        inserted_at=timestamp(row[11]),
        attempted_at=timestamp(row[12]),
        scheduled_at=timestamp(row[13]),
        state=row[14],
        cancelled_at=timestamp(row[15]),
        completed_at=timestamp(row[16]),
        discarded_at=timestamp(row[17]),
        _validate=False,
    )
