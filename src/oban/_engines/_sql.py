"""Loads the ``queries/<engine>/*.sql`` files once, with the schema prefix substituted.

A prefix is substituted into SQL text, so it must be a whole plain identifier: letters, digits
and ``_``, not starting with a digit, at most 63 characters (``fullmatch``: ``re.match`` with
``$`` would accept a trailing newline). PostgreSQL gets it quoted (``"prefix".oban_jobs``);
SQLite, which has no schemas, prefixes table names with it (``prefix_oban_jobs``), unquoted,
which the identifier rule makes safe; SQLite reserves names starting with ``sqlite_``, so
there a prefix may not be ``sqlite`` or start with ``sqlite_`` (in any case).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def validate_prefix(prefix: str, engine: str | None = None) -> str:
    """Return ``prefix`` if it is a plain SQL identifier (and, for ``engine="sqlite"``, does
    not make table names SQLite reserves), else raise ValueError."""
    if not isinstance(prefix, str) or _IDENTIFIER.fullmatch(prefix) is None:
        raise ValueError(
            f"prefix must be a SQL identifier (letters, digits and _, not starting with a "
            f"digit, at most 63 characters), got {prefix!r}"
        )
    if engine == "sqlite" and prefix != "public" and f"{prefix}_".lower().startswith("sqlite_"):
        raise ValueError(
            f"prefix {prefix!r} cannot be used with SQLite: its tables would be named "
            f"{prefix}_oban_jobs, and SQLite reserves names starting with sqlite_"
        )
    return prefix


@functools.cache
def _read(engine: str, name: str) -> str:
    return resources.files("oban").joinpath("queries", engine, f"{name}.sql").read_text()


@functools.cache
def load(engine: str, name: str, prefix: str) -> str:
    """The SQL of ``queries/<engine>/<name>.sql`` for ``prefix``.

    Only the validated prefix is substituted: ``{prefix}`` becomes the quoted identifier and
    ``{prefix_name}`` its string literal. Everything else travels as bound parameters.
    """
    validate_prefix(prefix, engine)
    text = _read(engine, name)
    return text.replace("{prefix_name}", f"'{prefix}'").replace("{prefix}", f'"{prefix}"')
