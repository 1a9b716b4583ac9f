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

Each value is bounded: a field whose JSON would exceed ``max_value_bytes`` (default 4,096) is
cut (strings end in ``…``, lists and maps end with a ``"… N more"`` entry) and named in the
line's ``truncated`` list, so one job with 50 MB of args or a million tags costs a few KB of
log, and the work to write it is bounded the same way. ``args=False`` leaves job args out
(``oban start`` does unless ``OBAN_LOG_ARGS`` is true; see :func:`options_from_env`).

Lines are only built when the logger is enabled for the event's level.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any

import orjson

from ..job import Job
from . import core

__all__ = ["DEFAULT_MAX_VALUE_BYTES", "HANDLER_ID", "attach", "detach", "options_from_env"]

#: The id the handler is attached under (see ``oban.telemetry.detach``).
HANDLER_ID = "oban.telemetry.logger"

# Metadata that only makes sense inside the process (clock readings).
_DROPPED = frozenset({"monotonic_time", "system_time"})
# Nanosecond durations converted to milliseconds.
_DURATIONS = ("duration", "queue_time")

#: The default bound on each value a line holds (args, meta, tags, an error message...), in
#: bytes of its JSON, roughly (a cut string may take up to 6 bytes a character once escaped).
DEFAULT_MAX_VALUE_BYTES = 4_096
_ELLIPSIS = "…"
# Containers nested deeper than this are cut: bounds the recursion as well as the size.
_MAX_CLIP_DEPTH = 32
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def attach(
    level: int = logging.INFO,
    logger: logging.Logger | None = None,
    events: Iterable[str] | None = None,
    *,
    args: bool = True,
    max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
) -> None:
    """Log ``events`` (default: every event in ``EVENTS``) as JSON lines.

    Args:
        level: the level of job events (``oban.job.*``); other events use fixed levels.
        logger: where lines go; the logger named ``"oban"`` by default.
        events: the events to log.
        args: whether job events include the job's args (they may hold personal data or
            secrets; ``oban start`` leaves them out unless ``OBAN_LOG_ARGS`` is true).
        max_value_bytes: the bound on each value's JSON (args, meta, tags, error messages,
            other events' values); what is longer is cut and named in ``truncated``.
            ``None`` writes values whole.

    Attaching again replaces the previous attachment (lines are never duplicated).
    """
    if max_value_bytes is not None and (
        isinstance(max_value_bytes, bool)
        or not isinstance(max_value_bytes, int)
        or max_value_bytes < 1
    ):
        raise ValueError(
            f"max_value_bytes must be a positive integer or None, got {max_value_bytes!r}"
        )
    target = logger if logger is not None else logging.getLogger("oban")
    names = list(core.EVENTS if events is None else events)
    include_args = bool(args)

    def handle(name: str, meta: dict[str, Any]) -> None:
        event_level = _level_for(name, meta, level)
        if event_level is None or not target.isEnabledFor(event_level):
            return
        target.log(event_level, _encode(name, meta, include_args, max_value_bytes))

    core.attach(HANDLER_ID, names, handle)


def options_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The :func:`attach` options ``oban start`` uses, from the environment: ``args`` from
    ``OBAN_LOG_ARGS`` (default false: job args are left out of the log) and
    ``max_value_bytes`` from ``OBAN_LOG_MAX_VALUE_BYTES`` when set.

    Raises:
        ValueError: a variable holds something else than a boolean / a positive integer.
    """
    source = os.environ if env is None else env
    options: dict[str, Any] = {"args": False}
    raw = (source.get("OBAN_LOG_ARGS") or "").strip()
    if raw:
        word = raw.lower()
        if word not in _TRUE_WORDS | _FALSE_WORDS:
            raise ValueError(
                f"OBAN_LOG_ARGS: {raw!r} is not valid: expected one of true, false, yes, no, 1, 0"
            )
        options["args"] = word in _TRUE_WORDS
    raw = (source.get("OBAN_LOG_MAX_VALUE_BYTES") or "").strip()
    if raw:
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if size < 1:
            raise ValueError(
                f"OBAN_LOG_MAX_VALUE_BYTES: {raw!r} is not valid: expected a positive integer"
            )
        options["max_value_bytes"] = size
    return options


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


def _encode(
    name: str, meta: Mapping[str, Any], include_args: bool = True, limit: int | None = None
) -> str:
    if name.startswith("oban.job."):
        data = _job_fields(name, meta, include_args)
    else:
        data = {"event": name}
        for key, value in meta.items():
            if key in _DROPPED:
                continue
            data[key] = _ms(value) if key in _DURATIONS else value
    if limit is not None:
        truncated = []
        for key, value in data.items():
            if key == "event":
                continue
            clipper = _Clipper(limit)
            data[key] = clipper.clip(value, 0)
            if clipper.clipped:
                truncated.append(key)
        if truncated:
            data["truncated"] = truncated
    return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


class _Clipper:
    """Cuts a value to about ``budget`` bytes of JSON, looking at no more of it than that:
    a 50 MB string is sliced, a list of a million tags is read to its first few hundred."""

    __slots__ = ("clipped", "left")

    def __init__(self, budget: int) -> None:
        self.left = budget
        self.clipped = False

    def clip(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self._text(value)
        if value is None or isinstance(value, bool | int | float):
            self.left -= 8
            return value
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            if depth >= _MAX_CLIP_DEPTH or self.left <= 0:
                self.clipped = True
                return _ELLIPSIS
            self.left -= 2
            if isinstance(value, Mapping):
                return self._mapping(value, depth)
            return self._sequence(value, depth)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            # orjson writes a dataclass as a map of its fields.
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return self.clip(fields, depth)
        # Job, datetime, Enum...: _default writes them in a few bytes (str() at worst).
        text = _default(value)
        return self._text(text) if isinstance(text, str) else self.clip(text, depth + 1)

    def _text(self, text: str) -> str:
        budget = max(self.left, 0)
        piece = text[:budget]
        encoded = piece.encode("utf-8", "surrogatepass")
        if len(encoded) > budget:
            piece = encoded[:budget].decode("utf-8", "ignore")
        self.left -= len(encoded) + 2
        if len(piece) < len(text):
            self.clipped = True
            return piece + _ELLIPSIS
        return text

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if self.left <= 0:
                self.clipped = True
                out[_ELLIPSIS] = f"{len(value) - index} more"
                break
            clipped_key = self._text(key) if isinstance(key, str) else key
            out[clipped_key] = self.clip(item, depth + 1)
        return out

    def _sequence(self, value: Iterable[Any], depth: int) -> list[Any]:
        out: list[Any] = []
        total = len(value) if isinstance(value, list | tuple | set | frozenset) else 0
        for index, item in enumerate(value):
            if self.left <= 0:
                self.clipped = True
                out.append(f"{_ELLIPSIS} {total - index} more")
                break
            out.append(self.clip(item, depth + 1))
        return out


def _job_fields(name: str, meta: Mapping[str, Any], include_args: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {"event": name}
    job = meta.get("job")
    if isinstance(job, Job):
        data.update(
            id=job.id,
            worker=job.worker,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
        )
        if include_args:
            data["args"] = job.args
        data.update(meta=job.meta, tags=job.tags)
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
