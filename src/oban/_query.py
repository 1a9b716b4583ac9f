"""The query API's types and filter checks: ``Oban.list_jobs``, ``count_jobs`` and ``nodes``.

Everything here is plain Python; the engines turn a :class:`JobFilter` into one statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._jsonable import check_list, check_object
from .job import Job, JobState
from .worker import worker_name

__all__ = [
    "COUNT_BY",
    "EXACT_COUNT_LIMIT",
    "MAX_PAGE",
    "JobCounts",
    "JobFilter",
    "JobPage",
    "NodeInfo",
    "job_filter",
    "json_contains",
    "like_pattern",
    "page_after",
    "parse_id",
]

#: The largest job id (a bigint).
MAX_ID = 2**63 - 1
#: At most this many jobs in one page.
MAX_PAGE = 1_000
#: PostgreSQL counts each (state, queue) pair exactly up to this many jobs, then estimates.
EXACT_COUNT_LIMIT = 1_000
#: What ``count_jobs(by=...)`` may group by.
COUNT_BY = ("state", "queue")


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of :meth:`Oban.list_jobs`, newest first. ``next`` is the cursor of the next
    page (give it as ``after=``), ``None`` on the last one."""

    jobs: list[Job]
    next: str | None


class JobCounts(dict[tuple[str, ...], int]):
    """:meth:`Oban.count_jobs`: a tuple of the grouped values (``("completed", "mail")``) to a
    count. ``estimated`` holds the keys whose count is a planner estimate (PostgreSQL, past the
    exact limit); every other count is exact."""

    estimated: frozenset[tuple[str, ...]]

    def __init__(
        self,
        counts: Mapping[tuple[str, ...], int] | None = None,
        estimated: Iterable[tuple[str, ...]] = (),
    ) -> None:
        super().__init__(counts or {})
        self.estimated = frozenset(estimated)

    def total(self) -> int:
        """Every count added up."""
        return sum(self.values())


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node seen through its producer rows: its queues and how many jobs it runs."""

    node: str
    queues: list[str]
    running: int
    started_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Validated filters; ``None`` means not filtered."""

    states: list[str] | None = None
    queues: list[str] | None = None
    workers: list[str] | None = None
    tags: list[str] | None = None
    args: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    search: str | None = None
    ids: list[int] | None = None


def job_filter(
    *,
    state: Any = None,
    queue: Any = None,
    worker: Any = None,
    tags: Any = None,
    args: Any = None,
    meta: Any = None,
    search: Any = None,
    ids: Any = None,
) -> JobFilter:
    """Check and normalise the filters of ``list_jobs``/``count_jobs``.

    Raises:
        TypeError: a filter of the wrong type.
        ValueError: an unknown state.
    """
    return JobFilter(
        states=None if state is None else [_state(s) for s in _many("state", state)],
        queues=None if queue is None else [_text("queue", q) for q in _many("queue", queue)],
        workers=None if worker is None else [_worker(w) for w in _many("worker", worker)],
        tags=None if tags is None else _tags(tags),
        args=None if args is None else check_object("args filter", args),
        meta=None if meta is None else check_object("meta filter", meta),
        search=None if search is None or search == "" else _text("search", search),
        ids=None if ids is None else [_id(i) for i in _many("ids", ids)],
    )


def parse_id(text: str) -> int:
    """A job id written as decimal digits (``"42"``, surrounding spaces allowed).

    Raises:
        ValueError: anything else, or an id outside 1 to 2**63 - 1.
    """
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise ValueError(f"not a job id: {text!r}")
    value = int(digits)
    if not 0 < value <= MAX_ID:
        raise ValueError(f"not a job id: {text!r}")
    return value


def page_after(after: object) -> int | None:
    """The id a ``next`` cursor stands for.

    Raises:
        ValueError: not a cursor ``list_jobs`` returned.
    """
    if after is None:
        return None
    if (
        not isinstance(after, str)
        or not (after.isascii() and after.isdigit())
        or len(after) > 19
        or not 0 <= int(after) <= MAX_ID
    ):
        raise ValueError(f"after must be the next cursor of a page, got {after!r}")
    return int(after)


def like_pattern(search: str) -> str:
    """A LIKE/ILIKE pattern (escape character ``\\``) matching ``search`` anywhere."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def json_contains(doc: Any, want: Any, *, top: bool = True) -> bool:
    """PostgreSQL's ``jsonb @>``: objects by key, arrays by element, scalars by value (``true``
    is not ``1``); at the top level an array also contains a scalar it holds."""
    if isinstance(want, dict):
        return isinstance(doc, dict) and all(
            key in doc and json_contains(doc[key], value, top=False) for key, value in want.items()
        )
    if isinstance(want, list):
        return isinstance(doc, list) and all(
            any(json_contains(item, wanted, top=False) for item in doc) for wanted in want
        )
    if isinstance(doc, list) and top:
        return any(_same_scalar(item, want) for item in doc)
    return _same_scalar(doc, want)


def _same_scalar(doc: Any, want: Any) -> bool:
    if isinstance(doc, dict | list):
        return False
    if isinstance(doc, bool) or isinstance(want, bool):
        return type(doc) is type(want) and doc == want
    return bool(doc == want)


def _many(name: str, value: Any) -> list[Any]:
    if isinstance(value, str | int | JobState) or callable(value) or isinstance(value, type):
        return [value]
    if isinstance(value, Iterable):
        return list(value)
    raise TypeError(f"{name} must be a value or a list of them, got {value!r}")


def _state(value: Any) -> str:
    if isinstance(value, JobState):
        return value.value
    if not isinstance(value, str):
        raise TypeError(f"state must be a string, got {value!r}")
    try:
        return JobState(value).value
    except ValueError:
        states = ", ".join(state.value for state in JobState)
        raise ValueError(f"unknown state {value!r} (states: {states})") from None


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r}")
    return value


def _worker(value: Any) -> str:
    if isinstance(value, str):
        return value
    target = getattr(value, "__oban_worker__", value)
    name = getattr(target, "_worker_name", None)
    if isinstance(name, str):
        return name
    if isinstance(target, type):
        return worker_name(target)
    raise TypeError(f"worker must be a name, a worker class or a @job function, got {value!r}")


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    tags = check_list("tags filter", list(value))
    if not all(isinstance(tag, str) for tag in tags):
        raise TypeError(f"tags must be strings, got {value!r}")
    return sorted({tag.strip().lower() for tag in tags if tag.strip()})


def _id(value: Any) -> int:
    if isinstance(value, Job):
        value = value.id
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ids must be integers, got {value!r}")
    if not 0 < value <= MAX_ID:
        raise ValueError(f"ids must be between 1 and {MAX_ID}, got {value}")
    return value
