"""Cron expressions and cron entries (periodic jobs), compatible with Oban's cron syntax.

An expression has five space-separated fields::

    minute  hour  day-of-month  month  day-of-week
    0-59    0-23  1-31          1-12   0-6 (0 = Sunday, 7 is also Sunday)

Each field accepts ``*``, a literal (``5``), a range (``1-5``), a step (``*/15``), a range
with a step (``1-30/5``), a literal with a step (``5/15``, meaning ``5-max/15``) and
comma-separated lists of these. Months accept ``JAN``-``DEC`` and weekdays ``SUN``-``SAT``
(case-insensitive). The nicknames ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``,
``@daily``, ``@midnight`` and ``@hourly`` are supported; ``@reboot`` is not.

Day-of-month and day-of-week follow Vixie cron: when both are restricted a day matches if
*either* matches; when one of them covers every value (e.g. ``*``) only the other applies.

>>> expr = Expression.parse("30 9 * * MON-FRI")
>>> expr.matches(datetime(2024, 1, 8, 9, 30))
True
>>> expr.next_after(datetime(2024, 1, 6, 12, 0))
datetime.datetime(2024, 1, 8, 9, 30)
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import MAXYEAR, UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronEntry", "Expression"]

#: Nicknames and the five-field expressions they stand for.
NICKNAMES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = {
    name: number
    for number, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
        start=1,
    )
}
_WEEKDAY_NAMES = {
    name: number for number, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])
}

#: How far ``next_after`` looks ahead. Eight years covers the longest gap between two
#: February 29ths (e.g. 2096 -> 2104, as 2100 is not a leap year).
_SEARCH_YEARS = 8

# A single item of a field: ``*``, ``v`` or ``v-v``, optionally followed by ``/step``.
_VALUE = r"[0-9]+|[A-Za-z]+"
_ITEM_RE = re.compile(
    rf"(?:(?P<star>\*)|(?P<start>{_VALUE})(?:-(?P<end>{_VALUE}))?)(?:/(?P<step>[0-9]+))?",
    re.ASCII,
)


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int  # the highest value accepted in the text
    default_high: int  # the end of ``*`` and of ``a/n`` (day of week: 6, although 7 is accepted)
    names: dict[str, int]
    seven_is_sunday: bool = False


_FIELDS = (
    _FieldSpec("minute", 0, 59, 59, {}),
    _FieldSpec("hour", 0, 23, 23, {}),
    _FieldSpec("day of month", 1, 31, 31, {}),
    _FieldSpec("month", 1, 12, 12, _MONTH_NAMES),
    _FieldSpec("day of week", 0, 7, 6, _WEEKDAY_NAMES, seven_is_sunday=True),
)

_ALL_DAYS = frozenset(range(1, 32))
_ALL_WEEKDAYS = frozenset(range(7))


class _FieldError(ValueError):
    """A problem with one field; ``Expression.parse`` adds the whole expression to it."""


def _parse_value(spec: _FieldSpec, text: str) -> int:
    if text.isdigit():
        value = int(text)
    elif text.upper() in spec.names:
        value = spec.names[text.upper()]
    elif spec.names:
        raise _FieldError(f"{spec.name} field {text!r} is not a number or a known name")
    else:
        raise _FieldError(f"{spec.name} field {text!r} is not a number")
    if not spec.low <= value <= spec.high:
        raise _FieldError(f"{spec.name} field {text!r} is out of range {spec.low}-{spec.high}")
    return value


def _parse_item(spec: _FieldSpec, item: str) -> set[int]:
    match = _ITEM_RE.fullmatch(item)
    if match is None:
        raise _FieldError(f"{spec.name} field {item!r} is not a valid value")
    step = 1
    if match["step"] is not None:
        step = int(match["step"])
        if step == 0:
            raise _FieldError(f"{spec.name} field {item!r} has a zero step")
    if match["star"]:
        start, end = spec.low, spec.default_high
    else:
        start = _parse_value(spec, match["start"])
        if match["end"] is not None:
            end = _parse_value(spec, match["end"])
            if start > end:
                raise _FieldError(
                    f"{spec.name} field {item!r} has a range whose start {start} "
                    f"is greater than its end {end}"
                )
        elif match["step"] is not None:
            end = max(start, spec.default_high)
        else:
            end = start
    values = set(range(start, end + 1, step))
    if spec.seven_is_sunday:
        values = {value % 7 for value in values}
    return values


def _parse_field(spec: _FieldSpec, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _FieldError(f"{spec.name} field {text!r} has an empty list item")
        values |= _parse_item(spec, item)
    return frozenset(values)


@dataclass(frozen=True)
class Expression:
    """A parsed cron expression: the set of allowed values of each field.

    Build one with :meth:`Expression.parse`; ``source`` keeps the text it came from.
    Weekdays are stored as 0-6 with 0 = Sunday.
    """

    minutes: frozenset[int] = field(repr=False)
    hours: frozenset[int] = field(repr=False)
    days: frozenset[int] = field(repr=False)
    months: frozenset[int] = field(repr=False)
    weekdays: frozenset[int] = field(repr=False)
    source: str

    @classmethod
    def parse(cls, text: str) -> Expression:
        """Parse a five-field cron expression or a nickname such as ``@daily``.

        Raises:
            TypeError: ``text`` is not a string.
            ValueError: the expression is invalid; the message names the bad field and value.

        >>> sorted(Expression.parse("*/20 * * * *").minutes)
        [0, 20, 40]
        """
        if not isinstance(text, str):
            raise TypeError(f"cron expression must be a string, got {type(text).__name__}")
        stripped = text.strip()
        try:
            if not stripped:
                raise _FieldError("the expression is empty")
            if stripped.startswith("@"):
                nickname = stripped.lower()
                if nickname == "@reboot":
                    raise _FieldError("@reboot is not supported")
                if nickname not in NICKNAMES:
                    known = ", ".join(NICKNAMES)
                    raise _FieldError(f"unknown nickname {stripped!r} (expected one of {known})")
                parts = NICKNAMES[nickname].split()
            else:
                parts = stripped.split()
            if len(parts) != len(_FIELDS):
                raise _FieldError(f"expected {len(_FIELDS)} fields, got {len(parts)}")
            minutes, hours, days, months, weekdays = (
                _parse_field(spec, part) for spec, part in zip(_FIELDS, parts, strict=True)
            )
        except _FieldError as error:
            raise ValueError(f"invalid cron expression {text!r}: {error}") from None
        return cls(minutes, hours, days, months, weekdays, text)

    def _day_matches(self, day: date) -> bool:
        day_ok = day.day in self.days
        weekday_ok = day.isoweekday() % 7 in self.weekdays
        any_day = self.days >= _ALL_DAYS
        any_weekday = self.weekdays >= _ALL_WEEKDAYS
        if any_day and any_weekday:
            return True
        if any_day:
            return weekday_ok
        if any_weekday:
            return day_ok
        return day_ok or weekday_ok

    def matches(self, dt: datetime) -> bool:
        """Whether ``dt``'s wall-clock minute (in its own timezone, if any) matches.

        Seconds and microseconds are ignored.
        """
        return (
            dt.minute in self.minutes
            and dt.hour in self.hours
            and dt.month in self.months
            and self._day_matches(dt.date())
        )

    def next_after(self, dt: datetime) -> datetime:
        """The first matching minute strictly after ``dt``, with seconds zeroed.

        The search works on ``dt``'s wall clock and the result keeps ``dt``'s ``tzinfo``
        (so around DST changes the result may be a skipped or repeated local time).

        Raises:
            ValueError: nothing matches within the next years (e.g. ``0 0 31 2 *``).
        """
        try:
            result = self._search(dt)
        except OverflowError:
            result = None
        if result is None:
            raise ValueError(
                f"cron expression {self.source!r} has no match within {_SEARCH_YEARS} years "
                f"after {dt.isoformat()}"
            )
        return result

    def _search(self, dt: datetime) -> datetime | None:
        start = dt.replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1)
        last_year = min(start.year + _SEARCH_YEARS, MAXYEAR)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        day, hour, minute = start.date(), start.hour, start.minute
        one_day = timedelta(days=1)
        while day.year <= last_year:
            if day.month not in self.months:
                if day.month == 12:
                    if day.year == last_year:
                        return None
                    day = date(day.year + 1, 1, 1)
                else:
                    day = date(day.year, day.month + 1, 1)
                hour = minute = 0
                continue
            if not self._day_matches(day):
                day, hour, minute = day + one_day, 0, 0
                continue
            index = bisect_left(hours, hour)
            if index == len(hours):
                day, hour, minute = day + one_day, 0, 0
                continue
            if hours[index] != hour:
                hour, minute = hours[index], 0
            index = bisect_left(minutes, minute)
            if index == len(minutes):
                if hour == 23:
                    day, hour, minute = day + one_day, 0, 0
                else:
                    hour, minute = hour + 1, 0
                continue
            return datetime(day.year, day.month, day.day, hour, minutes[index], tzinfo=dt.tzinfo)
        return None


def _zone(name: str) -> ZoneInfo:
    """Load a timezone, turning every way zoneinfo can fail into a ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"timezone must be a string, got {type(name).__name__}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name!r}") from None


@dataclass(frozen=True)
class CronEntry:
    """A worker scheduled by a cron expression, optionally in its own timezone.

    ``name`` is a short, stable identifier derived from the expression, the worker and the
    worker's options, so the same declaration always gets the same name.
    """

    expression: Expression
    worker: type
    timezone: str | None
    name: str

    @classmethod
    def build(cls, cron: str | dict[str, Any], worker: type) -> CronEntry:
        """Build an entry from an expression string or ``{"expr": ..., "timezone": ...}``.

        Raises:
            ValueError: an invalid expression, a dict without ``expr`` or with unknown
                keys, or an unknown timezone.
            TypeError: ``cron`` (or a value in it) has the wrong type.
        """
        timezone: str | None = None
        if isinstance(cron, str):
            expr = cron
        elif isinstance(cron, dict):
            unknown = sorted(str(key) for key in cron if key not in ("expr", "timezone"))
            if unknown:
                raise ValueError(
                    f"unknown cron option(s): {', '.join(unknown)} (expected expr, timezone)"
                )
            if "expr" not in cron:
                raise ValueError("cron option 'expr' is required")
            expr = cron["expr"]
            timezone = cron.get("timezone")
            if timezone is not None:
                _zone(timezone)
        else:
            raise TypeError(f"cron must be a string or a dict, got {type(cron).__name__}")
        expression = Expression.parse(expr)
        worker_name = f"{worker.__module__}.{worker.__qualname__}"
        opts = json.dumps(getattr(worker, "_opts", {}), sort_keys=True, default=str)
        digest = hashlib.sha256(f"{expr}:{worker_name}:{opts}".encode()).hexdigest()
        return cls(expression, worker, timezone, digest[:8])

    def is_due(self, at: datetime, default_timezone: str = "UTC") -> bool:
        """Whether the entry should run at ``at`` (an aware datetime, normally UTC).

        ``at`` is converted to the entry's timezone, or ``default_timezone`` when the entry
        has none, before matching.

        Raises:
            ValueError: ``at`` is naive, or the timezone is unknown.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("is_due needs an aware datetime")
        zone = _zone(self.timezone or default_timezone)
        return self.expression.matches(at.astimezone(UTC).astimezone(zone))
