"""The worker protocol, the worker registry and worker resolution."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable
from typing import Any, ClassVar, Protocol, runtime_checkable

from .errors import JobTimeoutError, WorkerResolutionError
from .job import Job

__all__ = [
    "JobTimeoutError",
    "Worker",
    "WorkerResolutionError",
    "register_worker",
    "resolve_worker",
    "worker_name",
]

_registry: dict[str, type[Any]] = {}


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
    """The name a worker is stored and resolved under: ``module.QualName``.

    >>> class Mailer: ...
    >>> worker_name(Mailer)
    '__main__.Mailer'
    """
    return f"{obj.__module__}.{obj.__qualname__}"


def register_worker(cls: type[Any], name: str | None = None) -> str:
    """Register ``cls`` under ``name`` (default: its ``module.QualName``) and return the name."""
    key = name or worker_name(cls)
    _registry[key] = cls
    return key


def resolve_worker(name: str) -> type[Any]:
    """Find the worker class for ``name``: the registry first, then by import.

    Raises:
        WorkerResolutionError: no module, no attribute, or not a worker class.
    """
    cls = _registry.get(name)
    if cls is not None:
        return cls
    if not isinstance(name, str) or "." not in name:
        raise WorkerResolutionError(f"cannot resolve worker {name!r}: expected 'module.Name'")

    parts = name.split(".")
    module: Any = None
    # The longest importable prefix is the module; the rest is a (possibly nested) qualname.
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and not module_name.startswith(error.name):
                raise WorkerResolutionError(
                    f"cannot resolve worker {name!r}: importing {module_name!r} failed: {error}"
                ) from error
            continue
        except Exception as error:
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

    target: Any = module
    for attr in attrs:
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise WorkerResolutionError(
                f"cannot resolve worker {name!r}: {module.__name__!r} has no attribute "
                f"{'.'.join(attrs)!r}"
            ) from None
    target = getattr(target, "__oban_worker__", target)
    if not isinstance(target, type):
        raise WorkerResolutionError(
            f"cannot resolve worker {name!r}: it is {type(target).__name__}, not a worker class"
        )
    if not callable(getattr(target, "process", None)):
        raise WorkerResolutionError(
            f"cannot resolve worker {name!r}: the class has no process(job) method"
        )
    _registry[name] = target
    return target
