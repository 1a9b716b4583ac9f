"""The lifecycle every periodic component shares: start, a loop of ticks, a bounded stop."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from ._tasks import cancel_and_wait

logger = logging.getLogger("oban")


class Looper:
    """Runs ``tick()`` every ``interval`` seconds (jittered by up to 10%).

    A failing tick is logged and retried on the next interval; it never stops the node.
    ``leader_only`` components skip their tick unless ``is_leader()`` says this node leads.
    """

    name = "looper"
    leader_only = False

    def __init__(self, *, interval: float, is_leader: Any = None) -> None:
        self.interval = interval
        self._is_leader = is_leader
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def tick(self) -> None:
        """One unit of work."""
        raise NotImplementedError

    def start(self) -> None:
        """Start ticking in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"oban-{self.name}")

    def poke(self) -> None:
        """Tick now instead of waiting for the interval."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop ticking (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def tick_safely(self) -> None:
        """Tick once now, logging (not raising) a failure."""
        try:
            await self.tick()
        except Exception as error:
            logger.warning("%s failed: %s: %s", self.name, type(error).__name__, error)

    def _should_tick(self) -> bool:
        return not self.leader_only or bool(self._is_leader and self._is_leader())

    async def _loop(self) -> None:
        while True:
            if self._should_tick():
                await self.tick_safely()
            delay = self.interval * (0.95 + random.random() / 10)  # noqa: S311
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            self._wake.clear()
