"""Deletes finished jobs older than ``max_age`` (leader only)."""

from __future__ import annotations

from typing import Any

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper


class Pruner(Looper):
    """Keeps the jobs table small: completed, cancelled and discarded jobs age out."""

    name = "pruner"
    leader_only = True

    def __init__(
        self,
        *,
        engine: Engine,
        is_leader: Any,
        interval: float = 60.0,
        limit: int = 20_000,
        max_age: float = 86_400,
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self._engine = engine
        self._limit = limit
        self._max_age = max_age

    async def tick(self) -> None:
        with telemetry.span("oban.pruner.prune", {}) as span:
            pruned = await self._engine.prune_jobs(self._max_age, self._limit)
            span.add({"pruned_count": pruned})
