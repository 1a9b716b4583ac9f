"""The ``@worker`` (classes) and ``@job`` (functions) decorators."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .job import Job
from .worker import register_worker, worker_name

if TYPE_CHECKING:
    from ._cron import CronEntry

__all__ = ["job", "worker"]

C = TypeVar("C", bound=type[Any])
F = TypeVar("F", bound=Callable[..., Any])

#: Options that become ``Job`` fields; anything else lands in ``job.extra``.
JOB_OPTIONS = frozenset(
    {
        "attempt",
        "max_attempts",
        "meta",
        "priority",
        "queue",
        "scheduled_at",
        "scheduled_in",
        "schedule_in",
        "state",
        "tags",
    }
)

#: Cron entries declared with ``cron=``, in declaration order (the scheduler reads these).
cron_entries: list[CronEntry] = []


def _build_job(cls: type[Any], args: Any, params: dict[str, Any]) -> Job:
    options = {**cls._opts, **params}
    fields = {k: v for k, v in options.items() if k in JOB_OPTIONS}
    extra = {k: v for k, v in options.items() if k not in JOB_OPTIONS}
    if isinstance(fields.get("tags"), list | tuple | set | frozenset):
        fields["tags"] = list(fields["tags"])
    if "meta" in fields and isinstance(fields["meta"], dict):
        fields["meta"] = dict(fields["meta"])
    return Job(cls._worker_name, args=args, extra=extra or None, **fields)


def _build_cron(cls: type[Any], cron: str | dict[str, Any] | None) -> CronEntry | None:
    if cron is None:
        return None
    from ._cron import CronEntry

    return CronEntry.build(cron, cls)


def worker(
    *, oban: str = "Oban", cron: str | dict[str, Any] | None = None, **overrides: Any
) -> Callable[[C], C]:
    """Turn a class with ``process(self, job)`` into a worker.

    Options (``queue``, ``priority``, ``max_attempts``, ``tags``, ``meta``, ...) are the
    defaults of every job the worker creates; ``new``/``enqueue`` override them per call.
    ``oban`` names the instance ``enqueue`` uses; ``cron`` schedules the worker.

    Raises:
        ValueError: an invalid option (blank queue, priority out of 0..9, ...).

    >>> @worker(queue="mailers", max_attempts=5)
    ... class Mailer:
    ...     async def process(self, job):
    ...         return None
    >>> Mailer.new({"to": "ada"}).queue
    'mailers'
    """

    def decorate(cls: C) -> C:
        name = worker_name(cls)
        if not callable(getattr(cls, "process", None)):

            def process(self: Any, job: Job) -> Any:
                raise NotImplementedError(f"{name} must define process(self, job)")

            cls.process = process
        cls._opts = dict(overrides)
        cls._oban_name = oban
        cls._worker_name = name
        # Validate the options once, here, so mistakes surface at import time.
        _build_job(cls, {}, {})

        def new(klass: type[Any], args: dict[str, Any] | None = None, /, **params: Any) -> Job:
            return _build_job(klass, args, params)

        async def enqueue(
            klass: type[Any],
            args: dict[str, Any] | None = None,
            /,
            conn: Any = None,
            **params: Any,
        ) -> Job:
            from ._modes import testing_mode
            from .oban import Oban

            job = _build_job(klass, args, params)
            if testing_mode.get() == "inline":  # no instance or database needed
                from .testing import process_job

                await process_job(job)
                return job
            return await Oban.get_instance(klass._oban_name).enqueue(job, conn=conn)

        new.__doc__ = f"Build (without inserting) a job for {name}."
        enqueue.__doc__ = f"Build and insert a job for {name}; returns it with its id."
        cls.new = classmethod(new)
        cls.enqueue = classmethod(enqueue)
        entry = _build_cron(cls, cron)
        register_worker(cls, name)
        if entry is not None:
            cron_entries.append(entry)
        return cls

    return decorate


def _split_call(
    signature: inspect.Signature, args: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Rebuild positional and keyword arguments for a function from a job's args dict."""
    params = list(signature.parameters.values())
    has_var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    rest = dict(args)
    for param in params:
        if param.kind is param.VAR_KEYWORD:
            continue
        if param.kind is param.VAR_POSITIONAL:
            positional.extend(rest.pop(param.name, []))
        elif param.name not in rest:
            continue
        elif param.kind is param.POSITIONAL_ONLY or (
            has_var_positional and param.kind is param.POSITIONAL_OR_KEYWORD
        ):
            positional.append(rest.pop(param.name))
        else:
            keywords[param.name] = rest.pop(param.name)
    keywords.update(rest)
    return positional, keywords


def job(
    *, oban: str = "Oban", cron: str | dict[str, Any] | None = None, **overrides: Any
) -> Callable[[F], F]:
    """Turn a plain function (sync or async) into a worker.

    The function's own arguments become the job's args: ``send.enqueue(3, b=4)`` stores
    ``{"a": 3, "b": 4}`` for ``def send(a, b)``, and the job calls ``send(a=3, b=4)``.
    Sync functions run in a thread so they never block the event loop. The function stays
    directly callable.

    >>> @job(queue="math")
    ... def add(a, b=2):
    ...     return a + b
    >>> add.new(1).args
    {'a': 1, 'b': 2}
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func)

        if inspect.iscoroutinefunction(func):

            async def process(self: Any, job: Job) -> Any:
                positional, keywords = _split_call(signature, job.args)
                return await func(*positional, **keywords)

        else:

            def process(self: Any, job: Job) -> Any:  # type: ignore[misc]
                positional, keywords = _split_call(signature, job.args)
                return func(*positional, **keywords)

        namespace = {
            "process": process,
            "__module__": func.__module__,
            "__qualname__": func.__qualname__,
            "__doc__": func.__doc__,
        }
        cls: Any = worker(oban=oban, cron=cron, **overrides)(type(func.__name__, (), namespace))

        def bind(*args: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{worker_name(func)}: {error}") from None
            bound.apply_defaults()
            values: dict[str, Any] = {}
            for key, value in bound.arguments.items():
                kind = signature.parameters[key].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    values.update(value)
                elif kind is inspect.Parameter.VAR_POSITIONAL:
                    values[key] = list(value)
                else:
                    values[key] = value
            return values

        def new(*args: Any, **kwargs: Any) -> Job:
            built: Job = cls.new(bind(*args, **kwargs))
            return built

        async def enqueue(*args: Any, conn: Any = None, **kwargs: Any) -> Job:
            inserted: Job = await cls.enqueue(bind(*args, **kwargs), conn=conn)
            return inserted

        target: Any = func
        target.new = new
        target.enqueue = enqueue
        target.__oban_worker__ = cls
        target._opts = cls._opts
        target._oban_name = oban
        return func

    return decorate
