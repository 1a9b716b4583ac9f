"""The ``@worker`` (classes) and ``@job`` (functions) decorators."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast

from .job import Job
from .worker import register_worker, worker_name

if TYPE_CHECKING:
    from ._cron import CronEntry

__all__ = ["JobFunction", "WorkerClass", "job", "worker"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)


class WorkerClass(Protocol[T_co]):
    """What a class decorated with ``@worker`` is to a type checker.

    Pyright takes this from the decorator's return type. mypy never applies a class
    decorator's return type, so its plugin ``oban.mypy`` adds ``new`` and ``enqueue``, with
    these signatures, to the decorated class itself.
    """

    _opts: dict[str, Any]
    _oban_name: str
    _worker_name: str
    __module__: str
    __name__: str
    __qualname__: str

    def __call__(self, *args: Any, **kwargs: Any) -> T_co: ...

    def __getattr__(self, name: str) -> Any: ...

    def new(self, args: dict[str, Any] | None = None, /, **params: Any) -> Job:
        """Build (without inserting) a job for this worker."""
        ...

    def enqueue(
        self, args: dict[str, Any] | None = None, /, *, conn: Any = None, **params: Any
    ) -> Coroutine[Any, Any, Job]:
        """Build and insert a job for this worker; returns it with its id."""
        ...


class JobFunction(Protocol[P, R_co]):
    """What a function decorated with ``@job`` is to a type checker: still the function,
    plus ``new`` and ``enqueue`` taking the function's own parameters.

    To enqueue inside a transaction with typed arguments, build the job with ``new`` and
    pass it to ``oban.enqueue(job, conn=conn)`` (``fn.enqueue(..., conn=conn)`` works at
    runtime, but a ``ParamSpec`` cannot express the extra keyword).
    """

    __oban_worker__: type[Any]
    _opts: dict[str, Any]
    _oban_name: str
    __name__: str
    __qualname__: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def new(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Build (without inserting) a job whose args are the bound call arguments."""
        ...

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Job]:
        """Build and insert a job whose args are the bound call arguments."""
        ...


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
) -> Callable[[type[T]], WorkerClass[T]]:
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

    def decorate(klass: type[T]) -> WorkerClass[T]:
        cls: Any = klass
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
        return cast("WorkerClass[T]", cls)

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
) -> Callable[[Callable[P, T]], JobFunction[P, T]]:
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

    def decorate(func: Callable[P, T]) -> JobFunction[P, T]:
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
        return cast("JobFunction[P, T]", target)

    return decorate
