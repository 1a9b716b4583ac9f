"""The job list's filters: read from the URL's query, written back to it, turned into the
keyword arguments of :meth:`Oban.list_jobs`.

The URL keeps what the user typed (``args=user.id=7 plan=pro``), so a link or a reload shows
the same list; only here is that text turned into nested dicts.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlencode

from ..job import JobState

__all__ = ["FilterError", "Filters", "parse_pairs"]

#: Longest text accepted in one filter field.
MAX_TEXT = 2_000
#: Deepest ``a.b.c`` path of an args/meta filter.
MAX_DEPTH = 16
STATES = tuple(state.value for state in JobState)


class FilterError(ValueError):
    """A filter the user typed that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The job list's filters, as typed; empty strings are "not filtered"."""

    args: str = ""
    meta: str = ""
    q: str = ""
    queue: str = ""
    state: str = ""
    tags: str = ""
    worker: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str] | Iterable[tuple[str, str]]) -> Filters:
        """The filters in a request's query (repeated keys are joined with commas)."""
        pairs = query.items() if isinstance(query, Mapping) else query
        found: dict[str, list[str]] = {}
        names = {f.name for f in fields(cls)}
        for key, value in pairs:
            if key in names and value.strip():
                found.setdefault(key, []).append(value.strip()[:MAX_TEXT])
        joined = {
            key: (" " if key in ("args", "meta") else ",").join(v) for key, v in found.items()
        }
        return cls(**joined)

    def query(self, **changes: str) -> str:
        """This filter as a URL query (without ``?``), with ``changes`` applied."""
        changed = replace(self, **changes)
        return urlencode(
            [
                (f.name, getattr(changed, f.name))
                for f in fields(changed)
                if getattr(changed, f.name)
            ]
        )

    def items(self) -> list[tuple[str, str]]:
        """The filters given, as (URL key, text) pairs: hidden fields of a form."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)]

    @property
    def states(self) -> list[str]:
        return _split(self.state)

    @property
    def queues(self) -> list[str]:
        return _split(self.queue)

    @property
    def active(self) -> bool:
        """Whether anything but the state is filtered."""
        return any(getattr(self, f.name) for f in fields(self) if f.name != "state")

    def list_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``list_jobs`` for these filters.

        Raises:
            FilterError: an unknown state, or args/meta text that is not ``path=value`` pairs.
        """
        unknown = [s for s in self.states if s not in STATES]
        if unknown:
            raise FilterError(f"unknown state {unknown[0]!r}; states are {', '.join(STATES)}")
        kwargs: dict[str, Any] = {}
        if self.states:
            kwargs["state"] = self.states
        if self.queues:
            kwargs["queue"] = self.queues
        if self.worker:
            kwargs["worker"] = _split(self.worker)
        if self.tags:
            kwargs["tags"] = _split(self.tags)
        if self.args:
            kwargs["args"] = parse_pairs(self.args, "args")
        if self.meta:
            kwargs["meta"] = parse_pairs(self.meta, "meta")
        if self.q:
            kwargs["search"] = self.q
        return kwargs


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_pairs(text: str, what: str) -> dict[str, Any]:
    """``user.id=7 plan="pro plus"`` as ``{"user": {"id": 7}, "plan": "pro plus"}``.

    Pairs are separated by spaces (quote a value that has some, shell-style); a value that
    reads as JSON (``7``, ``true``, ``null``, ``"7"``, ``[1, 2]``) is that value, any other
    is a string. Integers of any size stay exact.

    Raises:
        FilterError: a pair without ``=``, an empty path segment, a path deeper than
            ``MAX_DEPTH``, a path set twice in conflicting ways, or unbalanced quotes.

    >>> parse_pairs('user.id=7 plan=pro', 'args')
    {'user': {'id': 7}, 'plan': 'pro'}
    """
    try:
        tokens = shlex.split(text)
    except ValueError as error:
        raise FilterError(f"{what} filter {text!r}: {error}") from None
    result: dict[str, Any] = {}
    for token in tokens:
        path_text, sep, raw = token.partition("=")
        path = path_text.split(".")
        if not sep or not all(part.strip() for part in path):
            raise FilterError(
                f"{what} filter: expected path=value pairs like user.id=7, got {token!r}"
            )
        if len(path) > MAX_DEPTH:
            raise FilterError(f"{what} filter: {path_text!r} is deeper than {MAX_DEPTH} keys")
        _put(result, path, _value(raw), what, path_text)
    return result


def _value(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        return raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _put(target: dict[str, Any], path: list[str], value: Any, what: str, shown: str) -> None:
    *parents, last = path
    for key in parents:
        child = target.setdefault(key, {})
        if not isinstance(child, dict):
            raise FilterError(f"{what} filter: {shown!r} conflicts with another pair")
        target = child
    if last in target and target[last] != value:
        raise FilterError(f"{what} filter: {shown!r} is given twice")
    target[last] = value
