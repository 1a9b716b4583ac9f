"""Makes due scheduled and retryable jobs available, and wakes the producers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from . import telemetry
from ._engines.base import Engine

logger = logging.getLogger("oban.stager")


class Stager:
    """Runs every ``interval`` seconds on each node, for the queues this node runs."""

    def __init__(
        self,
        *,
        engine: Engine,
        interval: float = 1.0,
        limit: int = 20_000,
        on_staged: Callable[[Sequence[str]], None],
        queues: Callable[[], Sequence[str]],
    ) -> None:
        self._engine = engine
        self._interval = interval
        self._limit = limit
        self._on_staged = on_staged
        self._queues = queues
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the timer."""
        self._task = asyncio.create_task(self._loop(), name="oban-stager")

    async def stop(self) -> None:
        """Stop the timer."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def stage(self) -> dict[str, int]:
        """Stage once; return how many jobs each queue received."""
        queues = list(self._queues())
        with telemetry.span("oban.stager.stage", {}) as span:
            staged = await self._engine.stage_jobs(queues, self._limit)
            span.add({"staged_count": sum(staged.values()), "available_queues": list(staged)})
        if staged:
            self._on_staged(list(staged))
        return staged

    async def _loop(self) -> None:
        while True:
            try:
                await self.stage()
            except Exception as error:
                logger.warning("staging failed: %s; waking all producers to poll", error)
                self._on_staged(list(self._queues()))
            await asyncio.sleep(self._interval)
