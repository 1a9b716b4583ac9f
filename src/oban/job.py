"""The job model: ``Job``, ``JobState`` and the special results a worker may return."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Never, TypeVar, Union

import orjson

from ._jsonable import check_list, check_object
from ._options import check_names
from ._recorded import decode_recorded, encode_recorded
from ._unique import Unique, UniqueOptions, normalize_replace, normalize_unique

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
#: ``attempt`` and ``max_attempts`` are ``smallint`` columns.
MAX_ATTEMPTS = 32_767
_MAX_ID = 2**63 - 1
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
    is merged into the job's meta. A delay longer than about 317 years (``Snooze(10**400)``
    included) is snoozed for that long.

    >>> Snooze(60)
    Snooze(seconds=60, meta=None)
    """

    seconds: int | float
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float):
            raise TypeError(f"Snooze seconds must be a number, got {self.seconds!r}")
        if self.seconds != self.seconds or self.seconds < 0:
            raise ValueError(f"Snooze seconds must not be negative or NaN, got {self.seconds!r}")
        if self.meta is not None:
            object.__setattr__(self, "meta", check_object("Snooze meta", self.meta))


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
    try:
        span = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
        return datetime.now(UTC) + span
    except (OverflowError, ValueError):
        raise ValueError(f"scheduled_in must be a finite delay in range, got {delay!r}") from None


_STATES: dict[str, JobState] = {state.value: state for state in JobState}

#: Fields a caller may set when updating a job.
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
    validates it the same way. ``args`` and ``meta`` must be JSON exactly (tuples become
    lists); ``extra`` holds runtime-only data that is never stored.

    Raises:
        TypeError: an option of the wrong type (``priority="1"``), or args/meta/errors
            holding something JSON cannot represent (the message names the path).
        ValueError: an unknown option (with a did-you-mean), a blank or too long
            queue/worker, ``max_attempts`` outside 1..32767, ``priority`` outside 0..9,
            ``attempt`` outside 0..max_attempts, an unknown state, or two of
            ``scheduled_at``/``scheduled_in``/``schedule_in``.
        OptionNotImplementedError: an option that is not implemented yet (``global_limit``, ...).

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
        "conflict",
        "discarded_at",
        "errors",
        "extra",
        "id",
        "inserted_at",
        "max_attempts",
        "meta",
        "priority",
        "queue",
        "replace",
        "scheduled_at",
        "state",
        "tags",
        "unique",
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
        unique: bool | UniqueOptions | Unique | None = None,
        replace: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
        _validate: bool = True,
        **unknown: Never,
    ) -> None:
        if unknown:
            check_names(unknown, JOB_FIELDS, "Job()")
        self.worker = worker
        self.id = id
        self.state = state if type(state) is JobState else _to_state(state)
        self.queue = queue
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.priority = priority
        self.args = args if args is not None else {}
        self.meta = meta if meta is not None else {}
        self.errors = errors if errors is not None else []
        self.tags: list[str] = _tag_list(tags)
        self.attempted_by = attempted_by if attempted_by is not None else []
        self.extra = extra if extra is not None else {}
        self._cancellation: asyncio.Event | None = None
        #: How this job is unique (``unique=``), or ``None``: see docs/unique.md.
        self.unique: Unique | None = None if unique is None else normalize_unique(unique)
        #: What a duplicate insert updates on the job holding the key, by its state.
        self.replace = None if replace is None else normalize_replace(replace)
        #: True when an insert found a duplicate: the job then describes that existing job
        #: (its id, state, queue and times; ``id`` is ``None`` if it could not be seen).
        self.conflict = False

        if scheduled_in is not None or schedule_in is not None:
            scheduled_at = _schedule(scheduled_at, scheduled_in, schedule_in)
        # Timestamps from the database are naive UTC.
        self.inserted_at = None if inserted_at is None else _aware("inserted_at", inserted_at)
        self.attempted_at = None if attempted_at is None else _aware("attempted_at", attempted_at)
        self.cancelled_at = None if cancelled_at is None else _aware("cancelled_at", cancelled_at)
        self.completed_at = None if completed_at is None else _aware("completed_at", completed_at)
        self.discarded_at = None if discarded_at is None else _aware("discarded_at", discarded_at)
        self.scheduled_at = None if scheduled_at is None else _aware("scheduled_at", scheduled_at)

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
        job.unique = None
        job.replace = None
        job.conflict = False
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

        Raises:
            ValueError: a field that cannot be updated, or an invalid value.
            TypeError: a value of the wrong type.

        >>> Job("app.W").update({"priority": 3}).priority
        3
        """
        changes = dict(changes)
        _check_updatable(changes)
        if "scheduled_in" in changes or "schedule_in" in changes:
            changes["scheduled_at"] = _schedule(
                changes.get("scheduled_at"),
                changes.pop("scheduled_in", None),
                changes.pop("schedule_in", None),
            )
        if "tags" in changes:
            changes["tags"] = _tag_list(changes["tags"])
        if changes.get("scheduled_at") is not None:
            changes["scheduled_at"] = _aware("scheduled_at", changes["scheduled_at"])
        for key, value in changes.items():
            setattr(self, key, value)
        self._normalize_tags()
        self._validate()
        return self

    @property
    def recorded(self) -> Any:
        """The value the worker recorded by returning ``Record(value)``, decoded, or
        ``None`` when it recorded nothing (``meta["recorded"]`` tells a recorded ``None``
        apart). Values recorded by Elixir workers decode the same way.

        Raises:
            ValueError: ``meta["return"]`` is missing or is not a term that can be decoded.

        >>> Job("app.W", meta={"recorded": True, "return": Record([1, 2]).encoded}).recorded
        [1, 2]
        """
        if self.meta.get("recorded") is not True:
            return None
        encoded = self.meta.get("return")
        if not isinstance(encoded, str):
            raise ValueError(f"meta['recorded'] is true but meta['return'] is {encoded!r}")
        return decode_recorded(encoded)

    def cancelled(self) -> bool:
        """Whether cancellation of this running job was requested.

        Check it at safe points in long work and return ``Cancel(...)`` when it is true.
        """
        return self._cancellation is not None and self._cancellation.is_set()

    def _normalize_tags(self) -> None:
        if isinstance(self.tags, str):
            raise TypeError(f"tags must be a list of strings, got the string {self.tags!r}")
        if self.tags:
            self.tags = sorted({str(t).strip().lower() for t in self.tags if t and str(t).strip()})

    def _validate(self) -> None:
        # Fast paths first: validation runs for every job a worker builds.
        _check_name("queue", self.queue)
        _check_name("worker", self.worker)
        limit = self.max_attempts
        if type(limit) is not int or not 0 < limit <= MAX_ATTEMPTS:
            _check_int("max_attempts", limit, 1, MAX_ATTEMPTS)
        if type(self.priority) is not int or not 0 <= self.priority <= 9:
            _check_int("priority", self.priority, 0, 9)
        if type(self.attempt) is not int or not 0 <= self.attempt <= limit:
            _check_int("attempt", self.attempt, 0, limit)
        if self.id is not None:
            _check_int("id", self.id, 1, _MAX_ID)
        if self.scheduled_at is not None:
            _aware("scheduled_at", self.scheduled_at)
        self.args = check_object("args", self.args)
        self.meta = check_object("meta", self.meta)
        self.errors = check_list("errors", self.errors)
        if self.attempted_by:
            _check_strings("attempted_by", self.attempted_by)
        if not isinstance(self.extra, dict):
            raise TypeError(f"extra must be a dict, got {type(self.extra).__name__}")
        if self.replace is not None and self.unique is None:
            raise ValueError("replace= updates the job a unique job duplicates: give unique= too")


#: The keyword arguments of ``Job(...)``: every field a worker's ``new()`` accepts per job.
JOB_FIELDS: frozenset[str] = frozenset(
    name
    for name, parameter in inspect.signature(Job).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY and not name.startswith("_")
)


def _to_state(value: object) -> JobState:
    if not isinstance(value, str):
        raise TypeError(f"state must be a JobState or str, got {type(value).__name__}: {value!r}")
    found = _STATES.get(value)
    if found is None:
        raise ValueError(f"state must be one of {', '.join(_STATES)}, got {value!r}")
    return found


def _tag_list(tags: Any) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of strings, got the string {tags!r}")
    try:
        return list(tags)
    except TypeError:
        raise TypeError(
            f"tags must be a list of strings, got {type(tags).__name__}: {tags!r}"
        ) from None


def _schedule(
    at: datetime | None,
    scheduled_in: timedelta | int | float | None,
    schedule_in: timedelta | int | float | None,
) -> datetime | None:
    if scheduled_in is None:
        scheduled_in = schedule_in
    elif schedule_in is not None:
        raise ValueError("give scheduled_in or its alias schedule_in, not both")
    if scheduled_in is None:
        return at
    if at is not None:
        raise ValueError("give scheduled_at or scheduled_in, not both")
    return scheduled_from_now(scheduled_in)


def _aware(name: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}: {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _check_name(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must not be blank")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _check_strings(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{name} must be a list of strings, got {value!r}")


def _check_updatable(changes: Mapping[str, Any]) -> None:
    for key in changes:
        if key in UPDATABLE_FIELDS:
            continue
        if key in JOB_FIELDS:
            raise ValueError(
                f"cannot update {key}: updatable fields are {', '.join(sorted(UPDATABLE_FIELDS))}"
            )
        check_names([key], UPDATABLE_FIELDS, "Job.update()")
