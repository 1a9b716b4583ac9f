"""The job model: ``Job``, ``JobState`` and the special results a worker may return."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar, Union

import orjson

from ._recorded import encode_recorded

__all__ = [
    "RECORDED_LIMIT",
    "Cancel",
    "Job",
    "JobState",
    "Record",
    "Snooze",
    "current_job",
    "scheduled_from_now",
]

T = TypeVar("T")

#: Column length limit enforced by the ``worker_length``/``queue_length`` constraints.
MAX_NAME_LENGTH = 127
RECORDED_LIMIT = 64_000_000


class JobState(StrEnum):
    """Where a job is in its lifecycle."""

    AVAILABLE = "available"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    DISCARDED = "discarded"
    EXECUTING = "executing"
    RETRYABLE = "retryable"
    SCHEDULED = "scheduled"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class Snooze:
    """Return from ``process`` to run the job again after ``seconds``.

    The attempt is not counted; ``meta["snoozed"]`` is incremented and ``meta`` (if given)
    is merged into the job's meta.

    >>> Snooze(60)
    Snooze(seconds=60, meta=None)
    """

    seconds: int | float
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float):
            raise TypeError(f"Snooze seconds must be a number, got {self.seconds!r}")
        if self.seconds < 0:
            raise ValueError(f"Snooze seconds must not be negative, got {self.seconds!r}")
        if self.meta is not None:
            _check_json("Snooze meta", self.meta)


@dataclass(frozen=True, slots=True)
class Cancel:
    """Return from ``process`` to cancel the job; ``reason`` is recorded in its errors.

    >>> Cancel("no longer needed")
    Cancel(reason='no longer needed')
    """

    reason: str


@dataclass(slots=True)
class Record:
    """Return from ``process`` to complete the job and store ``value`` with it.

    The value is encoded in Erlang's external term format (base64, unpadded) under
    ``meta["return"]`` so Elixir Oban and Oban Web can read it.

    Raises:
        ValueError: the encoded value is larger than ``limit`` bytes.
        TypeError: the value holds something that cannot be encoded.

    >>> Record({"total": 3}).encoded
    'g3QAAAABbQAAAAV0b3RhbGED'
    """

    value: Any
    limit: int = RECORDED_LIMIT
    encoded: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        encoded = encode_recorded(self.value)
        if len(encoded) > self.limit:
            raise ValueError(
                f"recorded value is {len(encoded)} bytes, exceeds limit of {self.limit}"
            )
        self.encoded = encoded


#: What ``process`` may return.
Result = Union[Cancel, Snooze, Record, T, None]  # noqa: UP007 - generic alias on 3.11

_current_job: ContextVar[Job | None] = ContextVar("oban_current_job", default=None)


def current_job() -> Job | None:
    """The job being processed in this context, or ``None`` outside a job.

    >>> current_job() is None
    True
    """
    return _current_job.get()


def scheduled_from_now(delay: timedelta | int | float) -> datetime:
    """The UTC datetime ``delay`` (seconds or a timedelta) from now."""
    if isinstance(delay, bool) or not isinstance(delay, timedelta | int | float):
        raise TypeError(f"scheduled_in must be seconds or a timedelta, got {delay!r}")
    if not isinstance(delay, timedelta):
        delay = timedelta(seconds=delay)
    return datetime.now(UTC) + delay


_STATES: dict[str, JobState] = {state.value: state for state in JobState}

_TIMESTAMP_FIELDS = (
    "inserted_at",
    "attempted_at",
    "cancelled_at",
    "completed_at",
    "discarded_at",
    "scheduled_at",
)

#: Fields a caller may set when creating or updating a job.
UPDATABLE_FIELDS = frozenset(
    {
        "args",
        "max_attempts",
        "meta",
        "priority",
        "queue",
        "scheduled_at",
        "scheduled_in",
        "schedule_in",
        "tags",
        "worker",
    }
)


class Job:
    """A unit of work: which worker runs, with what args, where and when.

    Jobs are usually built by a worker's ``new()``/``enqueue()``; building one directly
    validates it the same way.

    Raises:
        ValueError: a blank or too long queue/worker, ``max_attempts`` below 1,
            ``priority`` outside 0..9.
        TypeError: args/meta that are not dicts or cannot be encoded as JSON.

    >>> job = Job("app.workers.Mailer", args={"to": "ada"}, queue="mail", scheduled_in=60)
    >>> job.state
    <JobState.AVAILABLE: 'available'>
    """

    __slots__ = (
        "_cancellation",
        "args",
        "attempt",
        "attempted_at",
        "attempted_by",
        "cancelled_at",
        "completed_at",
        "discarded_at",
        "errors",
        "extra",
        "id",
        "inserted_at",
        "max_attempts",
        "meta",
        "priority",
        "queue",
        "scheduled_at",
        "state",
        "tags",
        "worker",
    )

    def __init__(
        self,
        worker: str,
        *,
        id: int | None = None,
        state: JobState | str = JobState.AVAILABLE,
        queue: str = "default",
        attempt: int = 0,
        max_attempts: int = 20,
        priority: int = 0,
        args: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        errors: list[Any] | None = None,
        tags: Iterable[str] | None = None,
        attempted_by: list[str] | None = None,
        inserted_at: datetime | None = None,
        attempted_at: datetime | None = None,
        cancelled_at: datetime | None = None,
        completed_at: datetime | None = None,
        discarded_at: datetime | None = None,
        scheduled_at: datetime | None = None,
        scheduled_in: timedelta | int | float | None = None,
        schedule_in: timedelta | int | float | None = None,
        extra: dict[str, Any] | None = None,
        _validate: bool = True,
    ) -> None:
        self.worker = worker
        self.id = id
        self.state = JobState(state)
        self.queue = queue
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.priority = priority
        self.args = args if args is not None else {}
        self.meta = meta if meta is not None else {}
        self.errors = errors if errors is not None else []
        if isinstance(tags, str):
            raise TypeError(f"tags must be a list of strings, got the string {tags!r}")
        self.tags: list[str] = list(tags) if tags is not None else []
        self.attempted_by = attempted_by if attempted_by is not None else []
        self.extra = extra if extra is not None else {}
        self._cancellation: asyncio.Event | None = None

        delay = scheduled_in if scheduled_in is not None else schedule_in
        if delay is not None:
            scheduled_at = scheduled_from_now(delay)

        self.inserted_at = inserted_at
        self.attempted_at = attempted_at
        self.cancelled_at = cancelled_at
        self.completed_at = completed_at
        self.discarded_at = discarded_at
        self.scheduled_at = scheduled_at

        # Timestamps from the database are naive UTC.
        for key in _TIMESTAMP_FIELDS:
            value = getattr(self, key)
            if value is not None and value.tzinfo is None:
                setattr(self, key, value.replace(tzinfo=UTC))

        if _validate:
            self._normalize_tags()
            self._validate()

    @classmethod
    def _restore(
        cls,
        id: int,
        worker: str,
        queue: str,
        attempt: int,
        max_attempts: int,
        priority: int,
        args: dict[str, Any],
        meta: dict[str, Any],
        errors: list[Any],
        tags: list[str],
        attempted_by: list[str],
        state: str,
        inserted_at: datetime | None,
        attempted_at: datetime | None,
        scheduled_at: datetime | None,
        cancelled_at: datetime | None,
        completed_at: datetime | None,
        discarded_at: datetime | None,
    ) -> Job:
        """A job read back from the database: trusted values, timestamps already aware.

        The hot path (every fetched job) skips ``__init__``'s defaults and validation."""
        job = cls.__new__(cls)
        job.id = id
        job.worker = worker
        job.queue = queue
        job.attempt = attempt
        job.max_attempts = max_attempts
        job.priority = priority
        job.args = args
        job.meta = meta
        job.errors = errors
        job.tags = tags
        job.attempted_by = attempted_by
        job.state = _STATES[state]
        job.inserted_at = inserted_at
        job.attempted_at = attempted_at
        job.scheduled_at = scheduled_at
        job.cancelled_at = cancelled_at
        job.completed_at = completed_at
        job.discarded_at = discarded_at
        job.extra = {}
        job._cancellation = None
        return job

    @classmethod
    def _from_db(cls, fields: Mapping[str, Any]) -> Job:
        """Build a job from a database row without re-validating it."""
        return cls(_validate=False, **fields)

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id}, worker={self.worker.rsplit('.', 1)[-1]}, "
            f"args={orjson.dumps(self.args).decode()}, queue={self.queue}, "
            f"state={self.state})"
        )

    __str__ = __repr__

    def update(self, changes: Mapping[str, Any]) -> Job:
        """Apply ``changes`` in place, re-validating, and return the job.

        Supports args, max_attempts, meta, priority, queue, scheduled_at, scheduled_in
        (or its alias schedule_in), tags and worker.

        >>> Job("app.W").update({"priority": 3}).priority
        3
        """
        changes = dict(changes)
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(
                f"cannot update {', '.join(sorted(unknown))}: updatable fields are "
                f"{', '.join(sorted(UPDATABLE_FIELDS))}"
            )
        delay = changes.pop("scheduled_in", None)
        alias = changes.pop("schedule_in", None)
        if delay is None:
            delay = alias
        if delay is not None:
            changes["scheduled_at"] = scheduled_from_now(delay)
        if "tags" in changes:
            if isinstance(changes["tags"], str):
                raise TypeError(
                    f"tags must be a list of strings, got the string {changes['tags']!r}"
                )
            changes["tags"] = list(changes["tags"] or [])
        for key, value in changes.items():
            setattr(self, key, value)
        if self.scheduled_at is not None and self.scheduled_at.tzinfo is None:
            self.scheduled_at = self.scheduled_at.replace(tzinfo=UTC)
        self._normalize_tags()
        self._validate()
        return self

    def cancelled(self) -> bool:
        """Whether cancellation of this running job was requested.

        Check it at safe points in long work and return ``Cancel(...)`` when it is true.
        """
        return self._cancellation is not None and self._cancellation.is_set()

    def _normalize_tags(self) -> None:
        if isinstance(self.tags, str):
            raise TypeError(f"tags must be a list of strings, got the string {self.tags!r}")
        self.tags = sorted({str(t).strip().lower() for t in self.tags if t and str(t).strip()})

    def _validate(self) -> None:
        for name in ("queue", "worker"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {value!r}")
            if not value.strip():
                raise ValueError(f"{name} must not be blank")
            if len(value) > MAX_NAME_LENGTH:
                raise ValueError(
                    f"{name} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}"
                )
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError(f"max_attempts must be an integer, got {self.max_attempts!r}")
        if self.max_attempts <= 0:
            raise ValueError(f"max_attempts must be greater than 0, got {self.max_attempts}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be an integer, got {self.priority!r}")
        if not 0 <= self.priority <= 9:
            raise ValueError(f"priority must be between 0 and 9, got {self.priority}")
        if self.scheduled_at is not None and not isinstance(self.scheduled_at, datetime):
            raise ValueError(f"scheduled_at must be a datetime, got {self.scheduled_at!r}")
        _check_json("args", self.args)
        _check_json("meta", self.meta)


def _check_json(name: str, value: Any) -> None:
    """Raise TypeError naming the first value in ``value`` that JSON cannot hold."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}: {value!r}")
    try:
        orjson.dumps(value)
    except TypeError:
        path, bad = _find_unencodable(value, name)
        raise TypeError(
            f"{name} must be JSON-serialisable: {path} is {type(bad).__name__} {bad!r}"
        ) from None


def _find_unencodable(value: Any, path: str) -> tuple[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} key {key!r}", key
            try:
                orjson.dumps(item)
            except TypeError:
                return _find_unencodable(item, f"{path}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            try:
                orjson.dumps(item)
            except TypeError:
                return _find_unencodable(item, f"{path}[{index}]")
    return path, value
