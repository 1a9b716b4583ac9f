"""A backend for Django's Tasks framework (``django.tasks`` in Django 6, the ``django-tasks``
backport before it) that runs tasks on oban's queues::

    TASKS = {"default": {"BACKEND": "oban.contrib.django.tasks.ObanBackend"}}

``task.enqueue(...)`` inserts a job on Django's connection, inside the current ``atomic()``
block (so it rolls back with it), in the queue named by the task's ``queue_name``, with its
``priority`` and ``run_after``; ``manage.py oban start`` runs it; ``get_result(id)`` reads the
job back, with the value the task returned. The result id is the job's id.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.utils.module_loading import import_string

from ...decorators import worker
from ...job import Cancel, Job, JobState, Record

try:  # Django 6
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
except ImportError:  # the backport: pip install django-tasks
    from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef,unused-ignore]
    from django_tasks.base import (  # type: ignore[no-redef,unused-ignore]
        Task,
        TaskContext,
        TaskError,
        TaskResult,
        TaskResultStatus,
    )
    from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef,unused-ignore]
    from django_tasks.signals import (  # type: ignore[no-redef,unused-ignore]
        task_enqueued,
        task_finished,
        task_started,
    )
    from django_tasks.utils import normalize_json  # type: ignore[no-redef,unused-ignore]

__all__ = ["RUNNER", "ObanBackend", "RunTask", "oban_priority"]

#: The worker of every task's job.
RUNNER = "oban.contrib.django.tasks.RunTask"

_STATUS = {
    JobState.AVAILABLE: TaskResultStatus.READY,
    JobState.SCHEDULED: TaskResultStatus.READY,
    JobState.RETRYABLE: TaskResultStatus.READY,
    JobState.SUSPENDED: TaskResultStatus.READY,
    JobState.EXECUTING: TaskResultStatus.RUNNING,
    JobState.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobState.DISCARDED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}

# The last line of a formatted traceback: "module.Error: message" (builtins unqualified).
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def oban_priority(priority: int) -> int:
    """Django's priority (-100 lowest .. 100 highest, default 0) as oban's (9 lowest .. 0
    highest): 100 -> 0, 0 -> 4, -100 -> 9."""
    return min(9, max(0, (100 - priority) * 9 // 200))


class ObanBackend(BaseTaskBackend):
    """Runs Django tasks as oban jobs. ``OPTIONS`` is not used; ``QUEUES`` (when given) lists
    the queues tasks may name, otherwise any queue is accepted."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        if "QUEUES" not in params:
            self.queues: set[str] = set()  # any queue: oban makes none up front

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        from . import _insert, get_oban
        from .conf import database_alias

        self.validate_task(task)
        _task(task.module_path)  # refused now, not on each of the job's attempts
        pending = _result(task, Job(RUNNER), args=list(args), kwargs=dict(kwargs))
        job = Job(
            RUNNER,
            queue=task.queue_name,
            priority=oban_priority(task.priority),
            scheduled_at=task.run_after,
            args={
                "task": task.module_path,
                "args": pending.args,
                "kwargs": pending.kwargs,
                "backend": self.alias,
            },
            tags=["django.tasks"],
        )
        # Inserted now (its id is the result's), inside the caller's transaction.
        (inserted,) = _insert(get_oban(), [job], database_alias(), on_commit=False)
        result = _result(task, inserted, args=pending.args, kwargs=pending.kwargs)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        from . import get_oban

        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        job = get_oban().sync.get_job(job_id)
        if job is None or job.worker != RUNNER or not isinstance(job.args.get("task"), str):
            raise TaskResultDoesNotExist(result_id)
        task = _task(job.args["task"]).using(backend=self.alias)
        return _result(task, job)


def _task(path: str) -> Task:
    """The task at ``path``, imported only from an installed app's modules (a job's args are
    data: they may not make a node import anything else).

    Raises:
        ValueError: ``path`` is outside the installed apps or is not a task.
    """
    if not any(path.startswith(f"{app.name}.") for app in apps.get_app_configs()):
        raise ValueError(f"{path!r} is not in an installed app: oban imports tasks only there")
    found = import_string(path)
    if not isinstance(found, Task):
        raise ValueError(f"{path!r} is a {type(found).__name__}, not a task")
    return found


def _result(
    task: Task,
    job: Job,
    *,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> TaskResult:
    finished = job.completed_at or job.discarded_at or job.cancelled_at
    node = job.attempted_by[0] if job.attempted_by else None
    result = TaskResult(
        task=task,
        id=str(job.id),
        status=_STATUS[JobState(job.state)],
        enqueued_at=job.inserted_at,
        started_at=job.attempted_at,
        last_attempted_at=job.attempted_at,
        finished_at=finished if job.state != JobState.RETRYABLE else None,
        args=job.args.get("args", []) if args is None else args,
        kwargs=job.args.get("kwargs", {}) if kwargs is None else kwargs,
        backend=task.backend,
        errors=[_error(entry) for entry in job.errors],
        worker_ids=[node] * job.attempt if node else [],
    )
    if job.state == JobState.COMPLETED:
        object.__setattr__(result, "_return_value", job.recorded)
    return result


def _error(entry: Any) -> TaskError:
    text = str(entry.get("error", "")) if isinstance(entry, dict) else str(entry)
    lines = text.strip().splitlines()
    match = _EXCEPTION_LINE.match(lines[-1]) if lines else None
    name = match.group(1) if match else "Exception"
    return TaskError(
        exception_class_path=name if "." in name else f"builtins.{name}", traceback=text
    )


@worker(queue="default")
class RunTask:
    """Runs a Django task from its job (see the module); the task's return value is recorded
    for ``get_result``."""

    def process(self, job: Job) -> Any:
        task = _task(job.args["task"]).using(backend=job.args.get("backend") or "default")
        result = _result(task, job)
        object.__setattr__(result, "status", TaskResultStatus.RUNNING)
        sender = type(task.get_backend())
        task_started.send(sender, task_result=result)
        call: Callable[..., Any] = task.call
        try:
            if task.takes_context:
                value = call(TaskContext(task_result=result), *result.args, **result.kwargs)
            else:
                value = call(*result.args, **result.kwargs)
        except BaseException:
            _finish(result, sender, TaskResultStatus.FAILED)
            raise
        try:
            # What Django's own backends store: the value through JSON.
            value = normalize_json(value)
            recorded = Record(value)
        except (TypeError, ValueError) as error:
            # The task ran: running it again cannot help. It ends failed, with the reason.
            _finish(result, sender, TaskResultStatus.FAILED)
            return Cancel(f"the task's return value cannot be stored: {error}")
        object.__setattr__(result, "_return_value", value)
        _finish(result, sender, TaskResultStatus.SUCCESSFUL)
        return recorded


def _finish(result: TaskResult, sender: Any, status: Any) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", dt.datetime.now(dt.UTC))
    task_finished.send(sender, task_result=result)
