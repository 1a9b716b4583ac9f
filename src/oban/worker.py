"""The worker protocol, the worker registry and worker resolution."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Awaitable, Sequence
from types import ModuleType
from typing import Any, ClassVar, Protocol, runtime_checkable

from .errors import JobTimeoutError, UnimportableWorkerWarning, WorkerResolutionError
from .job import Job

__all__ = [
    "JobTimeoutError",
    "UnimportableWorkerWarning",
    "Worker",
    "WorkerResolutionError",
    "refused_module",
    "register_worker",
    "resolve_worker",
    "warn_if_unimportable",
    "worker_name",
]

_registry: dict[str, type[Any]] = {}
_warned: set[str] = set()
_PACKAGE = os.path.dirname(__file__) + os.sep


@runtime_checkable
class Worker(Protocol):
    """What ``@worker`` and ``@job`` produce; useful for type checking.

    ``process`` may be ``async def`` or a plain ``def`` (run in a thread). Optional
    methods: ``backoff(job) -> int`` seconds before the next attempt, and
    ``timeout(job) -> float | None`` seconds after which the attempt fails with
    :class:`JobTimeoutError`.
    """

    _opts: ClassVar[dict[str, Any]]
    _oban_name: ClassVar[str]

    def process(self, job: Job) -> Any | Awaitable[Any]: ...


def worker_name(obj: Any) -> str:
    """The name a worker is stored and resolved under: the ``name=`` given to ``@worker`` /
    ``@job``, else ``module.QualName``.

    >>> class Mailer: ...
    >>> worker_name(Mailer)
    '__main__.Mailer'
    """
    target = getattr(obj, "__oban_worker__", obj)
    # Its own attribute only: a subclass of a decorated worker is a worker of its own.
    explicit = vars(target).get("_worker_name") if hasattr(target, "__dict__") else None
    if isinstance(explicit, str):
        return explicit
    return f"{obj.__module__}.{obj.__qualname__}"


def warn_if_unimportable(name: str) -> None:
    """Warn, once per worker, that a worker defined in a script's ``__main__`` cannot be
    imported by other processes (another node, ``oban start``), so only this process can run
    its jobs. The warning points at the first line outside oban: the one that enqueued.

    A warning rather than a log line: it is a mistake in code, found while developing; it
    points at the line that enqueued, shows in pytest's summary, and
    ``-W error::oban.worker.UnimportableWorkerWarning`` turns it into an error in CI.
    """
    if not name.startswith("__main__.") or name in _warned:
        return
    warnings.warn(
        f"worker {name!r} is defined in __main__ (a script run directly), which other "
        "processes cannot import: only this process can run its jobs. Move it to a module "
        "and import it from there.",
        UnimportableWorkerWarning,
        stacklevel=_caller_outside_oban(),
    )
    _warned.add(name)


def _caller_outside_oban() -> int:
    """The ``stacklevel`` of the first frame outside this package, seen from our caller."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def register_worker(cls: type[Any], name: str | None = None) -> str:
    """Register ``cls`` under ``name`` (default: its ``module.QualName``) and return the name."""
    key = name or worker_name(cls)
    known = _registry.get(key)
    if known is not None and _qualified(known) != _qualified(cls):
        raise ValueError(
            f"worker name {key!r} is already taken by {_qualified(known)}; "
            f"{_qualified(cls)} needs another name"
        )
    _registry[key] = cls
    return key


def _qualified(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: Top-level packages a job's worker name never imports: the standard library (``venv``,
#: ``unittest``, ``this``, ... run programs or print when imported) and oban itself.
_NEVER_IMPORTED: frozenset[str] = frozenset(sys.stdlib_module_names) | {"oban"}
#: Classes found by import (not registered), by worker name.
_imported: dict[str, type[Any]] = {}


def refused_module(name: str) -> str | None:
    """Why the module path ``name`` (a worker name or a module) is never imported to run a
    job, or ``None`` if it may be.

    >>> refused_module("unittest.__main__.Worker")
    'it names a __main__ module, which is never imported to run a job (it runs a program)'
    >>> refused_module("myapp.workers.Mailer") is None
    True
    """
    parts = name.split(".")
    if "__main__" in parts:
        return (
            "it names a __main__ module, which is never imported to run a job (it runs a program)"
        )
    if parts[0] == "oban":
        return "modules of oban itself are never imported to run a job"
    if parts[0] in _NEVER_IMPORTED:
        return (
            f"{parts[0]!r} is in the standard library, whose modules are never imported to run "
            "a job"
        )
    return None


def _under(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def resolve_worker(name: str, *, modules: Sequence[str] | None = None) -> type[Any]:
    """Find the worker class for ``name``: the registry first, then by import.

    A name that is not registered is imported on demand, except from the standard library,
    from a ``__main__`` module at any depth and from oban itself; with ``modules`` (the
    ``worker_modules`` setting), only from modules under those prefixes. Whatever an import
    raises, ``SystemExit`` and ``KeyboardInterrupt`` included, becomes the error raised here:
    a job's worker name comes from a database row, which must not stop the node.

    Raises:
        WorkerResolutionError: a refused name, no module, no attribute, an import that
            raised, or not a worker class.
    """
    if not isinstance(name, str):
        raise WorkerResolutionError(f"cannot resolve worker {name!r}: expected 'module.Name'")
    # First the registry: an explicit name (``@worker(name="Mailer")``) need not be dotted.
    cls = _registry.get(name)
    if cls is not None:
        return cls
    if "." not in name:
        raise WorkerResolutionError(f"cannot resolve worker {name!r}: expected 'module.Name'")
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        raise WorkerResolutionError(
            f"cannot resolve worker {name!r}: expected a dotted path of Python identifiers"
        )
    if parts[0] == "__main__" and modules is None:
        # The running program's own module: looked up, never imported.
        return _checked(name, sys.modules.get("__main__"), parts[1:])
    refusal = refused_module(name)
    if refusal is None and modules is not None and not _under(name, modules):
        refusal = (
            f"it is outside worker_modules ({', '.join(modules) or 'none'}), the only modules "
            "imported to run jobs"
        )
    if refusal is not None:
        raise WorkerResolutionError(f"cannot resolve worker {name!r}: {refusal}")
    cls = _imported.get(name)
    if cls is not None:
        return cls

    module: Any = None
    # The longest importable prefix is the module; the rest is a (possibly nested) qualname.
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        if modules is not None and not _under(module_name, modules):
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and not module_name.startswith(error.name):
                raise WorkerResolutionError(
                    f"cannot resolve worker {name!r}: importing {module_name!r} failed: {error}"
                ) from error
            continue
        except BaseException as error:  # a module body may raise SystemExit: contain it
            raise WorkerResolutionError(
                f"cannot resolve worker {name!r}: importing {module_name!r} raised {error!r}"
            ) from error
        attrs = parts[cut:]
        break
    else:
        raise WorkerResolutionError(f"cannot resolve worker {name!r}: no module {parts[0]!r}")

    # Importing may have run the decorator, which registers the worker.
    cls = _registry.get(name)
    if cls is not None:
        return cls
    cls = _checked(name, module, attrs)
    _imported[name] = cls
    return cls


def _checked(name: str, module: Any, attrs: list[str]) -> type[Any]:
    """The worker class at ``module.<attrs>``."""
    if module is None:
        raise WorkerResolutionError(f"cannot resolve worker {name!r}: no module '__main__'")
    target: Any = module
    for attr in attrs:
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise WorkerResolutionError(
                f"cannot resolve worker {name!r}: {module.__name__!r} has no attribute "
                f"{'.'.join(attrs)!r}"
            ) from None
        if isinstance(target, ModuleType):
            # A module another module imported (`myapp.os.X`): the name would reach into it.
            raise WorkerResolutionError(
                f"cannot resolve worker {name!r}: {attr!r} of {module.__name__!r} is a module"
            )
    target = getattr(target, "__oban_worker__", target)
    if not isinstance(target, type):
        raise WorkerResolutionError(
            f"cannot resolve worker {name!r}: it is {type(target).__name__}, not a worker class"
        )
    if not callable(getattr(target, "process", None)):
        raise WorkerResolutionError(
            f"cannot resolve worker {name!r}: the class has no process(job) method"
        )
    return target
