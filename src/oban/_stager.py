"""Makes due scheduled and retryable jobs available, and wakes the producers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper

logger = logging.getLogger("oban.stager")


class Stager(Looper):
    """Runs every ``interval`` seconds on each node, for the queues this node runs."""

    name = "stager"

    def __init__(
        self,
        *,
        engine: Engine,
        interval: float = 1.0,
        limit: int = 20_000,
        on_staged: Callable[[Sequence[str]], None],
        queues: Callable[[], Sequence[str]],
    ) -> None:
        super().__init__(interval=interval)
        self._engine = engine
        self._limit = limit
        self._on_staged = on_staged
        self._queues = queues

    async def tick(self) -> None:
        try:
            await self.stage()
        except Exception:
            # Fall back to polling: producers look for available jobs themselves.
            self._on_staged(list(self._queues()))
            raise

    async def stage(self) -> dict[str, int]:
        """Stage once; return how many jobs each queue received."""
        queues = list(self._queues())
        with telemetry.span("oban.stager.stage", {}) as span:
            staged = await self._engine.stage_jobs(queues, self._limit)
            span.add({"staged_count": sum(staged.values()), "available_queues": list(staged)})
        if staged:
            self._on_staged(list(staged))
        return staged
