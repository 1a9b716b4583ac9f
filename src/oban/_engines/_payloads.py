"""What both engines send and read: JSON batch payloads (a whole batch travels as one JSON
parameter) and the conversion of job rows back to ``Job`` objects.

Each engine passes its own timestamp format (``timestamp``) and clamps durations (``seconds``)
as its database needs; the fields are the same everywhere.

Nothing one job holds may fail a statement that carries other jobs' values or rows, so:

* values are made storable before they reach SQL: :func:`storable_text` escapes what
  PostgreSQL (a NUL) or the JSON encoder (a lone surrogate) refuses and caps the size of
  error texts; a recorded result is bounded per job (:data:`MAX_RECORDED_CHARS`) and a batch
  of acks by its weight (:func:`ack_weight`, :data:`MAX_BATCH_WEIGHT`), below PostgreSQL's
  255 MB limit for one jsonb value;
* a row that cannot be read in full (a 400-digit integer or JSON nested past 1,024 levels,
  which the decoder refuses; a column that is not JSON or not UTF-8 on SQLite; a timestamp
  past year 9999) becomes an :class:`UnreadableJob` of its own instead of an exception that
  loses every row read with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from .._unique import Replacement
from ..job import Job, JobState
from .base import Ack

logger = logging.getLogger("oban.engine")

#: Turns a timestamp into what the JSON payload holds (text, or a datetime orjson encodes).
Timestamp = Callable[[datetime | None], str | datetime | None]


def _same(value: float) -> float:
    return value


def _new_rows(jobs: Sequence[Job], timestamp: Timestamp) -> list[dict[str, Any]]:
    return [
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


def new_jobs(jobs: Sequence[Job], timestamp: Timestamp) -> str:
    """Jobs to insert."""
    return orjson.dumps(_new_rows(jobs, timestamp)).decode()


def new_unique_jobs(jobs: Sequence[Job], timestamp: Timestamp) -> str:
    """Jobs to insert, some unique, each with its ``rank`` in key order: the insert goes in
    that order, so two batches that share keys take them in the same order and cannot
    deadlock (ids still follow the input order)."""
    rows = _new_rows(jobs, timestamp)

    def key(index: int) -> str:
        found = jobs[index].meta.get("uniq_key")
        return found if isinstance(found, str) else ""

    order = sorted(range(len(jobs)), key=key)
    for rank, index in enumerate(order):
        rows[index]["rank"] = rank
    return orjson.dumps(rows).decode()


def replacements(pairs: Sequence[Replacement], timestamp: Timestamp) -> str:
    """Duplicates whose ``replace=`` applies to the job holding their key: for each, that
    holder's id and state, the fields to update on it and the duplicate's values."""
    return orjson.dumps(
        [
            {
                "id": id_,
                "state": state,
                "fields": list((job.replace or {}).get(state, ())),
                "queue": job.queue,
                "worker": job.worker,
                "args": job.args,
                "meta": job.meta,
                "tags": job.tags,
                "priority": job.priority,
                "max_attempts": job.max_attempts,
                "scheduled_at": timestamp(job.scheduled_at),
            }
            for job, id_, state, _holder in pairs
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


#: Error texts (a traceback, a ``Cancel`` reason) longer than this many characters are
#: stored cut in the middle, with a note of how much was left out.
MAX_ERROR_CHARS = 100_000
#: Characters of the encoded value one ``Record`` result may store (its default limit,
#: ``RECORDED_LIMIT``, is below it); a larger result is the job's error instead.
MAX_RECORDED_CHARS = 100_000_000
#: The acks of one batch weigh at most this much (:func:`ack_weight`, about their characters),
#: unless a single ack weighs more: it then travels alone. Far below the 255 MB PostgreSQL
#: accepts in one jsonb value, even when every character takes six bytes in JSON.
MAX_BATCH_WEIGHT = 32_000_000

_ESCAPED_NUL = "\\x00"


def storable_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` as both databases store it: NUL (PostgreSQL refuses it in text and jsonb,
    SQLite's JSON functions cut the text there) escaped as ``\\x00``, lone surrogates (no
    JSON encoder accepts them) as ``\\udXXX``, and a text over ``limit`` characters cut in the
    middle (its start and its end kept, with a note of how much was left out)."""
    if "\x00" in text:
        text = text.replace("\x00", _ESCAPED_NUL)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        head = limit * 2 // 3
        tail = limit - head
        left_out = len(text) - head - tail
        text = f"{text[:head]}\n\n[... {left_out} characters truncated ...]\n\n{text[-tail:]}"
    return text


def describe(error: BaseException, limit: int = 500) -> str:
    """``error`` in one storable line: its type and message, at most about ``limit``
    characters."""
    try:
        text = " ".join(str(error).split()) or "(no message)"
    except Exception:
        text = "(its message cannot be shown)"
    return storable_text(f"{type(error).__name__}: {text}", limit)


def ack_weight(ack: Ack) -> int:
    """About how many characters ``ack`` adds to a batch's JSON beyond its fixed fields: its
    error text and its meta (a recorded result's encoded value, or the encoded meta)."""
    weight = 0 if ack.error is None else len(ack.error)
    meta = ack.meta
    if meta:
        value = meta.get("return")
        if isinstance(value, str) and len(meta) <= 2:
            weight += len(value)
        else:
            try:
                weight += len(orjson.dumps(meta))
            except (TypeError, ValueError):
                pass  # refused when written: the acker then writes it alone
    return weight


def counter(value: Any) -> int:
    """A meta counter (``snoozed``, ``rescued``) as stored, read defensively as the SQL of both
    engines reads it: a whole number from 0 to 2**53 - 1 counts, anything else (text, a list,
    a fraction, a negative or huge number) counts as 0, so the next count is 1."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and 0 <= value < 2**53:
        return value
    return 0


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
                "wanted": ack.wanted,
            }
            for ack in items
        ]
    ).decode()


def updates(jobs: Sequence[Job], timestamp: Timestamp) -> str:
    """Validated job changes, with the state each job was read in. An
    :class:`UnreadableJob` is left out: writing it would replace what could not be read
    with empty values."""
    if any(type(job) is UnreadableJob for job in jobs):
        for job in jobs:
            if type(job) is UnreadableJob:
                logger.warning("job %s is not updated: %s", job.id, job.unreadable)
        jobs = [job for job in jobs if type(job) is not UnreadableJob]
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


class Unloadable:
    """A column value the database driver could not turn into a Python value (PostgreSQL's
    ``infinity`` or a year past 9999 in a timestamp): :func:`row_to_job` names it in
    :attr:`UnreadableJob.unreadable`."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unloadable({self.reason!r})"


class UnreadableJob(Job):
    """A job whose row could not be read in full (a value the JSON decoder refuses, such as
    an integer of 400 digits or nesting past 1,024 levels; on SQLite a column that is not
    JSON or not UTF-8; a timestamp past year 9999).

    The fields that could be read hold their values, the others empty ones (``{}``, ``[]``,
    ``None``); :attr:`unreadable` names each column that could not be read and why. A
    producer that claims one does not run it: the job is discarded with that error, since
    reading the same row again would fail the same way. ``get_job`` returns one as it is;
    updating one changes nothing (it would overwrite what could not be read).
    """

    __slots__ = ("unreadable",)

    unreadable: str

    def update(self, changes: Mapping[str, Any]) -> Job:
        """Nothing: the job is left as it is stored (see the class's doc)."""
        return self


class UnreadableJobError(ValueError):
    """The error recorded for an :class:`UnreadableJob` that was claimed."""


def row_to_job(
    row: Sequence[Any],
    *,
    array: Callable[[Any], Any] = _keep,
    timestamp: Callable[[Any], datetime | None] = utc,
    text: Callable[[Any], Any] = _keep,
) -> Job:
    """A job from a row in the column order every ``*_jobs.sql`` query returns: id, worker,
    queue, attempt, max_attempts, priority, args, meta, errors (JSON text), tags,
    attempted_by, inserted_at, attempted_at, scheduled_at, state, cancelled_at,
    completed_at, discarded_at. ``array``, ``timestamp`` and ``text`` convert the engine's own
    types (``timestamp`` returns aware UTC datetimes).

    A row that cannot be read in full gives an :class:`UnreadableJob` instead of an error."""
    try:
        return Job._restore(
            row[0],
            text(row[1]),
            text(row[2]),
            row[3],
            row[4],
            row[5],
            orjson.loads(row[6]),
            orjson.loads(row[7]) if row[7] is not None else {},
            orjson.loads(row[8]) if row[8] is not None else [],
            array(row[9]) or [],
            array(row[10]) or [],
            text(row[14]),
            timestamp(row[11]),
            timestamp(row[12]),
            timestamp(row[13]),
            timestamp(row[15]),
            timestamp(row[16]),
            timestamp(row[17]),
        )
    except Exception as error:
        return _unreadable(row, error, array, timestamp, text)


def _unreadable(
    row: Sequence[Any],
    error: Exception,
    array: Callable[[Any], Any],
    timestamp: Callable[[Any], datetime | None],
    text: Callable[[Any], Any],
) -> UnreadableJob:
    """Each column of ``row`` read on its own, those that fail named."""
    problems: list[str] = []

    def read(name: str, convert: Callable[[Any], Any], value: Any, empty: Any) -> Any:
        if isinstance(value, Unloadable):
            problems.append(f"{name}: {value.reason}")
            return empty
        try:
            return convert(value)
        except Exception as failed:
            problems.append(f"{name}: {describe(failed, 300)}")
            return empty

    def json_or(empty: Any) -> Callable[[Any], Any]:
        return lambda value: empty if value is None else orjson.loads(value)

    def state(value: Any) -> JobState:
        return JobState(text(value))

    job = UnreadableJob._restore(
        row[0],
        read("worker", text, row[1], ""),
        read("queue", text, row[2], ""),
        read("attempt", _int, row[3], 0),
        read("max_attempts", _int, row[4], 1),
        read("priority", _int, row[5], 0),
        read("args", json_or({}), row[6], {}),
        read("meta", json_or({}), row[7], {}),
        read("errors", json_or([]), row[8], []),
        read("tags", array, row[9], []) or [],
        read("attempted_by", array, row[10], []) or [],
        read("state", state, row[14], JobState.AVAILABLE),
        read("inserted_at", timestamp, row[11], None),
        read("attempted_at", timestamp, row[12], None),
        read("scheduled_at", timestamp, row[13], None),
        read("cancelled_at", timestamp, row[15], None),
        read("completed_at", timestamp, row[16], None),
        read("discarded_at", timestamp, row[17], None),
    )
    if not problems:
        problems.append(describe(error, 300))
    assert isinstance(job, UnreadableJob)
    job.unreadable = f"cannot read job {row[0]}'s row: " + "; ".join(problems)
    return job


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}: {value!r:.40}")
    return value
