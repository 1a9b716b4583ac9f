"""Django integration: add ``"oban.contrib.django"`` to ``INSTALLED_APPS`` (see docs/django.md).

* Settings: ``OBAN = {...}`` with the keys of ``oban.toml``; the database is
  ``DATABASES[OBAN_DATABASE_ALIAS]`` (default ``"default"``) unless ``OBAN["dsn"]`` names one.
* ``manage.py migrate`` installs and upgrades the schema; ``manage.py oban start`` runs the
  queues (every ``oban`` command is there, with the same flags).
* Each installed app's ``workers`` module is imported at startup (``OBAN_AUTODISCOVER``).
* ``Worker.enqueue_sync(...)``, ``fn.enqueue_sync(...)`` and ``oban.sync.enqueue(...)`` insert
  on Django's own connection: inside ``transaction.atomic()`` the job commits or rolls back
  with the block (``OBAN_ENQUEUE = "on_commit"``: it is inserted once the block commits).
* Jobs run between ``close_old_connections()`` calls, as requests do.
* The admin lists jobs (read only) with retry, cancel and delete actions;
  :mod:`oban.contrib.django.tasks` is a backend for Django's Tasks framework.

Nothing here touches the database or Django's settings at import time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ...job import Job

if TYPE_CHECKING:
    from ...oban import Oban

__all__ = ["aenqueue", "enqueue", "enqueue_many", "get_oban", "reset"]

#: What a job is given back from the insert that ran at commit (``on_commit``).
_COPIED = tuple(
    name for name in Job.__slots__ if name not in ("_cancellation", "extra", "unique", "replace")
)


def get_oban() -> Oban:
    """The oban instance of this Django project: the one registered under ``OBAN["name"]``
    (default ``"Oban"``; ``manage.py oban start`` registers its node there), otherwise one made
    now from the settings (client only, until something starts it)."""
    from ...oban import Oban, _instances
    from .conf import load_config

    config = load_config()
    found = _instances.get(config.name)
    if isinstance(found, Oban):
        return found
    return Oban.from_config(config)


def reset() -> None:
    """Forget the instance made by :func:`get_oban` (closing what its sync calls opened), so
    that the next call reads the settings again: for tests that change them."""
    from ...oban import Oban, _instances
    from .conf import load_config

    name = load_config().name
    found = _instances.get(name)
    if isinstance(found, Oban) and not found._started:
        found.sync.stop()
        if _instances.get(name) is found:
            del _instances[name]


def enqueue(job: Job, *, on_commit: bool | None = None, using: str | None = None) -> Job:
    """Insert ``job`` on Django's connection ``using`` (default ``OBAN_DATABASE_ALIAS``),
    inside its current transaction; with ``on_commit`` (default: ``OBAN_ENQUEUE ==
    "on_commit"``), once the current ``atomic()`` block commits (never if it rolls back).

    Returns the inserted job; with ``on_commit`` inside a block, the job given, whose ``id``
    and ``state`` are filled in at the commit.
    """
    return enqueue_many([job], on_commit=on_commit, using=using)[0]


def enqueue_many(
    jobs: Iterable[Job], *, on_commit: bool | None = None, using: str | None = None
) -> list[Job]:
    """Insert ``jobs`` in one statement on Django's connection (see :func:`enqueue`)."""
    from .conf import database_alias, enqueue_mode

    batch = list(jobs)
    for job in batch:
        if not isinstance(job, Job):
            raise TypeError(f"enqueue_many takes Job objects, got {type(job).__name__}")
    alias = using or database_alias()
    deferred = enqueue_mode() == "on_commit" if on_commit is None else on_commit
    return _insert(get_oban(), batch, alias, deferred)


async def aenqueue(job: Job, *, on_commit: bool | None = None, using: str | None = None) -> Job:
    """:func:`enqueue` from async code (an async view): it runs where Django runs the ORM's
    sync calls (``sync_to_async(thread_sensitive=True)``), so it shares the request's
    connection and transaction."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(enqueue, thread_sensitive=True)(
        job, on_commit=on_commit, using=using
    )


def _insert(oban: Oban, jobs: list[Job], alias: str, on_commit: bool) -> list[Job]:
    from django.db import connections, transaction

    connection = connections[alias]
    if on_commit and connection.in_atomic_block:

        def insert_now() -> None:
            for given, inserted in zip(jobs, _insert_now(oban, jobs, alias), strict=True):
                for name in _COPIED:
                    setattr(given, name, getattr(inserted, name))

        transaction.on_commit(insert_now, using=alias, robust=False)
        return jobs
    return _insert_now(oban, jobs, alias)


def _insert_now(oban: Oban, jobs: list[Job], alias: str) -> list[Job]:
    from django.db import connections

    connection = connections[alias]
    connection.ensure_connection()
    return oban.sync.enqueue_many(jobs, conn=_driver_connection(connection))


def _driver_connection(connection: Any) -> Any:
    """The psycopg or sqlite3 connection under a Django ``DatabaseWrapper``."""
    raw = connection.connection
    if connection.vendor == "postgresql" and type(raw).__module__.startswith("psycopg2"):
        raise TypeError(
            f"Django's database {connection.alias!r} uses psycopg2; oban inserts on Django's "
            "connection with psycopg 3: `pip install psycopg` (Django picks it up)"
        )
    return raw


def _instance_for(name: str) -> Oban | None:
    """The ``_hooks.instance_factory`` the app installs: ``Worker.enqueue`` finds this
    project's instance by its name before anything made it."""
    from .conf import instance_name

    return get_oban() if name == instance_name() else None


async def _async_enqueuer(oban: Oban, jobs: list[Job]) -> list[Job] | None:
    """The ``_hooks.async_enqueuer`` the app installs: ``await Worker.enqueue(...)`` in an
    async view inserts as ``aenqueue`` does, on Django's connection (where the ORM's calls of
    that request run), not on a pool tied to the request's event loop."""
    from asgiref.sync import sync_to_async

    from .conf import instance_name

    if oban.name != instance_name():
        return None
    return await sync_to_async(_sync_enqueuer, thread_sensitive=True)(oban, jobs)


def _sync_enqueuer(oban: Oban, jobs: list[Job]) -> list[Job] | None:
    """The ``_hooks.sync_enqueuer`` the app installs: sync enqueues of this project's
    instance go through Django's connection."""
    from .conf import database_alias, enqueue_mode, instance_name

    if oban.name != instance_name():
        return None
    return _insert(oban, jobs, database_alias(), enqueue_mode() == "on_commit")
