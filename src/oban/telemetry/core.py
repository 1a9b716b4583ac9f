"""Synchronous event dispatch; a failing handler is logged, never raised."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("oban.telemetry")

Handler = Callable[[str, dict[str, Any]], Any]

_SPANS = (
    "oban.enqueue",
    "oban.producer.get",
    "oban.producer.ack",
    "oban.leader.election",
    "oban.stager.stage",
    "oban.lifeline.rescue",
    "oban.pruner.prune",
    "oban.refresher.refresh",
    "oban.refresher.cleanup",
    "oban.scheduler.evaluate",
)

#: Every event oban emits.
EVENTS: list[str] = [
    "oban.job.start",
    "oban.job.stop",
    "oban.job.exception",
    *(f"{prefix}.{kind}" for prefix in _SPANS for kind in ("start", "stop", "exception")),
    "oban.queue.shutdown",
    "oban.notifier.status",
    "oban.job.cancel",
    "oban.unique.conflict",
    "oban.workflow.release",
    "oban.web.action",
]

# event name -> {handler id -> handler}
_handlers: dict[str, dict[str, Handler]] = {}


def attach(id: str, events: list[str], handler: Handler) -> None:
    """Call ``handler(name, meta)`` for each of ``events``; ``id`` is for ``detach``."""
    detach(id)
    for event in events:
        _handlers.setdefault(event, {})[id] = handler


def detach(id: str) -> None:
    """Remove the handler attached under ``id`` (no error if there is none)."""
    for handlers in _handlers.values():
        handlers.pop(id, None)


def has_handlers(name: str) -> bool:
    """Whether anything listens to ``name`` (lets hot paths skip building metadata)."""
    return bool(_handlers.get(name))


def has_span_handlers(prefix: str) -> bool:
    """Whether anything listens to ``prefix.start``, ``.stop`` or ``.exception``."""
    return any(_handlers.get(f"{prefix}.{kind}") for kind in ("start", "stop", "exception"))


def execute(name: str, meta: dict[str, Any]) -> None:
    """Emit ``name`` to its handlers, each with its own copy of ``meta``."""
    handlers = _handlers.get(name)
    if not handlers:
        return
    for id, handler in list(handlers.items()):
        try:
            handler(name, dict(meta))
        except Exception:
            logger.exception("telemetry handler %r failed on %s", id, name)


class Collector:
    """Gathers extra metadata inside a ``span`` for its stop event."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def add(self, data: dict[str, Any]) -> None:
        """Merge ``data`` into the stop event's metadata."""
        self.data.update(data)


@contextmanager
def span(prefix: str, meta: dict[str, Any]) -> Iterator[Collector]:
    """Emit ``prefix.start``, then ``prefix.stop`` with ``duration`` (ns) or
    ``prefix.exception`` with the error, around the block."""
    start = time.monotonic_ns()
    execute(f"{prefix}.start", {**meta, "system_time": start})
    collector = Collector()
    try:
        yield collector
    except BaseException as error:  # cancellation too, so every start gets its end
        execute(
            f"{prefix}.exception",
            {
                **meta,
                **collector.data,
                "duration": time.monotonic_ns() - start,
                "error_message": str(error),
                "error_type": type(error).__name__,
                "traceback": traceback.format_exc(),
            },
        )
        raise
    execute(f"{prefix}.stop", {**meta, **collector.data, "duration": time.monotonic_ns() - start})
