"""Workflows: jobs that wait for other jobs (fan-out, fan-in, any DAG); see docs/workflows.md.

A :class:`Workflow` names its jobs and their dependencies; ``await oban.enqueue_many(wf)``
inserts them in one statement. A job with dependencies waits in the ``suspended`` state and
is released (made ``available``, or ``scheduled`` if it has a later ``scheduled_at``) once
every dependency has completed; it is cancelled instead when a dependency is cancelled,
discarded or deleted, unless the workflow ignores that. The meta fields are those Oban Pro
writes (``workflow``, ``workflow_id``, ``name``, ``deps``), so Elixir readers and Oban Web
recognise the jobs.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Self

from ._instances import get_instance
from .job import Job, JobState

__all__ = ["Workflow", "WorkflowStatus"]

MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """:meth:`Oban.workflow_status`: how many of a workflow's jobs are in each state.

    ``done`` is true once none can run any more (every job completed, cancelled or
    discarded); ``state`` is ``"completed"`` when all completed, ``"cancelled"`` or
    ``"discarded"`` when done otherwise (cancelled wins), ``"executing"`` while any job
    runs or waits to, and ``"missing"`` when no job of it exists.
    """

    id: str
    state: str
    total: int
    counts: dict[str, int]
    done: bool


def status_of(workflow_id: str, counts: dict[str, int]) -> WorkflowStatus:
    total = sum(counts.values())
    finished = sum(counts.get(s, 0) for s in ("completed", "cancelled", "discarded"))
    done = total > 0 and finished == total
    if total == 0:
        state = "missing"
    elif not done:
        state = "executing"
    elif counts.get("cancelled"):
        state = "cancelled"
    elif counts.get("discarded"):
        state = "discarded"
    else:
        state = "completed"
    return WorkflowStatus(workflow_id, state, total, dict(counts), done)


class Workflow:
    """Jobs with names and dependencies, inserted together.

    >>> wf = (
    ...     Workflow()
    ...     .add("fetch", Fetch.new({"url": url}))
    ...     .add("resize", Resize.new({}), deps="fetch")
    ...     .add("tag", Tag.new({}), deps="fetch")
    ...     .add("publish", Publish.new({}), deps=["resize", "tag"])
    ... )  # doctest: +SKIP
    >>> jobs = await oban.enqueue_many(wf)  # doctest: +SKIP

    Args:
        name: a label stored with every job (``meta.workflow_name``).
        workflow_id: the id (default: a new UUID). Ids are how every call finds the jobs.
        ignore_cancelled, ignore_discarded, ignore_deleted: a job whose dependency was
            cancelled / discarded / deleted runs anyway (by default it is cancelled, and its
            own dependents after it).

    Raises:
        ValueError: at :meth:`add`: a name used twice, a dependency not added before (so no
            cycle can be built), a job already in a workflow or already inserted.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        workflow_id: str | None = None,
        ignore_cancelled: bool = False,
        ignore_discarded: bool = False,
        ignore_deleted: bool = False,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"a workflow's name must be a non-empty string, got {name!r}")
        self.name = name
        self.id = str(uuid.uuid4()) if workflow_id is None else _checked_id(workflow_id)
        self._ignore = {
            "ignore_cancelled": bool(ignore_cancelled),
            "ignore_discarded": bool(ignore_discarded),
            "ignore_deleted": bool(ignore_deleted),
        }
        self._jobs: dict[str, Job] = {}
        #: name -> the names of the jobs it stands for as a dependency (a sub-workflow's
        #: name stands for every job of it).
        self._stands_for: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"<Workflow {self.id} ({len(self._jobs)} jobs)>"

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def jobs(self) -> list[Job]:
        """The jobs, in the order they were added (as ``enqueue_many`` inserts them)."""
        return list(self._jobs.values())

    def names(self) -> list[str]:
        """The steps' names, in the order they were added."""
        return list(self._jobs)

    async def status(self, *, oban: str = "Oban") -> WorkflowStatus:
        """``Oban.workflow_status`` of this workflow, on the instance named ``oban``."""
        instance: Any = get_instance(oban)
        status: WorkflowStatus = await instance.workflow_status(self.id)
        return status

    async def wait(
        self, *, timeout: float | None = 30.0, poll_interval: float = 0.5, oban: str = "Oban"
    ) -> WorkflowStatus:
        """``Oban.wait_for_workflow`` of this workflow, on the instance named ``oban``: its
        status once no job of it can run any more (``done`` false at the timeout)."""
        instance: Any = get_instance(oban)
        status: WorkflowStatus = await instance.wait_for_workflow(
            self.id, timeout=timeout, poll_interval=poll_interval
        )
        return status

    def add(self, name: str, job: Job, deps: str | Iterable[str] | None = None) -> Self:
        """Add ``job`` under ``name``, to run once every job named in ``deps`` completed.

        Returns the workflow, to chain calls. ``job`` is changed in place: its meta gets the
        workflow's fields and, with dependencies, its state becomes ``suspended``.
        """
        self._check_name(name)
        if not isinstance(job, Job):
            raise TypeError(f"add takes a Job (Worker.new(...)), got {type(job).__name__}")
        if job.id is not None:
            raise ValueError(f"job {name!r} was already inserted (id {job.id})")
        if "workflow_id" in job.meta:
            raise ValueError(f"job {name!r} is already in workflow {job.meta['workflow_id']}")
        names = self._resolve(name, deps)
        _check_unique(name, job, names)
        meta: dict[str, Any] = {
            **job.meta,
            "workflow": True,
            "workflow_id": self.id,
            "name": name,
            "deps": names,
        }
        if self.name is not None:
            meta["workflow_name"] = self.name
        meta.update({flag: True for flag, on in self._ignore.items() if on})
        job.meta = meta
        if names:
            job.state = JobState.SUSPENDED
        self._jobs[name] = job
        self._stands_for[name] = [name]
        return self

    def add_workflow(
        self, name: str, workflow: Workflow, deps: str | Iterable[str] | None = None
    ) -> Self:
        """Add every job of ``workflow`` as a part of this one, named ``"<name>.<step>"``:
        its first jobs wait for ``deps`` too, and a job that depends on ``name`` waits for
        all of them (for an empty part: for ``deps``). The part becomes this workflow's (one
        id, one status); a step of it ignores what either workflow's ``ignore_*`` flags
        ignore. ``workflow`` itself is left as it was.

        Raises:
            ValueError: as :meth:`add`, checked for every step before any is added.
        """
        self._check_name(name)
        if not isinstance(workflow, Workflow) or workflow is self:
            raise TypeError("add_workflow takes another Workflow")
        outer = self._resolve(name, deps)
        for step, job in workflow._jobs.items():
            self._check_name(f"{name}.{step}")
            _check_unique(f"{name}.{step}", job, job.meta.get("deps") or outer)
        added: list[str] = []
        for step, job in workflow._jobs.items():
            inner = [f"{name}.{dep}" for dep in job.meta.get("deps", [])]
            # A new job with what describes the step (a workflow already inserted can serve
            # as a template): nothing mutable is shared with the other workflow's job.
            part = Job(
                job.worker,
                queue=job.queue,
                priority=job.priority,
                max_attempts=job.max_attempts,
                args=copy.deepcopy(job.args),
                meta={
                    key: copy.deepcopy(value)
                    for key, value in job.meta.items()
                    if key not in ("workflow", "workflow_id", "name", "deps", "workflow_name")
                },
                tags=list(job.tags),
                scheduled_at=job.scheduled_at,
                unique=job.unique,
                replace=None
                if job.replace is None
                else {k: list(v) for k, v in job.replace.items()},
                extra=copy.deepcopy(job.extra),
            )
            self.add(f"{name}.{step}", part, inner or outer)
            added.append(f"{name}.{step}")
        self._stands_for[name] = added if added else outer
        return self

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"a step's name must be a non-empty string, got {name!r}")
        if name in self._stands_for:
            raise ValueError(f"workflow {self.id} already has a step named {name!r}")

    def _resolve(self, name: str, deps: str | Iterable[str] | None) -> list[str]:
        if deps is None:
            return []
        given = [deps] if isinstance(deps, str) else list(deps)
        names: list[str] = []
        for dep in given:
            if not isinstance(dep, str):
                raise TypeError(f"{name!r}: a dependency is a step's name, got {dep!r}")
            if dep == name:
                raise ValueError(f"{name!r} cannot depend on itself")
            if dep not in self._stands_for:
                raise ValueError(
                    f"{name!r} depends on {dep!r}, which is not in the workflow yet: add a "
                    "step before the steps that depend on it (a workflow has no cycles)"
                )
            names += [n for n in self._stands_for[dep] if n not in names]
        return names


def _check_unique(name: str, job: Job, deps: list[str]) -> None:
    """A step that waits (``deps``) is inserted ``suspended``: its unique states must hold
    that state, or a duplicate could take its key while it waits and keep it from being
    released."""
    if deps and job.unique is not None and "suspended" not in job.unique.states:
        raise ValueError(
            f"step {name!r} waits for its dependencies in state suspended, which its unique "
            "states leave out: while it waits it would hold no key, and a duplicate that took "
            "the key would keep it from being released. Add 'suspended' to unique states "
            "(the groups all, incomplete and successful hold it)"
        )


def _checked_id(workflow_id: str) -> str:
    if not isinstance(workflow_id, str) or not 0 < len(workflow_id) <= 128:
        raise ValueError(f"workflow_id must be a string of 1 to 128 characters: {workflow_id!r}")
    return workflow_id


def workflow_id_of(job_or_id: Job | Workflow | str) -> str:
    """The workflow id of a workflow, one of its jobs, or an id given as it is.

    Raises:
        ValueError: a job that is in no workflow.
        TypeError: anything else.
    """
    if isinstance(job_or_id, Workflow):
        return job_or_id.id
    if isinstance(job_or_id, Job):
        found = job_or_id.meta.get("workflow_id")
        if not isinstance(found, str):
            raise ValueError(f"job {job_or_id.id} is in no workflow")
        return found
    if isinstance(job_or_id, str):
        return _checked_id(job_or_id)
    raise TypeError(f"expected a Workflow, a Job or a workflow id, got {type(job_or_id).__name__}")
