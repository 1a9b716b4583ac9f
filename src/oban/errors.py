"""The public exception hierarchy.

Every error raised on purpose by oban derives from :class:`ObanError`, except where Python
already has the precise type (``TypeError`` for unserialisable args, ``ValueError`` for an
invalid option); those are raised as the built-in type so callers can catch them naturally.
"""

from __future__ import annotations

from typing import Any


class ObanError(Exception):
    """Base class for errors raised by oban."""


class SchemaNotInstalledError(ObanError, RuntimeError):
    """The oban tables are missing from the database: run ``oban install``."""


class DuplicateUniqueKeysError(ObanError, RuntimeError):
    """The unique-jobs index cannot be built: jobs already share a unique key."""


class DatabaseUnavailableError(ObanError, ConnectionError):
    """The database could not be reached in time."""


class WorkerResolutionError(ObanError, LookupError):
    """A job's worker name could not be resolved to a worker class."""


class JobTimeoutError(ObanError, TimeoutError):
    """A job ran longer than its worker's ``timeout(job)``."""


class WorkerCrashedError(ObanError, RuntimeError):
    """The child process running an ``isolation="process"`` job died before it returned."""


class InstanceNotFoundError(ObanError, RuntimeError):
    """No ``Oban`` instance is registered under the requested name."""


class OptionNotImplementedError(ObanError, NotImplementedError, ValueError):
    """An option that oban-py, Elixir Oban or Oban Pro documents (``unique``,
    ``rate_limit``, ...) but this project does not implement yet: it is refused, never
    accepted and ignored.

    A ``NotImplementedError`` by name, and a ``ValueError`` too, so code that checks options
    with ``except ValueError`` (the error for every other unusable option) catches it as well.
    """


class UnknownOptionError(ObanError, TypeError, ValueError):
    """An option name that nothing accepts (a typo, or an option of another library): the
    message names the closest known option and lists the accepted ones.

    A ``TypeError`` as Python raises for an unexpected keyword argument (and as oban-py does
    wherever its signatures are fixed), and a ``ValueError`` as for any other unusable option,
    so either ``except`` catches it.
    """


class UnimportableWorkerWarning(UserWarning):
    """A job's worker is defined in a script's ``__main__``, which other processes (another
    node, ``oban start``) cannot import, so only this process can run its jobs."""


class RelayError(ObanError, RuntimeError):
    """``relay`` did not get a value: the job's attempt failed (``with_retries=False``), or a
    subclass says why. ``job`` is the job as last read (``None`` when it no longer exists),
    ``error`` its last recorded error (the formatted exception), if any."""

    def __init__(self, message: str, job: Any = None, error: str | None = None) -> None:
        super().__init__(message)
        self.job = job
        self.error = error


class RelayTimeout(RelayError, TimeoutError):
    """The job did not finish within ``timeout``; it keeps running (or waiting) regardless."""


class RelayCancelled(RelayError):
    """The job was cancelled (or returned ``Cancel``)."""


class RelayDiscard(RelayError):
    """The job was discarded (its attempts are used up), or deleted before it finished."""
