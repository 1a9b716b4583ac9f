"""Structured logging of telemetry events: one JSON line per event.

>>> import logging
>>> from oban.telemetry import logger as telemetry_logger
>>> telemetry_logger.attach(level=logging.INFO)
>>> telemetry_logger.detach()

Job events (``oban.job.*``) are logged at ``level`` with the job's id, worker, queue,
attempt, max_attempts, args, meta and tags; stop and exception events add the state and
the duration and queue time in milliseconds, exception events the error type and message.
Other events use fixed levels: ``*.exception`` at ERROR, ``oban.queue.shutdown`` at
WARNING (only when jobs were orphaned), ``oban.notifier.status`` at WARNING while polling
and INFO otherwise, everything else at DEBUG.

Lines are only built when the logger is enabled for the event's level.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any

import orjson

from ..job import Job
from . import core

__all__ = ["HANDLER_ID", "attach", "detach"]

#: The id the handler is attached under (see ``oban.telemetry.detach``).
HANDLER_ID = "oban.telemetry.logger"

# Metadata that only makes sense inside the process (clock readings).
_DROPPED = frozenset({"monotonic_time", "system_time"})
# Nanosecond durations converted to milliseconds.
_DURATIONS = ("duration", "queue_time")


def attach(
    level: int = logging.INFO,
    logger: logging.Logger | None = None,
    events: Iterable[str] | None = None,
) -> None:
    """Log ``events`` (default: every event in ``EVENTS``) as JSON lines.

    Args:
        level: the level of job events (``oban.job.*``); other events use fixed levels.
        logger: where lines go; the logger named ``"oban"`` by default.
        events: the events to log.

    Attaching again replaces the previous attachment (lines are never duplicated).
    """
    target = logger if logger is not None else logging.getLogger("oban")
    names = list(core.EVENTS if events is None else events)

    def handle(name: str, meta: dict[str, Any]) -> None:
        event_level = _level_for(name, meta, level)
        if event_level is None or not target.isEnabledFor(event_level):
            return
        target.log(event_level, _encode(name, meta))

    core.attach(HANDLER_ID, names, handle)


def detach() -> None:
    """Stop logging telemetry events (no error if not attached)."""
    core.detach(HANDLER_ID)


def _level_for(name: str, meta: Mapping[str, Any], job_level: int) -> int | None:
    if name.startswith("oban.job."):
        return job_level
    if name.endswith(".exception"):
        return logging.ERROR
    if name == "oban.queue.shutdown":
        return logging.WARNING if meta.get("orphaned") else None
    if name == "oban.notifier.status":
        return logging.WARNING if meta.get("status") == "polling" else logging.INFO
    return logging.DEBUG


def _ms(nanoseconds: Any) -> Any:
    if isinstance(nanoseconds, int | float) and not isinstance(nanoseconds, bool):
        return round(nanoseconds / 1_000_000, 3)
    return nanoseconds


def _encode(name: str, meta: Mapping[str, Any]) -> str:
    if name.startswith("oban.job."):
        data = _job_fields(name, meta)
    else:
        data = {"event": name}
        for key, value in meta.items():
            if key in _DROPPED:
                continue
            data[key] = _ms(value) if key in _DURATIONS else value
    return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _job_fields(name: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"event": name}
    job = meta.get("job")
    if isinstance(job, Job):
        data.update(
            id=job.id,
            worker=job.worker,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            args=job.args,
            meta=job.meta,
            tags=job.tags,
        )
    if name != "oban.job.start":
        data["state"] = meta.get("state")
        for key in _DURATIONS:
            data[key] = _ms(meta.get(key))
    if name == "oban.job.exception":
        data["error_type"] = meta.get("error_type")
        data["error_message"] = meta.get("error_message")
    return data


def _default(value: Any) -> Any:
    """Turn what orjson cannot encode into something readable."""
    if isinstance(value, Job):
        return value.id
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)
