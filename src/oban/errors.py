"""The public exception hierarchy.

Every error raised on purpose by oban derives from :class:`ObanError`, except where Python
already has the precise type (``TypeError`` for unserialisable args, ``ValueError`` for an
invalid option); those are raised as the built-in type so callers can catch them naturally.
"""

from __future__ import annotations


class ObanError(Exception):
    """Base class for errors raised by oban."""


class SchemaNotInstalledError(ObanError, RuntimeError):
    """The oban tables are missing from the database: run ``oban install``."""


class DatabaseUnavailableError(ObanError, ConnectionError):
    """The database could not be reached in time."""


class WorkerResolutionError(ObanError, LookupError):
    """A job's worker name could not be resolved to a worker class."""


class JobTimeoutError(ObanError, TimeoutError):
    """A job ran longer than its worker's ``timeout(job)``."""


class InstanceNotFoundError(ObanError, RuntimeError):
    """No ``Oban`` instance is registered under the requested name."""
