"""Option names, checked wherever options are given (configuration, decorators, jobs).

An unknown name is an error that suggests the closest known one; a name that oban-py, Elixir
Oban or Oban Pro documents but this project does not implement yet is an error that says so.
Nothing is accepted and ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from .errors import OptionNotImplementedError, UnknownOptionError

__all__ = ["NOT_IMPLEMENTED", "check_names", "unknown_option"]

#: Worker and job options documented by oban-py, Elixir Oban or Oban Pro that are not
#: implemented here yet, with what they would do.
NOT_IMPLEMENTED: dict[str, str] = {
    "args_schema": "structured args",
    "batch_id": "batches",
    "chunk": "chunked workers",
    "deadline": "job deadlines",
    "deps": "workflows",
    "encrypted": "encrypted args",
    "global_limit": "global concurrency limits",
    "hooks": "worker hooks",
    "partition": "partitioned limits",
    "rate_limit": "rate limiting",
    "recorded": "recorded workers (return Record(value) from process instead)",
    "structured": "structured args",
    "workflow": "workflows",
}


def unknown_option(
    key: object, known: Iterable[str], *, list_known: bool = False
) -> UnknownOptionError:
    """The error for an unrecognised option: the closest known name, if one is close, and
    (when nothing is close, or with ``list_known``) every known name.

    >>> str(unknown_option("intervl", ["interval", "limit"]))
    "unknown option 'intervl', did you mean 'interval'?"
    """
    candidates = sorted(known)
    accepted = ", ".join(candidates)
    matches = difflib.get_close_matches(str(key), candidates, n=1)
    if not matches:
        return UnknownOptionError(f"unknown option {key!r} (known options: {accepted})")
    message = f"unknown option {key!r}, did you mean {matches[0]!r}?"
    return UnknownOptionError(f"{message} (known options: {accepted})" if list_known else message)


def check_names(given: Iterable[str], accepted: Collection[str], where: str) -> None:
    """Raise for the first name in ``given`` that ``accepted`` lacks.

    Raises:
        OptionNotImplementedError: a documented option that is not implemented yet.
        UnknownOptionError: any other unknown name (a ``TypeError`` and a ``ValueError``),
            with a did-you-mean and the accepted names.

    >>> check_names(["queue"], {"queue", "priority"}, "@worker")
    """
    for name in given:
        if name in accepted:
            continue
        if name in NOT_IMPLEMENTED:
            raise OptionNotImplementedError(
                f"{where}: option {name!r} ({NOT_IMPLEMENTED[name]}) is not implemented yet"
            )
        error = unknown_option(name, accepted, list_known=True)
        raise UnknownOptionError(f"{where}: {error}") from None
