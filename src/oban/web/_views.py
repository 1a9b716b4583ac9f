"""What the pages show, shaped from the query API's answers: sidebar counts, queue rows, a
job's decoded recorded result and the charts' series."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import JobCounts, JobStat, JobStats
from ..job import Job, JobState
from ._filters import Filters
from ._render import pretty_json

__all__ = ["QueueRow", "Tally", "charts", "job_view", "queue_rows", "sidebar"]


@dataclass(frozen=True, slots=True)
class Tally:
    """A count in the sidebar: ``estimated`` when any part is a planner estimate."""

    name: str
    count: int
    estimated: bool


def sidebar(counts: JobCounts, filters: Filters) -> dict[str, Any]:
    """The jobs page's sidebar: jobs by state (of the filtered queues) and by queue."""
    queues = set(filters.queues)
    states: dict[str, list[int | bool]] = {state.value: [0, False] for state in JobState}
    by_queue: dict[str, list[int | bool]] = {}
    for key, count in counts.items():
        state, queue = key
        estimated = key in counts.estimated
        if not queues or queue in queues:
            _add(states.setdefault(state, [0, False]), count, estimated)
        _add(by_queue.setdefault(queue, [0, False]), count, estimated)
    total = sum(int(tally[0]) for tally in states.values())
    return {
        "states": [Tally(name, int(c), bool(e)) for name, (c, e) in states.items()],
        "queues": [Tally(name, int(c), bool(e)) for name, (c, e) in sorted(by_queue.items())],
        "total": Tally("all", total, any(bool(t[1]) for t in states.values())),
    }


def _add(tally: list[int | bool], count: int, estimated: bool) -> None:
    tally[0] = int(tally[0]) + count
    tally[1] = bool(tally[1]) or estimated


def job_view(job: Job) -> dict[str, Any]:
    """What the detail page shows beyond the job's fields: the recorded result, decoded."""
    recorded = None
    recorded_error = None
    if job.meta.get("recorded") is True:
        try:
            recorded = pretty_json(job.recorded)
        except Exception as error:  # any undecodable term: shown, never a 500
            recorded_error = f"{type(error).__name__}: {error}"
    return {"recorded": recorded, "recorded_error": recorded_error}


@dataclass(slots=True)
class QueueRow:
    """A queue on the queues page: its nodes, and its jobs by state."""

    name: str
    nodes: list[Any] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def limit(self) -> int:
        return sum(info.limit for info in self.nodes)

    @property
    def running(self) -> int:
        return sum(len(info.running) for info in self.nodes)

    @property
    def paused(self) -> str:
        paused = [info.paused for info in self.nodes]
        if not paused:
            return "no node"
        if all(paused):
            return "paused"
        return "partly paused" if any(paused) else "running"


def queue_rows(infos: list[Any], counts: JobCounts) -> list[QueueRow]:
    """One row per queue, by name: the nodes running it and its jobs by state, also for a
    queue that only has jobs."""
    rows: dict[str, QueueRow] = {}
    for info in infos:
        rows.setdefault(info.queue, QueueRow(info.queue)).nodes.append(info)
    for (state, queue), count in counts.items():
        row = rows.setdefault(queue, QueueRow(queue))
        row.counts[state] = row.counts.get(state, 0) + count
    return [rows[name] for name in sorted(rows)]


#: The charts' series: (label, the JobStat field, the CSS variable of its colour, dashed).
THROUGHPUT = (
    ("completed", "completed", "--state-completed", False),
    ("discarded", "discarded", "--state-discarded", False),
    ("cancelled", "cancelled", "--state-cancelled", False),
)
LATENCY = (
    ("wait p50", "wait_p50", "--state-available", False),
    ("wait p95", "wait_p95", "--state-available", True),
    ("run p50", "run_p50", "--state-completed", False),
    ("run p95", "run_p95", "--state-completed", True),
)


def charts(stats: JobStats, queue: str | None) -> dict[str, Any]:
    """The charts page's data: the throughput and latency series of ``queue`` (``None``: every
    queue) from the first whole bucket on, and each queue's figures over the window."""
    points = [p for p in stats.series(queue) if p.at is not None and p.at >= stats.complete_since]
    x = [int(p.at.timestamp()) for p in points if p.at is not None]
    return {
        "throughput": _chart(x, points, THROUGHPUT, f"jobs per {_span(stats.bucket)}"),
        "latency": _chart(x, points, LATENCY, "seconds"),
        "totals": [stats.total(name) for name in stats.queues()],
        "total": stats.total(),
        "stats": stats,
    }


def _chart(
    x: list[int], points: list[JobStat], series: tuple[tuple[str, str, str, bool], ...], unit: str
) -> dict[str, Any]:
    return {
        "unit": unit,
        "x": x,
        "series": [
            {
                "label": label,
                "color": color,
                "dash": dash,
                # A minute without jobs is a gap: a lone minute is drawn as a point.
                "points": unit == "seconds",
                "values": [getattr(point, name) for point in points],
            }
            for label, name, color, dash in series
        ],
    }


def _span(seconds: int) -> str:
    if seconds % 3600 == 0:
        return "hour" if seconds == 3600 else f"{seconds // 3600} hours"
    if seconds % 60 == 0:
        return "minute" if seconds == 60 else f"{seconds // 60} minutes"
    return f"{seconds} s"
