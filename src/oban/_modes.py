"""The testing mode switch and the inline runner.

``oban.testing.mode`` sets the switch; ``Worker.enqueue`` and ``Oban.enqueue_many`` read it.
The model layer owns both so neither has to import ``oban.testing``: that module registers
its runner here when it is imported, which it is before ``mode("inline")`` can be called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job

__all__ = ["InlineRunner", "is_inline", "run_inline", "set_inline_runner", "testing_mode"]

InlineRunner = Callable[["Job"], Awaitable[object]]

testing_mode: ContextVar[str | None] = ContextVar("oban_testing_mode", default=None)

_runners: dict[str, InlineRunner] = {}


def set_inline_runner(runner: InlineRunner) -> None:
    """Run jobs enqueued in inline mode with ``runner`` (``oban.testing`` registers it)."""
    _runners["inline"] = runner


def is_inline() -> bool:
    """Whether enqueued jobs run at once, here, instead of being inserted."""
    return testing_mode.get() == "inline"


async def run_inline(job: Job) -> object:
    """Run ``job`` now, as inline mode does, and return what ``process`` returned; its
    exceptions propagate.

    Raises:
        RuntimeError: no runner is registered (inline mode was set without ``oban.testing``).
    """
    runner = _runners.get("inline")
    if runner is None:
        raise RuntimeError("inline mode needs oban.testing: set it with oban.testing.mode()")
    return await runner(job)
