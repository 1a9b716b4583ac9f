"""Heartbeats this node's producers; the leader deletes producers that stopped beating."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper

logger = logging.getLogger("oban.refresher")


class Refresher(Looper):
    """Every ``interval``: bump ``updated_at`` of local producers, restore missing rows."""

    name = "refresher"

    def __init__(
        self,
        *,
        engine: Engine,
        is_leader: Callable[[], bool],
        producers: Callable[[], Iterable[Any]],
        interval: float = 15.0,
        max_age: float = 60.0,
    ) -> None:
        super().__init__(interval=interval, is_leader=is_leader)
        self._engine = engine
        self._producers = producers
        self.max_age = max_age

    async def tick(self) -> None:
        producers = {p.uuid: p for p in self._producers()}
        with telemetry.span("oban.refresher.refresh", {}) as span:
            present = await self._engine.refresh_producers(
                [(uuid, p.producer_meta()) for uuid, p in producers.items()]
            )
            missing = [p for uuid, p in producers.items() if uuid not in present]
            for producer in missing:
                logger.warning(
                    "producer row for queue %r was missing; restoring it", producer.queue
                )
                await producer.register()
            span.add({"refreshed_count": len(present), "restored_count": len(missing)})
        if self._is_leader is not None and self._is_leader():
            with telemetry.span("oban.refresher.cleanup", {}) as span:
                span.add({"cleanup_count": await self._engine.cleanup_producers(self.max_age)})
