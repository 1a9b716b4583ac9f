"""Loads the ``queries/<engine>/*.sql`` files once, with the schema prefix substituted."""

from __future__ import annotations

import functools
import re
from importlib import resources

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a plain SQL identifier, else raise ValueError."""
    if not isinstance(prefix, str) or not _IDENTIFIER.match(prefix):
        raise ValueError(
            f"prefix must be a SQL identifier (letters, digits and _, not starting with a "
            f"digit, at most 63 characters), got {prefix!r}"
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
    validate_prefix(prefix)
    text = _read(engine, name)
    return text.replace("{prefix_name}", f"'{prefix}'").replace("{prefix}", f'"{prefix}"')
