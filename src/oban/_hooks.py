"""Hooks an integration installs around oban's work in the host program (the Django app uses
them; they are not public API).

* :data:`job_hooks`: zero-argument callables run in the thread of every sync job just before
  and just after its ``process`` (Django's ``close_old_connections``), and awaited around every
  async job (:data:`async_job_hooks`). A hook that raises before the job fails that attempt as
  the job's own exception would; one that raises after it is logged.
* :data:`sync_enqueuer`: consulted by ``oban.sync.enqueue``/``enqueue_many`` and
  ``enqueue_sync`` called without ``conn=`` outside inline mode; it returns the inserted jobs
  when it handled the insert (on the host's own connection), ``None`` to let oban insert on its
  own connections as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job
    from .oban import Oban

__all__ = ["async_enqueuer", "async_job_hooks", "job_hooks", "run_after", "sync_enqueuer"]

logger = logging.getLogger("oban.executor")

job_hooks: list[Callable[[], None]] = []
async_job_hooks: list[Callable[[], Awaitable[None]]] = []
sync_enqueuer: list[Callable[[Oban, list[Job]], list[Job] | None]] = []
#: The same for ``await oban.enqueue(...)`` (and ``Worker.enqueue``) without ``conn=`` on an
#: instance that runs no node: the Django app inserts on Django's connection, so that an
#: async view's enqueue never ties oban's pool to that request's event loop.
async_enqueuer: list[Callable[[Oban, list[Job]], Awaitable[list[Job] | None]]] = []


def around_sync(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` with :data:`job_hooks` run before and after it, in its thread."""

    def hooked(job: Any) -> Any:
        for hook in job_hooks:
            hook()
        try:
            return process(job)
        finally:
            run_after(job_hooks)

    return hooked


def run_after(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:
            logger.exception("a hook run after a job failed")


async def before_async() -> None:
    for hook in async_job_hooks:
        await hook()


async def after_async() -> None:
    for hook in async_job_hooks:
        try:
            await hook()
        except Exception:
            logger.exception("a hook run after a job failed")
