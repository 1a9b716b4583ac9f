"""Rendering: the Jinja2 environment, and how jobs, JSON and times are shown.

Everything is formatted here, in Python: JSON is printed from the decoded values, so an
integer past 2**53 shows exactly as stored (a browser's JavaScript numbers would round it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from .._recorded import Atom
from ..job import Job

__all__ = [
    "STATIC_FILES",
    "TimelineEntry",
    "duration",
    "environment",
    "pretty_json",
    "relative",
    "static_version",
    "timeline",
]

HERE = Path(__file__).parent
#: The files served under ``static/``: name -> media type. Nothing else is served.
STATIC_FILES = {
    "favicon.svg": "image/svg+xml",
    "oban-web.css": "text/css; charset=utf-8",
    "oban-web.js": "text/javascript; charset=utf-8",
    "vendor/htmx-2.0.11.min.js": "text/javascript; charset=utf-8",
    "oban-charts.js": "text/javascript; charset=utf-8",
    "vendor/uplot-1.6.32.min.js": "text/javascript; charset=utf-8",
    "vendor/uplot-1.6.32.min.css": "text/css; charset=utf-8",
}
#: Characters of args shown in a list row.
ROW_ARGS_CHARS = 160


def static_version() -> str:
    """A hash of every static file, put in their URLs so a cache never serves a stale one."""
    digest = hashlib.sha256()
    for name in sorted(STATIC_FILES):
        digest.update((HERE / "static" / name).read_bytes())
    return digest.hexdigest()[:12]


def environment() -> Environment:
    """The templates, HTML-escaped, with the helpers they use."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty_json"] = pretty_json
    env.filters["compact_json"] = compact_json
    env.filters["relative"] = relative
    env.filters["iso"] = iso
    env.filters["number"] = number
    env.filters["duration"] = duration
    env.globals["timeline"] = timeline
    env.globals["job_time"] = job_time
    return env


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON with sorted keys; integers exact."""
    return json.dumps(displayable(value), indent=2, sort_keys=True, ensure_ascii=False)


def compact_json(value: Any, limit: int = ROW_ARGS_CHARS) -> str:
    """``value`` as one line of JSON, cut to ``limit`` characters."""
    text = json.dumps(displayable(value), sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def displayable(value: Any) -> Any:
    """``value`` with what JSON cannot show as is (tuples, bytes, atoms of a recorded Erlang
    term, ...) turned into something it can, so any recorded result can be shown."""
    if isinstance(value, Atom):
        return f":{value}"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {_key(k): displayable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [displayable(item) for item in value]
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return repr(bytes(value))
    return repr(value)


def _key(key: Any) -> str:
    shown = displayable(key)
    return shown if isinstance(shown, str) else json.dumps(shown)


def number(value: int, estimated: bool = False) -> str:
    """``12,345``, or ``~12,345`` for a planner estimate."""
    return f"~{value:,}" if estimated else f"{value:,}"


def duration(seconds: float | None) -> str:
    """``340 ms``, ``2.5 s``, ``3m 20s``, ``2h 5m``; an empty string for ``None``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60)}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60)}m"


def iso(moment: datetime | None) -> str:
    """``2024-05-01 12:00:00 UTC``, or an empty string."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(moment: datetime | None, now: datetime | None = None) -> str:
    """``3m ago``, ``in 2h``, ``just now``: how far ``moment`` is from ``now``."""
    if moment is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    span = abs(seconds)
    if span < 1:
        return "just now"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if span >= size:
            amount = f"{int(span // size)}{unit}"
            return f"{amount} ago" if seconds > 0 else f"in {amount}"
    return "just now"  # pragma: no cover - span >= 1 always matches "s"


#: The timestamp a list row shows for a job in each state, and what it is called.
_ROW_TIME = {
    "available": ("scheduled_at", "ready"),
    "cancelled": ("cancelled_at", "cancelled"),
    "completed": ("completed_at", "completed"),
    "discarded": ("discarded_at", "discarded"),
    "executing": ("attempted_at", "started"),
    "retryable": ("scheduled_at", "retry"),
    "scheduled": ("scheduled_at", "runs"),
    "suspended": ("inserted_at", "inserted"),
}


def job_time(job: Job) -> tuple[str, datetime | None]:
    """What a list row says about when: (label, moment) for the job's state."""
    name, label = _ROW_TIME[job.state.value]
    moment: datetime | None = getattr(job, name) or job.inserted_at
    return label, moment


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One step of a job's life on its detail page."""

    at: datetime | None
    kind: str
    label: str
    detail: str = ""


def timeline(job: Job) -> list[TimelineEntry]:
    """The steps of ``job``'s life, oldest first: inserted, scheduled, each attempt's failure,
    the last attempt, and how it finished (completed, cancelled or discarded)."""
    entries = [TimelineEntry(job.inserted_at, "inserted", "Inserted")]
    if job.scheduled_at is not None and (
        job.inserted_at is None or (job.scheduled_at - job.inserted_at).total_seconds() >= 1
    ):
        label = "Retry scheduled" if job.state.value == "retryable" else "Scheduled"
        entries.append(TimelineEntry(job.scheduled_at, "scheduled", label))
    for error in job.errors:
        if isinstance(error, dict):
            entries.append(
                TimelineEntry(
                    _parse_time(error.get("at")),
                    "error",
                    f"Attempt {error.get('attempt', '?')} failed",
                    _summary(error.get("error")),
                )
            )
    if job.attempted_at is not None:
        by = f" on {job.attempted_by[0]}" if job.attempted_by else ""
        entries.append(
            TimelineEntry(job.attempted_at, "attempted", f"Attempt {job.attempt} started{by}")
        )
    for kind in ("completed", "cancelled", "discarded"):
        moment = getattr(job, f"{kind}_at")
        if moment is not None:
            entries.append(TimelineEntry(moment, kind, kind.capitalize()))
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(entries, key=lambda entry: entry.at or oldest)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _summary(value: Any) -> str:
    """The last non-blank line of an error (a traceback ends with the exception), cut short."""
    text = value if isinstance(value, str) else json.dumps(displayable(value))
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
