"""The query API's types and filter checks: ``Oban.list_jobs``, ``count_jobs``, ``crons``,
``job_stats`` and ``nodes``.

Everything here is plain Python; the engines turn a :class:`JobFilter` into one statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._jsonable import check_list, check_object
from .job import Job, JobState
from .worker import worker_name

__all__ = [
    "COUNT_BY",
    "EXACT_COUNT_LIMIT",
    "MAX_BUCKETS",
    "MAX_ID",
    "MAX_PAGE",
    "STATS_LIMIT",
    "CronInfo",
    "JobCounts",
    "JobFilter",
    "JobPage",
    "JobStat",
    "JobStats",
    "NodeInfo",
    "StatsSample",
    "check_stats_window",
    "job_filter",
    "job_stats_from_rows",
    "job_stats_from_samples",
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
#: ``job_stats`` reads at most this many finished jobs (the newest) unless told otherwise.
STATS_LIMIT = 50_000
#: ``job_stats`` answers at most this many buckets (a day of minutes).
MAX_BUCKETS = 1_440


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
class CronInfo:
    """A cron entry of :meth:`Oban.crons`: what it inserts, when it last did, when it runs next.

    ``name`` is the entry's stable name, stored in its jobs' ``meta.cron_name``; ``args`` and
    ``options`` (``priority``, ``max_attempts``, ``tags``, ``meta``, ...) are those of the
    job it inserts; ``timezone`` is the one its expression is read in (its own, else the
    scheduler's); ``last_job`` is the newest job it inserted (the latest ``meta.cron_at``)
    still in the table; ``next_at`` (UTC) is the next minute the expression matches, or
    ``None`` when it never matches again.
    """

    name: str
    expression: str
    worker: str
    queue: str
    args: dict[str, Any]
    options: dict[str, Any]
    timezone: str
    last_job: Job | None
    next_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobStat:
    """Jobs that finished in one bucket of :meth:`Oban.job_stats` (``at`` its start, UTC), or
    in the whole window (``at`` is ``None``), in one queue (or in every queue: ``queue`` is
    ``None``).

    ``wait_*`` are percentiles, in seconds, of the time each job waited to start
    (``attempted_at - scheduled_at``, of every finished job that ran); ``run_*`` of the time
    each completed job ran (``completed_at - attempted_at``). Percentiles are nearest-rank
    (the p50 of 1, 2, 3, 4 is 2); ``None`` when no job had that time.
    """

    at: datetime | None
    queue: str | None
    completed: int = 0
    discarded: int = 0
    cancelled: int = 0
    wait_p50: float | None = None
    wait_p95: float | None = None
    run_p50: float | None = None
    run_p95: float | None = None

    @property
    def finished(self) -> int:
        """Completed, discarded and cancelled jobs together."""
        return self.completed + self.discarded + self.cancelled


@dataclass(frozen=True, slots=True)
class JobStats:
    """:meth:`Oban.job_stats`: finished jobs per bucket and queue between ``since`` and
    ``until`` (UTC; ``until`` is the end of the bucket that holds the database's now).

    ``groups`` holds one :class:`JobStat` per (bucket, queue), per bucket (``queue=None``),
    per queue over the window (``at=None``) and one for everything (both ``None``), only where
    jobs finished. When more than ``limit`` jobs finished in the window, only the newest
    ``limit`` were read and ``complete_since`` says from when the figures are whole (else it
    is ``since``).
    """

    since: datetime
    until: datetime
    bucket: int
    limit: int
    complete_since: datetime
    groups: list[JobStat]

    @property
    def truncated(self) -> bool:
        """Whether the window held more finished jobs than were read."""
        return self.complete_since > self.since

    def queues(self) -> list[str]:
        """The queues in which jobs finished, by name."""
        return sorted({g.queue for g in self.groups if g.queue is not None})

    def total(self, queue: str | None = None) -> JobStat:
        """The whole window, of one queue or (``None``) of every queue."""
        for group in self.groups:
            if group.at is None and group.queue == queue:
                return group
        return JobStat(at=None, queue=queue)

    def series(self, queue: str | None = None) -> list[JobStat]:
        """One :class:`JobStat` per bucket, oldest first, of one queue or (``None``) of every
        queue; a bucket in which no job finished has zero counts.

        >>> [point.at.minute for point in stats.series("mailers")][:3]   # doctest: +SKIP
        [12, 13, 14]
        """
        found = {g.at: g for g in self.groups if g.at is not None and g.queue == queue}
        start = int(self.since.timestamp())
        count = int((self.until - self.since).total_seconds()) // self.bucket
        points = []
        for index in range(count):
            at = datetime.fromtimestamp(start + index * self.bucket, UTC)
            points.append(found.get(at) or JobStat(at=at, queue=queue))
        return points


def check_stats_window(window: object, bucket: object, limit: object) -> tuple[int, int, int]:
    """The checked arguments of ``job_stats``.

    Raises:
        TypeError: one is not an integer.
        ValueError: a bucket or window below one second, a window that is not a whole number
            of buckets or holds more than ``MAX_BUCKETS`` of them, a limit below 1.
    """
    for name, value in (("window", window), ("bucket", bucket), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    assert isinstance(window, int) and isinstance(bucket, int) and isinstance(limit, int)
    if bucket < 1:
        raise ValueError(f"bucket must be at least 1 second, got {bucket}")
    if window < bucket or window % bucket:
        raise ValueError(
            f"window must be a whole number of buckets: {window} is not a multiple of {bucket}"
        )
    if window // bucket > MAX_BUCKETS:
        raise ValueError(
            f"at most {MAX_BUCKETS:,} buckets: a window of {window} s in buckets of {bucket} s "
            f"has {window // bucket:,}; make the buckets larger"
        )
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    return window, bucket, limit


def job_stats_from_rows(
    window: int,
    bucket: int,
    limit: int,
    rows: Sequence[Sequence[Any]],
) -> JobStats:
    """The :class:`JobStats` of the rows of PostgreSQL's ``job_stats.sql``: (window end in
    epoch seconds, when the oldest job read finished if the limit was reached, bucket start,
    queue, completed, discarded, cancelled, wait p50, wait p95, run p50, run p95, grouped)."""
    groups = [
        JobStat(
            at=None if at is None else datetime.fromtimestamp(int(at), UTC),
            queue=queue,
            completed=int(completed),
            discarded=int(discarded),
            cancelled=int(cancelled),
            wait_p50=_seconds(wait_p50),
            wait_p95=_seconds(wait_p95),
            run_p50=_seconds(run_p50),
            run_p95=_seconds(run_p95),
        )
        for (
            _until,
            _cut,
            at,
            queue,
            completed,
            discarded,
            cancelled,
            wait_p50,
            wait_p95,
            run_p50,
            run_p95,
            grouped,
        ) in rows
        # (No group: the bounds row alone, or the whole-window row of an empty window.)
        if grouped and (completed or discarded or cancelled)
    ]
    return _job_stats(window, bucket, limit, int(rows[0][0]), rows[0][1], groups)


#: A (bucket, queue) group of finished jobs with their times: bucket start (epoch seconds),
#: queue, completed, discarded and cancelled counts, every wait and every run time (seconds).
StatsSample = tuple[int, str, int, int, int, list[float], list[float]]


def job_stats_from_samples(
    window: int,
    bucket: int,
    limit: int,
    until: int,
    cut: float | None,
    samples: Sequence[StatsSample],
) -> JobStats:
    """The :class:`JobStats` of each (bucket, queue) group's counts and times (as SQLite's
    ``job_stats.sql`` gives them): the groups by bucket, by queue and of the whole window are
    added up here, and every percentile taken by rank (as ``percentile_disc`` does)."""
    merged: dict[tuple[int | None, str | None], tuple[list[int], list[float], list[float]]] = {}
    for at, queue, completed, discarded, cancelled, waits, runs in samples:
        for key in ((at, queue), (at, None), (None, queue), (None, None)):
            counts, all_waits, all_runs = merged.setdefault(key, ([0, 0, 0], [], []))
            counts[0] += completed
            counts[1] += discarded
            counts[2] += cancelled
            all_waits += waits
            all_runs += runs
    for _counts, waits, runs in merged.values():
        waits.sort()
        runs.sort()
    groups = [
        JobStat(
            at=None if at is None else datetime.fromtimestamp(at, UTC),
            queue=queue,
            completed=counts[0],
            discarded=counts[1],
            cancelled=counts[2],
            wait_p50=_rank(waits, 50),
            wait_p95=_rank(waits, 95),
            run_p50=_rank(runs, 50),
            run_p95=_rank(runs, 95),
        )
        for (at, queue), (counts, waits, runs) in merged.items()
    ]
    return _job_stats(window, bucket, limit, until, cut, groups)


def _rank(ordered: list[float], percent: int) -> float | None:
    """The nearest-rank percentile of sorted values: the value at rank ceil(p n)."""
    if not ordered:
        return None
    return ordered[(percent * len(ordered) + 99) // 100 - 1]


def _job_stats(
    window: int, bucket: int, limit: int, until: int, cut: float | None, groups: list[JobStat]
) -> JobStats:
    since = until - window
    complete = since if cut is None else max(since, (int(cut // bucket) + 1) * bucket)
    return JobStats(
        since=datetime.fromtimestamp(since, UTC),
        until=datetime.fromtimestamp(until, UTC),
        bucket=bucket,
        limit=limit,
        complete_since=datetime.fromtimestamp(min(complete, until), UTC),
        groups=groups,
    )


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)


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
