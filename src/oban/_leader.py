"""Leader election through a row with a lease in ``oban_leaders``."""

from __future__ import annotations

import logging
from typing import Any

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper
from ._notifier import encode_payload

logger = logging.getLogger("oban.leader")


class Leader(Looper):
    """Holds or seeks the lead for ``name``; re-elects twice per lease."""

    name = "leader"

    def __init__(self, *, engine: Engine, interval: float, name: str, node: str) -> None:
        super().__init__(interval=interval / 2)
        self._engine = engine
        self._ttl = interval
        self._name = name
        self._node = node
        self.is_leader = False

    async def tick(self) -> None:
        with telemetry.span("oban.leader.election", {"node": self._node}) as span:
            try:
                leading = await self._engine.elect_leader(self._name, self._node, self._ttl)
            except Exception:
                if self.is_leader:
                    logger.warning("dropping leadership of %r after a failed election", self._name)
                self.is_leader = False
                raise
            if leading != self.is_leader:
                logger.info(
                    "node %s %s leadership of %r",
                    self._node,
                    "took" if leading else "lost",
                    self._name,
                )
            self.is_leader = leading
            span.add({"leader": leading})

    def on_message(self, message: dict[str, Any]) -> None:
        """Another node resigned: run an election now."""
        if message.get("name", self._name) == self._name and message.get("node") != self._node:
            self.poke()

    async def resign(self) -> None:
        """Give up the lead and tell the other nodes to elect at once."""
        await self.stop()
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            await self._engine.resign_leader(self._name, self._node)
            await self._engine.notify(
                "leader",
                [encode_payload({"action": "resign", "name": self._name, "node": self._node})],
            )
        except Exception as error:
            logger.warning("could not resign leadership cleanly: %s", error)
