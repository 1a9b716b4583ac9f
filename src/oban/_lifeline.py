"""Rescues orphaned executing jobs (leader only).

A job is an orphan when the producer that claimed it stopped heartbeating (its node died or
shut down without finishing it). A job whose producer still heartbeats is never rescued.

Jobs that no producer row knows are judged by time alone: they were claimed by an Elixir node
(Elixir Oban writes no ``oban_producers`` rows), or their rows were lost in a database crash.
Such a job may well still be running, so it is rescued only once it started more than
``rescue_after`` seconds ago, by default Elixir's own Lifeline default of 60 minutes: with the
defaults, a Python leader rescues an Elixir job no sooner than an Elixir leader would.
"""

from __future__ import annotations

import time
from typing import Any

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper

#: A max_age no heartbeat exceeds (about 31 years), except an explicitly expired producer's.
_NEVER_STALE = 1e9

#: Seconds after which a job no producer row knows is rescued: Elixir's Lifeline default.
RESCUE_AFTER = 3600.0


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
        rescue_after: float = RESCUE_AFTER,
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
