"""Rescues orphaned executing jobs (leader only).

A job is an orphan when the producer that claimed it stopped heartbeating (its node died or
shut down without finishing it), or, for jobs no producer row knows (an Elixir node, a
database crash), when it started more than ``rescue_after`` seconds ago. A job whose producer
still heartbeats is never rescued.
"""

from __future__ import annotations

from typing import Any

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper


class Lifeline(Looper):
    """Moves orphans back to ``available`` (or ``discarded`` when out of attempts)."""

    name = "lifeline"
    leader_only = True

    def __init__(
        self,
        *,
        engine: Engine,
        is_leader: Any,
        interval: float = 60.0,
        limit: int = 5_000,
        producer_max_age: float = 60.0,
        rescue_after: float = 300.0,
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self._engine = engine
        self._limit = limit
        self._producer_max_age = producer_max_age
        self._rescue_after = rescue_after

    async def tick(self) -> None:
        with telemetry.span("oban.lifeline.rescue", {}) as span:
            counts = await self._engine.rescue_jobs(
                self._rescue_after, self._producer_max_age, self._limit
            )
            span.add(
                {
                    "rescued_count": counts.get("available", 0),
                    "discarded_count": counts.get("discarded", 0),
                }
            )
