"""Makes due scheduled and retryable jobs available, and wakes the producers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper

logger = logging.getLogger("oban.stager")


class Stager(Looper):
    """Stages every ``interval`` seconds.

    With ``is_leader`` (PostgreSQL) it runs on the leader only and stages every queue of the
    cluster, as Elixir's stager does: one stager per cluster, so Elixir's, which locks no
    rows, never races ours. The engine notifies the queues that have available jobs, so the
    producers of every node wake. Without it (SQLite) each node stages its own ``queues``.
    """

    name = "stager"

    def __init__(
        self,
        *,
        engine: Engine,
        interval: float = 1.0,
        is_leader: Callable[[], bool] | None = None,
        limit: int = 20_000,
        on_staged: Callable[[Sequence[str]], None],
        queues: Callable[[], Sequence[str]],
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self.leader_only = is_leader is not None
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
        """Stage once; return how many jobs each woken queue received."""
        scope = None if self.leader_only else list(self._queues())
        with telemetry.span("oban.stager.stage", {}) as span:
            staged = await self._engine.stage_jobs(scope, self._limit)
            span.add({"staged_count": sum(staged.values()), "available_queues": list(staged)})
        if staged:
            self._on_staged(list(staged))
        return staged
