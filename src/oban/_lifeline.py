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

import math
import time
from collections.abc import Awaitable, Callable
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
        on_rescued: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self._engine = engine
        # Wakes the producers that can run the rescued jobs, rather than leave them for the
        # next poll.
        self._on_rescued = on_rescued
        self._limit = limit
        self._producer_max_age = producer_max_age
        self._rescue_after = rescue_after
        # Since when this node has reached the database without a failure (-inf: always).
        self._healthy_since = -math.inf

    def note_outage(self) -> None:
        """This node lost the database (its notifier reconnected): distrust heartbeats for
        a max_age from now, as after a failed tick."""
        self._healthy_since = time.monotonic()

    async def tick(self) -> None:
        # A producer's stale heartbeat proves its node dead only if that node could have
        # written one: if the database was down, or this node could not reach it (a
        # partition may have cut the other nodes off too), every heartbeat may be old. So
        # after a failed tick, heartbeats are trusted again only once this node has reached
        # the database for a whole producer max_age (nodes heartbeat more often than that);
        # until then only explicitly expired producers (shut down with jobs left) and
        # rescue_after apply. A database that restarted is judged by the database itself
        # (on PostgreSQL, by pg_postmaster_start_time()), so a node that starts beside a
        # database that stayed up, such as a crashed node's replacement, trusts heartbeats
        # at once and rescues the dead node's jobs within a max_age of its last heartbeat.
        now = time.monotonic()
        trusted = now - self._healthy_since >= self._producer_max_age
        max_age = self._producer_max_age if trusted else _NEVER_STALE
        with telemetry.span("oban.lifeline.rescue", {}) as span:
            try:
                counts = await self._engine.rescue_jobs(self._rescue_after, max_age, self._limit)
            except Exception:
                self._healthy_since = time.monotonic()
                raise
            span.add(
                {
                    "rescued_count": counts.get("available", 0),
                    "discarded_count": counts.get("discarded", 0),
                }
            )
        if counts.get("available", 0) and self._on_rescued is not None:
            await self._on_rescued()
