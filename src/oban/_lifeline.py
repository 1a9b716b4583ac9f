"""Rescues orphaned executing jobs (leader only).

A job is an orphan when the producer that claimed it stopped heartbeating (its node died or
shut down without finishing it), or, for jobs no producer row knows (an Elixir node, a
database crash), when it started more than ``rescue_after`` seconds ago. A job whose producer
still heartbeats is never rescued.
"""

from __future__ import annotations

import time
from typing import Any

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper

#: A max_age no heartbeat exceeds (about 31 years), except an explicitly expired producer's.
_NEVER_STALE = 1e9


class Lifeline(Looper):
    """Moves orphans back to ``available``, counting the rescue in ``meta.rescued``, or to
    ``discarded`` when out of attempts (meta untouched)."""

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
        self._healthy_since: float | None = None

    async def tick(self) -> None:
        # A producer's heartbeat only proves its node is dead if the database was reachable
        # all along: right after this node starts, or after the database was down, every
        # heartbeat may be old. Judge by heartbeats only once the database has been up for a
        # whole producer max_age (nodes heartbeat more often than that); until then only
        # explicitly expired producers (shut down with jobs left) and rescue_after apply.
        now = time.monotonic()
        if self._healthy_since is None:
            self._healthy_since = now
        trusted = now - self._healthy_since >= self._producer_max_age
        max_age = self._producer_max_age if trusted else _NEVER_STALE
        with telemetry.span("oban.lifeline.rescue", {}) as span:
            try:
                counts = await self._engine.rescue_jobs(self._rescue_after, max_age, self._limit)
            except Exception:
                self._healthy_since = None
                raise
            span.add(
                {
                    "rescued_count": counts.get("available", 0),
                    "discarded_count": counts.get("discarded", 0),
                }
            )
