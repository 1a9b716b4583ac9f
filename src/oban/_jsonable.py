"""JSON, exactly: what a job's args, meta and errors may hold.

A value passes when the JSON stored for it reads back equal to it, so a worker receives what
the caller passed, on every engine and in inline mode. Objects with ``str`` keys, lists,
``str``, ``int`` (64-bit), finite ``float``, ``bool`` and ``None`` pass, as do subclasses of
``str``/``int``/``dict``/``list`` and float enum members (a ``StrEnum`` member is stored as
its string). Tuples are turned into lists, which is how JSON (and oban-py) stores them.
Everything else (``datetime``, ``UUID``, ``Decimal``, ``bytes``, sets, NaN and infinities,
non-string keys, float subclasses such as ``numpy.float64``, other objects) is a
``TypeError`` naming where it is.

One walk, inlined for the common scalar types; only a failure pays for building the path.
"""

from __future__ import annotations

import enum
import sys
from typing import Any

__all__ = ["check_list", "check_object"]

_OK, _TUPLES, _BAD = 0, 1, 2
#: orjson (the encoder every engine uses) nests containers at most this deep.
_MAX_DEPTH = 254
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_FLOAT_MAX = sys.float_info.max
_REPR_LIMIT = 80

_HINTS = {
    "date": "pass value.isoformat()",
    "datetime": "pass value.isoformat()",
    "time": "pass value.isoformat()",
    "timedelta": "pass value.total_seconds()",
    "UUID": "pass str(value)",
    "Decimal": "pass str(value)",
    "bytes": "decode it, or base64-encode it",
    "bytearray": "decode it, or base64-encode it",
    "set": "pass a sorted list",
    "frozenset": "pass a sorted list",
}


def check_object(name: str, value: Any) -> dict[str, Any]:
    """``value`` if it is a dict JSON holds exactly (tuples become lists in a copy).

    Raises:
        TypeError: not a dict, or it holds something JSON cannot represent; the message
            names the path (``args['items'][2]``) and the type.

    >>> check_object("args", {"ids": (1, 2)})
    {'ids': [1, 2]}
    """
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}: {_short(value)}")
    return _checked(name, value) if value else value


def check_list(name: str, value: Any) -> list[Any]:
    """``value`` if it is a list JSON holds exactly (see :func:`check_object`)."""
    if not isinstance(value, list):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}: {_short(value)}")
    return _checked(name, value) if value else value


def _checked(name: str, value: Any) -> Any:
    found = _scan(value, 0)
    if found == _OK:
        return value
    if found == _TUPLES:
        return _as_lists(value)
    path, problem = _problem(value, name, 0) or (name, "cannot be encoded")
    raise TypeError(f"{name} must hold only JSON values: {path} {problem}")


def _scan(value: Any, depth: int) -> int:
    """``_OK``, ``_TUPLES`` (JSON once tuples are lists) or ``_BAD``."""
    found = _OK
    if isinstance(value, dict):
        for key in value:
            if type(key) is not str or not (key.isascii() or _utf8(key)):
                return _BAD
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    elif isinstance(value, tuple):
        items, found = value, _TUPLES
    else:
        return _BAD if _scalar_problem(value) else _OK
    if depth >= _MAX_DEPTH:
        return _BAD
    for item in items:
        kind = type(item)
        if kind is str:
            if item.isascii() or _utf8(item):
                continue
            return _BAD
        if kind is int:
            if _INT_MIN <= item <= _INT_MAX:
                continue
            return _BAD
        if kind is bool or item is None:
            continue
        if kind is float:
            if -_FLOAT_MAX <= item <= _FLOAT_MAX:
                continue
            return _BAD
        found |= _scan(item, depth + 1)
        if found & _BAD:
            return _BAD
    return found


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _scalar_problem(value: Any) -> str | None:
    """Why a non-container value is not JSON, or ``None`` when it is."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return None if _utf8(value) else "is a str with a lone surrogate, which is not UTF-8"
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return f"is the int {value}, outside the 64-bit range JSON numbers are stored in"
    if isinstance(value, float):
        if not -_FLOAT_MAX <= value <= _FLOAT_MAX:
            return f"is the float {value!r}, which JSON cannot represent"
        if type(value) is float or isinstance(value, enum.Enum):
            return None
        # orjson, unlike for str and int, refuses float subclasses (numpy.float64 among them).
        return f"is {type(value).__name__} {_short(value)}; pass float(value)"
    kind = type(value).__name__
    hint = _HINTS.get(kind, "pass a JSON value (dict, list, str, int, float, bool, None)")
    return f"is {kind} {_short(value)}; {hint}"


def _problem(value: Any, path: str, depth: int) -> tuple[str, str] | None:
    """The path of the first value in ``value`` that is not JSON, and why."""
    if isinstance(value, dict):
        for key in value:
            if type(key) is not str:
                return path, f"has the key {key!r} of type {type(key).__name__}, not str"
            if not _utf8(key):
                return path, f"has the key {key!r}, a str with a lone surrogate"
        pairs: Any = value.items()
    elif isinstance(value, list | tuple):
        pairs = enumerate(value)
    else:
        problem = _scalar_problem(value)
        return (path, problem) if problem else None
    if depth >= _MAX_DEPTH:
        return path, f"is nested more than {_MAX_DEPTH} levels deep"
    for key, item in pairs:
        found = _problem(item, f"{path}[{key!r}]", depth + 1)
        if found:
            return found
    return None


def _as_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_lists(item) for item in value]
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."
