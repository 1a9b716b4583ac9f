"""The registry of named ``Oban`` instances.

The model layer owns it so that ``Worker.enqueue`` finds its instance without importing the
facade: ``Oban(...)`` registers itself here, ``@worker(oban=name)`` looks it up. (``oban.oban``
re-exports the dict as ``_instances`` and ``Oban._instances``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InstanceNotFoundError

if TYPE_CHECKING:
    from .job import Job

__all__ = ["Enqueuer", "get_instance", "instance_factory", "instances"]


class Enqueuer(Protocol):
    """What ``Worker.enqueue`` needs of an instance; ``Oban`` is one."""

    async def enqueue(self, job: Job, *, conn: Any = None) -> Job: ...


#: Instance name -> instance. Only ``Oban`` instances are registered.
instances: dict[str, Any] = {}
#: Makes the instance a name refers to when none is registered yet, or returns ``None``: a
#: host integration's (the Django app's: ``Worker.enqueue`` before anything made it).
instance_factory: list[Callable[[str], Any]] = []


def get_instance(name: str) -> Enqueuer:
    """The instance registered under ``name``.

    Raises:
        InstanceNotFoundError: (a ``RuntimeError``) no such instance.
    """
    try:
        found: Enqueuer = instances[name]
    except KeyError:
        made = instance_factory[0](name) if instance_factory else None
        if made is not None:
            return made  # type: ignore[no-any-return]
        raise InstanceNotFoundError(
            f"Oban instance {name!r} not found: create Oban(name={name!r}, ...) first"
        ) from None
    return found
