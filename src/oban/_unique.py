"""Unique jobs: the ``unique=`` and ``replace=`` options, and the key a unique job carries.

A unique job carries three entries in ``meta`` (the format oban-py's paid tier writes):

- ``uniq``: ``true``;
- ``uniq_key``: a hash of the fields that make two jobs duplicates (43 characters);
- ``uniq_bmp``: the states in which the job holds its key, as numbers (:data:`STATE_BITS`).

A partial unique index on ``meta->>'uniq_key'`` over the rows whose current state is in their
own ``uniq_bmp`` enforces the rest (``install.sql``, both engines): an insert that meets a
holder is skipped and answered with the holder. ``retry_job`` empties ``uniq_bmp``, so a
retried job neither holds nor checks its key.

The key hashes a canonical JSON (every nested object's keys sorted) of the chosen fields and,
with a period, of the start of the period bucket that holds the job's ``scheduled_at`` (or the
insert time): a fixed bucket, not a sliding window.
"""

from __future__ import annotations

import binascii
import hashlib
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict

import orjson

from ._options import unknown_option

if TYPE_CHECKING:
    from .job import Job

__all__ = [
    "FIELDS",
    "GROUPS",
    "INSERT_STATES",
    "REPLACEABLE",
    "STATE_BITS",
    "UNIQUE_ROUNDS",
    "UPDATE_CONFLICT",
    "Unique",
    "UniqueOptions",
    "describe",
    "insert",
    "key_of",
    "normalize_replace",
    "normalize_unique",
    "replaced",
    "resolve",
    "stamp",
]

#: Each state's number in ``meta.uniq_bmp`` (oban-py's numbering; ``suspended`` is ours).
STATE_BITS: dict[str, int] = {
    "scheduled": 0,
    "available": 1,
    "executing": 2,
    "retryable": 3,
    "completed": 4,
    "cancelled": 5,
    "discarded": 6,
    "suspended": 7,
}

_INCOMPLETE = ("available", "executing", "retryable", "scheduled", "suspended")

#: The named groups of states (Elixir Oban's ``unique_states``).
GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(STATE_BITS),
    "incomplete": _INCOMPLETE,
    "scheduled": ("scheduled",),
    "successful": (*_INCOMPLETE, "completed"),
}

#: An explicit ``states`` list must hold the states jobs are inserted in, and the states a job
#: goes back to ``available`` from (``executing`` when rescued, ``retryable`` when staged): a
#: job that did not hold its key there could meet a duplicate on its way back, and a stager
#: that does not expect it (Elixir's) would fail on the index.
INSERT_STATES = ("available", "executing", "retryable", "scheduled")

#: What a key may be made of.
FIELDS = ("args", "meta", "queue", "worker")
_DEFAULT_FIELDS = ("args", "queue", "worker")

#: Fields ``replace=`` may update on the job that holds the key.
REPLACEABLE = (
    "args",
    "max_attempts",
    "meta",
    "priority",
    "queue",
    "scheduled_at",
    "tags",
    "worker",
)

#: How many times an insert whose duplicate's holder vanished (it finished meanwhile, leaving
#: its states) is tried again before the job is answered as a conflict without an id.
UNIQUE_ROUNDS = 3

#: The error of an update that would make a job hold a unique key another job holds.
UPDATE_CONFLICT = (
    "the update would make a job hold a unique key another job holds (docs/unique.md): "
    "nothing was changed"
)

_OPTIONS = ("fields", "group", "keys", "period", "states")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
#: meta entries of the key itself, never part of a key made of meta.
_OWN_META = ("uniq", "uniq_key", "uniq_bmp")


class UniqueOptions(TypedDict, total=False):
    """What ``unique={...}`` accepts."""

    period: int | timedelta | None
    fields: Sequence[Literal["args", "meta", "queue", "worker"]]
    keys: Sequence[str]
    group: Literal["all", "incomplete", "scheduled", "successful"]
    states: Sequence[str]


@dataclass(frozen=True, slots=True)
class Unique:
    """A validated ``unique=`` option."""

    fields: tuple[str, ...] = _DEFAULT_FIELDS
    keys: tuple[str, ...] | None = None
    period: int | None = None
    states: tuple[str, ...] = GROUPS["all"]
    _bitmap: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bitmap", tuple(sorted(STATE_BITS[s] for s in self.states)))

    @property
    def bitmap(self) -> list[int]:
        """The states as ``meta.uniq_bmp`` holds them."""
        return list(self._bitmap)

    def key(self, job: Job, now: datetime | None = None) -> str:
        """The key of ``job``: equal for two jobs exactly when they are duplicates."""
        parts: dict[str, Any] = {}
        for name in self.fields:
            value = getattr(job, name)
            if name == "meta":
                value = {k: v for k, v in value.items() if k not in _OWN_META}
            if name in ("args", "meta") and self.keys is not None:
                value = {k: value[k] for k in self.keys if k in value}
            parts[name] = value
        if self.period is not None:
            at = job.scheduled_at or now or datetime.now(UTC)
            seconds = math.floor(at.timestamp())
            parts["period"] = [self.period, seconds - seconds % self.period]
        canonical = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2s(canonical).digest()
        # base64url without its one padding character: 43 characters.
        return binascii.b2a_base64(digest, newline=False)[:-1].translate(_URLSAFE).decode()


_DEFAULT = Unique()


def normalize_unique(value: object) -> Unique | None:
    """``unique=`` as given (``True``, ``False``, ``None`` or a dict) as a :class:`Unique`.

    Raises:
        TypeError: a value or option of the wrong type.
        ValueError: an unknown option, field, group or state; a period that is not a positive
            whole number of seconds; ``group`` with ``states``; states without the insert
            states, ``executing`` and ``retryable``.
    """
    if value is None or value is False:
        return None
    if value is True:
        return _DEFAULT
    if isinstance(value, Unique):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"unique must be True, None or a dict, got {type(value).__name__}")
    for name in value:
        if name not in _OPTIONS:
            raise ValueError(f"unique: {unknown_option(name, _OPTIONS, list_known=True)}")
    fields = _fields(value.get("fields", _DEFAULT_FIELDS))
    keys = value.get("keys")
    if keys is not None:
        keys = tuple(_strings("unique keys", keys))
        if not keys:
            raise ValueError("unique keys must not be empty (leave it out to use whole args)")
        if not {"args", "meta"} & set(fields):
            raise ValueError("unique keys select keys of args or meta: add one to fields")
    if "group" in value and "states" in value:
        raise ValueError("unique: give group or states, not both")
    if "states" in value:
        states = _states(value["states"])
    else:
        group = value.get("group", "all")
        if group not in GROUPS:
            raise ValueError(f"unique group must be one of {', '.join(GROUPS)}, got {group!r}")
        states = GROUPS[group]
    return Unique(fields, keys, _period(value.get("period")), states)


def normalize_replace(value: object) -> dict[str, tuple[str, ...]] | None:
    """``replace=`` (a dict of state to the fields to update) validated.

    Raises:
        TypeError: not a dict of state names to lists of field names.
        ValueError: an unknown state or field.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"replace must be a dict of state to fields, got {type(value).__name__}")
    replace: dict[str, tuple[str, ...]] = {}
    for state, fields in value.items():
        state = str(getattr(state, "value", state))
        if state not in STATE_BITS:
            raise ValueError(f"replace: unknown state {state!r} (states: {', '.join(STATE_BITS)})")
        names = tuple(_strings(f"replace[{state!r}]", fields))
        for name in names:
            if name not in REPLACEABLE:
                raise ValueError(
                    f"replace: {name!r} cannot be replaced (fields: {', '.join(REPLACEABLE)})"
                )
        if names:
            replace[state] = tuple(dict.fromkeys(names))
    return replace or None


def stamp(jobs: Iterable[Job], now: datetime | None = None) -> bool:
    """Write the key entries into the meta of every unique job; whether the batch needs the
    unique insert: it has a unique job, or a job whose meta already carries a key (a copy of
    a unique job, say from ``get_job``), which the index may refuse as well."""
    any_unique = False
    for job in jobs:
        unique = job.unique
        if unique is None:
            if "uniq_key" in job.meta:
                any_unique = True
            continue
        any_unique = True
        key = unique.key(job, now)
        job.meta = {**job.meta, "uniq": True, "uniq_key": key, "uniq_bmp": unique.bitmap}
    return any_unique


def key_of(job: Job) -> str | None:
    """The key in a job's meta (:func:`stamp` wrote it for a unique job), or ``None``."""
    key = job.meta.get("uniq_key")
    return key if isinstance(key, str) else None


Row = tuple[Any, ...]  # (id, state, queue, inserted_at, scheduled_at), timestamps aware


class Replacement(NamedTuple):
    """A duplicate whose ``replace=`` applies to the job holding its key (``id``, in
    ``state``, found as ``holder``)."""

    job: Job
    id: int
    state: str
    holder: Row


async def insert(
    jobs: Sequence[Job],
    *,
    insert: Callable[[list[Job]], Awaitable[list[Row | None]]],
    holders: Callable[[list[str]], Awaitable[dict[str, Row]]],
    replace: Callable[[list[Replacement]], Awaitable[list[Row]]],
) -> None:
    """Insert a batch holding unique jobs, with an engine's three statements: ``insert`` (one
    row or ``None`` per job, ``None`` for a job skipped because a row holds its key),
    ``holders`` (by key) and ``replace``. Every job ends up describing its own new row or the
    row holding its key (``conflict`` true)."""
    pending = list(jobs)
    for _round in range(UNIQUE_ROUNDS):
        skipped: list[Job] = []
        for job, row in zip(pending, await insert(pending), strict=True):
            if row is None:
                skipped.append(job)
            else:
                describe(job, *row, conflict=False)
        if not skipped:
            return
        held = await holders(sorted({key for job in skipped if (key := key_of(job)) is not None}))
        pending, replacing = resolve(skipped, held)
        if replacing:
            replaced(replacing, await replace(replacing))
        if not pending:
            return
    for job in pending:  # a holder this transaction cannot see (REPEATABLE READ)
        job.id, job.conflict = None, True


def resolve(skipped: Sequence[Job], held: Mapping[str, Row]) -> tuple[list[Job], list[Replacement]]:
    """Answer each skipped duplicate with the row that holds its key (``held``: key to id,
    state, queue, inserted_at, scheduled_at, timestamps aware). Returns the jobs whose holder
    is gone (to insert again), and a :class:`Replacement` for each whose ``replace=`` applies
    to its holder (in holder id order): that job still carries its own values."""
    again: list[Job] = []
    replacing: list[Replacement] = []
    for job in skipped:
        key = key_of(job)
        holder = None if key is None else held.get(key)
        if holder is None:
            again.append(job)
            continue
        id_, state = holder[0], holder[1]
        if job.replace is not None and state in job.replace:
            # The job keeps its own values until the replacement is built from them.
            replacing.append(Replacement(job, id_, state, tuple(holder)))
        else:
            describe(job, *holder, conflict=True)
    # In id order: two batches replacing the same holders lock them in the same order.
    replacing.sort(key=lambda replacement: replacement.id)
    return again, replacing


def replaced(replacing: Sequence[Replacement], rows: Sequence[Sequence[Any]]) -> None:
    """Describe each replaced holder from the rows the update returned (id, state, queue,
    inserted_at, scheduled_at; timestamps aware). A holder that left the state meanwhile was
    not updated: the job keeps describing the holder as it was found."""
    updated = {row[0]: row for row in rows}
    for job, id_, _state, holder in replacing:
        describe(job, *updated.get(id_, holder), conflict=True)


def describe(
    job: Job,
    id_: int,
    state: str,
    queue: str,
    inserted_at: datetime | None,
    scheduled_at: datetime | None,
    *,
    conflict: bool,
) -> None:
    """Make ``job`` describe the row ``id_``: the one inserted for it, or the one holding its
    key (``conflict``)."""
    from .job import JobState

    job.id = id_
    job.state = JobState(state)
    job.queue = queue
    job.inserted_at = inserted_at
    job.scheduled_at = scheduled_at
    job.conflict = conflict


def _fields(value: object) -> tuple[str, ...]:
    names = _strings("unique fields", value)
    for name in names:
        if name not in FIELDS:
            raise ValueError(f"unique fields must be among {', '.join(FIELDS)}, got {name!r}")
    if not names:
        raise ValueError("unique fields must not be empty")
    return tuple(sorted(set(names)))


def _states(value: object) -> tuple[str, ...]:
    names = [str(getattr(name, "value", name)) for name in _strings("unique states", value)]
    for name in names:
        if name not in STATE_BITS:
            raise ValueError(f"unique states: unknown state {name!r}")
    missing = [state for state in INSERT_STATES if state not in names]
    if missing:
        raise ValueError(
            "unique states must include available and scheduled (the states jobs are "
            "inserted in), executing and retryable (the states a job returns to available "
            f"from, where it must not meet a duplicate); missing: {', '.join(missing)}"
        )
    return tuple(sorted(set(names), key=STATE_BITS.__getitem__))


def _period(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"unique period must be seconds or a timedelta, got {value!r}")
    if not (seconds >= 1 and seconds == int(seconds) and seconds < 2**40):
        raise ValueError(f"unique period must be a whole number of seconds >= 1, got {value!r}")
    return int(seconds)


def _strings(what: str, value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of strings, got {value!r}")
    items = list(value)
    for item in items:
        item = getattr(item, "value", item)
        if not isinstance(item, str):
            raise TypeError(f"{what} must be a list of strings, got {value!r}")
    return [str(getattr(item, "value", item)) for item in items]
