"""What both engines send and read: JSON batch payloads (a whole batch travels as one JSON
parameter) and the conversion of job rows back to ``Job`` objects.

Each engine passes its own timestamp format (``timestamp``) and clamps durations (``seconds``)
as its database needs; the fields are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from ..job import Job
from .base import Ack

#: Turns a timestamp into what the JSON payload holds (text, or a datetime orjson encodes).
Timestamp = Callable[[datetime | None], str | datetime | None]


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


#: Durations given to SQL (backoff, snooze) are kept within this many seconds (about 317
#: years), so a worker's enormous backoff or snooze still gives a valid timestamp on both
#: engines instead of an error that would fail the whole batch of acks.
MAX_SECONDS = 1e10


def clamp_seconds(value: float) -> float:
    """``value`` kept within +-:data:`MAX_SECONDS`."""
    return max(-MAX_SECONDS, min(MAX_SECONDS, float(value)))


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


def utc(value: datetime | None) -> datetime | None:
    """A naive UTC timestamp from the database, made aware."""
    return None if value is None else value.replace(tzinfo=UTC)


def row_to_job(
    row: Sequence[Any],
    *,
    array: Callable[[Any], Any] = _keep,
    timestamp: Callable[[Any], datetime | None] = utc,
) -> Job:
    """A job from a row in the column order every ``*_jobs.sql`` query returns: id, worker,
    queue, attempt, max_attempts, priority, args, meta, errors (JSON text), tags,
    attempted_by, inserted_at, attempted_at, scheduled_at, state, cancelled_at,
    completed_at, discarded_at. ``array`` and ``timestamp`` convert the engine's own types
    (``timestamp`` returns aware UTC datetimes)."""
    return Job._restore(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        orjson.loads(row[6]),
        orjson.loads(row[7]) if row[7] is not None else {},
        orjson.loads(row[8]) if row[8] is not None else [],
        array(row[9]) or [],
        array(row[10]) or [],
        row[14],
        timestamp(row[11]),
        timestamp(row[12]),
        timestamp(row[13]),
        timestamp(row[15]),
        timestamp(row[16]),
        timestamp(row[17]),
    )
