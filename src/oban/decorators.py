"""The ``@worker`` (classes) and ``@job`` (functions) decorators."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
)

from ._instances import get_instance
from ._modes import is_inline, run_inline
from ._options import check_names
from ._recorded import decode_recorded
from ._unique import UniqueOptions, normalize_unique
from .errors import RelayCancelled, RelayError
from .job import JOB_FIELDS, MAX_NAME_LENGTH, Cancel, Job, JobState, Record, Snooze
from .worker import register_worker, warn_if_unimportable, worker_name

if TYPE_CHECKING:
    from ._cron import CronEntry

__all__ = [
    "EnqueueOptions",
    "JobFunction",
    "JobOptions",
    "WorkerClass",
    "WorkerOptions",
    "job",
    "worker",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)

_Delay = timedelta | int | float
_Tags = list[str] | tuple[str, ...] | set[str] | frozenset[str]


class WorkerOptions(TypedDict, total=False):
    """What ``@worker(...)`` and ``@job(...)`` accept: the defaults of every job the worker
    builds (besides ``oban`` and ``cron``)."""

    extra: dict[str, Any] | None
    max_attempts: int
    meta: dict[str, Any] | None
    priority: int
    queue: str
    schedule_in: _Delay | None
    scheduled_in: _Delay | None
    tags: _Tags | None
    unique: bool | UniqueOptions | None
    replace: dict[str, list[str]] | None


class EnqueueOptions(WorkerOptions, total=False):
    """What ``Worker.enqueue(...)`` accepts: the worker's options and the other fields an
    insert stores, for this one job."""

    scheduled_at: datetime | None
    state: JobState | str


class JobOptions(EnqueueOptions, total=False):
    """What ``Worker.new(...)`` accepts: every other ``Job`` field, for this one job. The fields
    the database sets when it inserts a job (``id``, ``attempt``, ``errors``, the
    timestamps...) are for jobs run directly, such as with ``oban.testing.process_job``."""

    attempt: int
    attempted_at: datetime | None
    attempted_by: list[str] | None
    cancelled_at: datetime | None
    completed_at: datetime | None
    discarded_at: datetime | None
    errors: list[Any] | None
    id: int | None
    inserted_at: datetime | None


class WorkerClass(Protocol[T_co]):
    """What a class decorated with ``@worker`` is to a type checker.

    Pyright takes this from the decorator's return type. mypy never applies a class
    decorator's return type, so its plugin ``oban.mypy`` adds ``new``, ``enqueue`` and
    ``enqueue_sync``, with these signatures, to the decorated class itself.
    """

    _opts: dict[str, Any]
    _oban_name: str
    _worker_name: str
    __module__: str
    __name__: str
    __qualname__: str

    def __call__(self, *args: Any, **kwargs: Any) -> T_co: ...

    def __getattr__(self, name: str) -> Any: ...

    def new(self, args: dict[str, Any] | None = None, /, **params: Unpack[JobOptions]) -> Job:
        """Build (without inserting) a job for this worker."""
        ...

    def enqueue(
        self,
        args: dict[str, Any] | None = None,
        /,
        *,
        conn: Any = None,
        **params: Unpack[EnqueueOptions],
    ) -> Coroutine[Any, Any, Job]:
        """Build and insert a job for this worker; returns it with its id."""
        ...

    def enqueue_sync(
        self,
        args: dict[str, Any] | None = None,
        /,
        *,
        conn: Any = None,
        **params: Unpack[EnqueueOptions],
    ) -> Job:
        """:meth:`enqueue` for code without a running event loop (see ``Oban.sync``);
        ``conn`` is then a synchronous connection (psycopg, SQLAlchemy or sqlite3)."""
        ...

    def relay(
        self,
        args: dict[str, Any] | None = None,
        /,
        *,
        timeout: float | None = 30.0,
        poll_interval: float = 0.5,
        with_retries: bool = False,
        allow_nested: bool = False,
        **params: Unpack[EnqueueOptions],
    ) -> Coroutine[Any, Any, Any]:
        """Enqueue a job, wait for it, and return what ``process`` returned (see
        docs/results.md).

        Raises:
            RelayTimeout, RelayCancelled, RelayDiscard, RelayError: see ``Oban.relay``.
        """
        ...


class JobFunction(Protocol[P, R_co]):
    """What a function decorated with ``@job`` is to a type checker: still the function,
    plus ``new``, ``enqueue`` and ``enqueue_sync`` taking the function's own parameters.

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

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """:meth:`enqueue` for code without a running event loop (see ``Oban.sync``)."""
        ...

    def relay(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Any]:
        """Enqueue a job with the bound call arguments, wait for it and return what the
        function returned (``Oban.relay``'s defaults: 30 s timeout, no retries awaited; for
        other settings, ``await oban.relay(fn.new(...), timeout=...)``)."""
        ...


#: Options a decorator takes (the job defaults) and what new()/enqueue() take per job.
WORKER_OPTIONS: frozenset[str] = frozenset(WorkerOptions.__optional_keys__)
_DECORATOR_NAMES = WORKER_OPTIONS | {"cron", "oban"}
_NEW_NAMES = frozenset(JobOptions.__optional_keys__)
_ENQUEUE_NAMES = frozenset(EnqueueOptions.__optional_keys__) | {"conn"}
_RELAY_NAMES = frozenset(EnqueueOptions.__optional_keys__)
_SCHEDULE = frozenset({"scheduled_at", "scheduled_in", "schedule_in"})
_COPIED = ("extra", "meta")  # dict defaults each job gets its own copy of

#: Cron entries declared with ``cron=``, in declaration order (the scheduler reads these).
cron_entries: list[CronEntry] = []


def _check_decorator_options(options: dict[str, Any], where: str) -> None:
    for name in options:
        if name in JOB_FIELDS and name not in WORKER_OPTIONS:
            raise ValueError(
                f"{where}: {name!r} belongs to one job: give it to new()/enqueue(), "
                "not to the decorator"
            )
    check_names(options, _DECORATOR_NAMES, where)


def _build_job(cls: Any, args: Any, params: dict[str, Any], call: str = "new") -> Job:
    options = dict(cls._opts)
    for key in _COPIED:
        if isinstance(options.get(key), dict):
            options[key] = dict(options[key])
    if params:
        if call == "relay":
            accepted = _RELAY_NAMES
        else:
            accepted = _ENQUEUE_NAMES if call.startswith("enqueue") else _NEW_NAMES
        if not params.keys() <= accepted:
            _check_call_options(params, accepted, f"{cls._worker_name}.{call}()")
        if not params.keys().isdisjoint(_SCHEDULE):  # a per-job time replaces the default
            options = {k: v for k, v in options.items() if k not in _SCHEDULE}
        options.update(params)
    return Job(cls._worker_name, args=args, **options)


def _check_call_options(params: dict[str, Any], accepted: frozenset[str], where: str) -> None:
    for name in params:
        if name == "args":
            raise TypeError(f"{where}: give args positionally, as the first argument")
        if name in JOB_FIELDS and name not in accepted:
            raise ValueError(
                f"{where}: {name!r} is set by the database when it inserts a job; build the "
                "job with new() to give it one (to run it with oban.testing.process_job)"
            )
    check_names(params, accepted, where)


async def inline_relay(job: Job) -> Any:
    """``relay`` in inline mode: run ``job`` here and return its value (``Record`` unwrapped);
    ``Cancel`` raises :class:`RelayCancelled`, ``Snooze`` :class:`RelayError` (nothing would
    run it again); the worker's exceptions propagate."""
    result = await run_inline(job)
    if isinstance(result, Record):
        return decode_recorded(result.encoded)
    if isinstance(result, Cancel):
        raise RelayCancelled(f"{job.worker} cancelled: {result.reason}", job, str(result.reason))
    if isinstance(result, Snooze):
        raise RelayError(f"{job.worker} snoozed, which inline mode cannot wait for", job)
    try:  # what a real round trip returns: the value through the recorded format
        return decode_recorded(Record(result).encoded)
    except (TypeError, ValueError) as problem:
        text = f"the value process returned cannot be recorded: {problem}"
        raise RelayError(f"{job.worker} completed, but {text}", job, text) from None


def relay_job(cls: Any, args: Any, params: dict[str, Any]) -> Job:
    """The job ``Worker.relay`` inserts: ``meta.relay`` set, so its value is recorded and its
    completion announced.

    Raises:
        TypeError: ``conn=``: a job inserted in an open transaction is invisible until the
            commit, which cannot come while the caller waits for it.
    """
    if "conn" in params:
        raise TypeError(
            f"{cls._worker_name}.relay() takes no conn=: the job would stay invisible until "
            "your transaction commits, which cannot happen while you wait for it; enqueue "
            "with conn=, commit, then `await oban.wait_for(job)`"
        )
    built = _build_job(cls, args, params, "relay")
    built.meta = {**built.meta, "relay": True}
    return built


async def _relay(job: Job, oban: str, waits: dict[str, Any]) -> Any:
    if is_inline():
        return await inline_relay(job)
    warn_if_unimportable(job.worker)
    instance: Any = get_instance(oban)
    return await instance.relay(job, **waits)


_RELAY_WAITS = frozenset({"timeout", "poll_interval", "with_retries", "allow_nested"})


def _split_waits(kwargs: dict[str, Any], own: Iterable[str] = ()) -> dict[str, Any]:
    """Take the wait settings out of ``kwargs``, but the names in ``own`` (a ``@job``
    function's own parameters)."""
    names = _RELAY_WAITS.difference(own)
    return {name: kwargs.pop(name) for name in list(kwargs) if name in names}


async def _send(job: Job, oban: str, conn: Any) -> Job:
    if is_inline():  # no instance or database needed
        await run_inline(job)
        return job
    warn_if_unimportable(job.worker)
    return await get_instance(oban).enqueue(job, conn=conn)


#: Runs a coroutine to its end from synchronous code: ``run(call, what, instead)``, where
#: ``call()`` makes the coroutine. ``oban._sync`` sets it when the package is imported (the
#: model layer cannot import the runtime).
BlockingRunner = Callable[[Callable[[], Coroutine[Any, Any, Any]], str, str], Any]
_blocking: list[BlockingRunner] = []


def set_blocking_runner(runner: BlockingRunner) -> None:
    """Run the coroutines of ``enqueue_sync`` in inline mode with ``runner``."""
    _blocking[:] = [runner]


def _send_sync(job: Job, oban: str, conn: Any, what: str, instead: str) -> Job:
    if is_inline():  # no instance or database needed
        if not _blocking:
            raise RuntimeError("enqueue_sync needs the oban package imported: import oban")
        _blocking[0](lambda: run_inline(job), what, instead)
        return job
    warn_if_unimportable(job.worker)
    instance: Any = get_instance(oban)
    inserted: list[Job] = instance.sync._enqueue("enqueue", job, (), conn, (what, instead))
    return inserted[0]


def _build_cron(cls: type[Any], cron: str | dict[str, Any] | None) -> CronEntry | None:
    if cron is None:
        return None
    from ._cron import CronEntry

    return CronEntry.build(cron, cls)


def _check_worker_name(name: object, how: str) -> str:
    """An explicit worker name (``name=``): what the ``worker`` column holds, for example an
    Elixir module name (``MyApp.Echo``) so Python runs jobs Elixir enqueues."""
    if not isinstance(name, str):
        raise TypeError(f"{how}: name must be a string, got {type(name).__name__}: {name!r}")
    if not name.strip() or name != name.strip():
        raise ValueError(f"{how}: name must be non-blank without surrounding spaces: {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{how}: name is longer than {MAX_NAME_LENGTH} characters: {name!r}")
    return name


def _make_worker(
    klass: type[Any],
    oban: str,
    cron: str | dict[str, Any] | None,
    options: dict[str, Any],
    how: str,
    name: str | None,
    isolation: str = "thread",
) -> Any:
    cls: Any = klass
    name = worker_name(cls) if name is None else _check_worker_name(name, how)
    _check_decorator_options(options, f"{how} on {name}")
    if not callable(getattr(cls, "process", None)):
        cls.process = _missing_process(name)
    cls._isolation = _check_isolation(cls, isolation, f"{how} on {name}")
    cls._opts = dict(options)
    if cls._opts.get("unique") is not None:  # validated once, not per job
        cls._opts["unique"] = normalize_unique(cls._opts["unique"])
    cls._oban_name = oban
    cls._worker_name = name
    # Validate the option values once, here, so mistakes surface at import time.
    _build_job(cls, {}, {})
    _add_new_and_enqueue(cls, name)
    entry = _build_cron(cls, cron)
    register_worker(cls, name)
    if entry is not None:
        cron_entries.append(entry)
    return cls


ISOLATIONS = ("thread", "process")


def _check_isolation(cls: Any, isolation: object, where: str) -> str:
    """``thread`` (default: a sync ``process`` runs in the node's thread pool) or ``process``
    (each job in a child process, which timeout and cancel kill)."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"{where}: isolation must be 'thread' or 'process', got {isolation!r}")
    if isolation == "process":
        if inspect.iscoroutinefunction(cls.process):
            raise ValueError(
                f"{where}: isolation='process' is for sync workers (def process); an async "
                "worker runs on the event loop, where timeout and cancel already stop it"
            )
        if cls.__module__ == "__main__":
            raise ValueError(
                f"{where}: isolation='process' runs the worker in a child process, which "
                "imports it by module: define it in an importable module, not in __main__"
            )
    return str(isolation)


def _missing_process(name: str) -> Callable[[Any, Job], Any]:
    def process(self: Any, job: Job) -> Any:
        raise NotImplementedError(f"{name} must define process(self, job)")

    return process


def _add_new_and_enqueue(cls: Any, name: str) -> None:
    def new(klass: type[Any], args: dict[str, Any] | None = None, /, **params: Any) -> Job:
        return _build_job(klass, args, params)

    async def enqueue(
        klass: type[Any], args: dict[str, Any] | None = None, /, conn: Any = None, **params: Any
    ) -> Job:
        return await _send(_build_job(klass, args, params, "enqueue"), klass._oban_name, conn)

    def enqueue_sync(
        klass: type[Any], args: dict[str, Any] | None = None, /, conn: Any = None, **params: Any
    ) -> Job:
        built = _build_job(klass, args, params, "enqueue_sync")
        what, instead = f"{name}.enqueue_sync()", f"await {name}.enqueue(...)"
        return _send_sync(built, klass._oban_name, conn, what, instead)

    async def relay(klass: type[Any], args: dict[str, Any] | None = None, /, **params: Any) -> Any:
        waits = _split_waits(params)
        return await _relay(relay_job(klass, args, params), klass._oban_name, waits)

    new.__doc__ = f"Build (without inserting) a job for {name}."
    enqueue.__doc__ = f"Build and insert a job for {name}; returns it with its id."
    enqueue_sync.__doc__ = (
        f"Build and insert a job for {name} from synchronous code (no running event loop); "
        "returns it with its id. ``conn``: a synchronous connection (psycopg, SQLAlchemy, "
        "sqlite3) whose transaction the insert joins."
    )
    cls.new = classmethod(new)
    cls.enqueue = classmethod(enqueue)
    cls.enqueue_sync = classmethod(enqueue_sync)
    relay.__doc__ = (
        f"Enqueue a job for {name}, wait for it and return what process returned "
        "(``timeout=30.0``, ``poll_interval=0.5``, ``with_retries=False``, "
        "``allow_nested=False``); see docs/results.md."
    )
    cls.relay = classmethod(relay)


def worker(
    *,
    oban: str = "Oban",
    cron: str | dict[str, Any] | None = None,
    name: str | None = None,
    isolation: Literal["thread", "process"] = "thread",
    **options: Unpack[WorkerOptions],
) -> Callable[[type[T]], WorkerClass[T]]:
    """Turn a class with ``process(self, job)`` into a worker.

    Options (``queue``, ``priority``, ``max_attempts``, ``tags``, ``meta``,
    ``scheduled_in``, ``extra``) are the defaults of every job the worker creates;
    ``new``/``enqueue`` override them, and set any other ``Job`` field, per call. ``oban``
    names the instance ``enqueue`` uses; ``cron`` schedules the worker; ``name`` is the
    worker name stored in each job (default ``module.QualName``; give an Elixir module name,
    such as ``"MyApp.Echo"``, to run jobs that Elixir nodes enqueue). ``isolation="process"``
    runs each job of a sync worker in a child process, so that its ``timeout`` and
    ``cancel_job`` stop it for real (a thread cannot be interrupted); children are reused.

    Raises:
        ValueError: an unknown option (with a did-you-mean), a per-job field such as
            ``state``, or an invalid value (blank queue, priority out of 0..9, ...).
        TypeError: an option of the wrong type.
        OptionNotImplementedError: an option not implemented yet (``global_limit``, ...).

    >>> @worker(queue="mailers", max_attempts=5)
    ... class Mailer:
    ...     async def process(self, job):
    ...         return None
    >>> Mailer.new({"to": "ada"}).queue
    'mailers'
    """

    def decorate(klass: type[T]) -> WorkerClass[T]:
        cls = _make_worker(klass, oban, cron, dict(options), "@worker", name, isolation)
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


def _function_process(func: Callable[..., Any], signature: inspect.Signature) -> Any:
    if inspect.iscoroutinefunction(func):

        async def process(self: Any, job: Job) -> Any:
            positional, keywords = _split_call(signature, job.args)
            return await func(*positional, **keywords)

        return process

    def process_sync(self: Any, job: Job) -> Any:
        positional, keywords = _split_call(signature, job.args)
        return func(*positional, **keywords)

    return process_sync


def _binder(
    func: Callable[..., Any], signature: inspect.Signature
) -> Callable[..., dict[str, Any]]:
    def bind(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(
                f"{worker_name(func)}: {error}{_option_hint(signature, kwargs)}"
            ) from None
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

    return bind


def _option_hint(signature: inspect.Signature, kwargs: dict[str, Any]) -> str:
    misplaced = sorted((kwargs.keys() & JOB_FIELDS) - signature.parameters.keys())
    if not misplaced:
        return ""
    return f" ({', '.join(misplaced)}: job options of a @job function go to @job(...))"


def job(
    *,
    oban: str = "Oban",
    cron: str | dict[str, Any] | None = None,
    name: str | None = None,
    isolation: Literal["thread", "process"] = "thread",
    **options: Unpack[WorkerOptions],
) -> Callable[[Callable[P, T]], JobFunction[P, T]]:
    """Turn a plain function (sync or async) into a worker.

    The function's own arguments become the job's args: ``send.enqueue(3, b=4)`` stores
    ``{"a": 3, "b": 4}`` for ``def send(a, b)``, and the job calls ``send(a=3, b=4)``.
    Job options (as for ``@worker``, ``name`` included) are given to the decorator.
    ``enqueue`` also takes ``conn=`` (insert in the caller's transaction), unless the function
    has a parameter named ``conn``, which then stays the function's. ``enqueue_sync`` does the
    same from synchronous code (no running event loop; see ``Oban.sync``). Sync functions run in a
    thread so they never block the event loop. The function stays directly callable.

    >>> @job(queue="math")
    ... def add(a, b=2):
    ...     return a + b
    >>> add.new(1).args
    {'a': 1, 'b': 2}
    """

    def decorate(func: Callable[P, T]) -> JobFunction[P, T]:
        signature = inspect.signature(func)
        namespace = {
            "process": _function_process(func, signature),
            "__module__": func.__module__,
            "__qualname__": func.__qualname__,
            "__doc__": func.__doc__,
        }
        klass = type(func.__name__, (), namespace)
        cls = _make_worker(klass, oban, cron, dict(options), "@job", name, isolation)
        bind = _binder(func, signature)
        takes_conn = "conn" in signature.parameters

        def new(*args: Any, **kwargs: Any) -> Job:
            built: Job = cls.new(bind(*args, **kwargs))
            return built

        async def enqueue(*args: Any, **kwargs: Any) -> Job:
            conn = None if takes_conn else kwargs.pop("conn", None)
            inserted: Job = await _send(cls.new(bind(*args, **kwargs)), oban, conn)
            return inserted

        def enqueue_sync(*args: Any, **kwargs: Any) -> Job:
            conn = None if takes_conn else kwargs.pop("conn", None)
            what = f"{cls._worker_name}.enqueue_sync()"
            instead = f"await {cls._worker_name}.enqueue(...)"
            return _send_sync(cls.new(bind(*args, **kwargs)), oban, conn, what, instead)

        async def relay(*args: Any, **kwargs: Any) -> Any:
            waits = _split_waits(kwargs, signature.parameters)
            built: Job = cls.new(bind(*args, **kwargs))
            built.meta = {**built.meta, "relay": True}
            return await _relay(built, oban, waits)

        target: Any = func
        target.relay = relay
        target.new = new
        target.enqueue = enqueue
        target.enqueue_sync = enqueue_sync
        target.__oban_worker__ = cls
        target._opts = cls._opts
        target._oban_name = oban
        return cast("JobFunction[P, T]", target)

    return decorate
