"""Leader election, one leader per instance name across Python and Elixir nodes.

On PostgreSQL the lease is Elixir's ``oban_peers`` row (name, node, started_at, expires_at),
elected with Elixir's semantics; on SQLite a row of ``oban_leaders``. A leader that stops
deletes its row and sends Elixir's ``{"down": name}`` on the ``leader`` channel, on which
every node of that name (Elixir's too) elects at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from . import telemetry
from ._engines.base import Engine
from ._looper import Looper

logger = logging.getLogger("oban.leader")

#: After a failed election the next one comes this soon, doubling up to the usual interval:
#: a database that is back (a restart empties the unlogged peer table) gets a leader at once.
RETRY_DELAY = 0.25


def down_message(name: str) -> str:
    """The payload Elixir's peer sends on the ``leader`` channel when its leader stops."""
    return orjson.dumps({"down": name}).decode()


class Leader(Looper):
    """Holds or seeks the lead for ``name``; elects twice per lease.

    Elixir's peer elects every ``interval`` while it follows and at half of it while it
    leads; ours elect at half of it either way, so a lapsed lease is taken over sooner.
    """

    name = "leader"

    def __init__(self, *, engine: Engine, interval: float, name: str, node: str) -> None:
        super().__init__(interval=interval / 2)
        self._engine = engine
        self._ttl = interval
        self._name = name
        self._node = node
        self._failures = 0
        self._retry: asyncio.TimerHandle | None = None
        self.is_leader = False

    async def tick(self) -> None:
        with telemetry.span("oban.leader.election", {"node": self._node}) as span:
            try:
                leading = await self._engine.elect_leader(self._name, self._node, self._ttl)
            except Exception:
                self._failed()
                raise
            self._failures = 0
            self._report(leading)
            span.add({"leader": leading})

    def _failed(self) -> None:
        # Whether the lease still holds is unknown: give up the lead until an election
        # succeeds (our own live row is extended then, as Elixir's peer does).
        if self.is_leader:
            logger.warning("dropping leadership of %r after a failed election", self._name)
        self.is_leader = False
        delay = min(self.interval, RETRY_DELAY * 2 ** min(self._failures, 16))
        self._failures += 1
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(delay, self.poke)

    def _report(self, leading: bool) -> None:
        if leading != self.is_leader:
            verb = "took" if leading else "lost"
            logger.info("node %s %s leadership of %r", self._node, verb, self._name)
        self.is_leader = leading

    def on_message(self, message: dict[str, Any]) -> None:
        """A leader of our name stopped (Elixir's ``{"down": name}``): elect now."""
        if message.get("down") == self._name:
            self.poke()

    async def stop(self) -> None:
        """Stop electing (idempotent); the lease is kept until :meth:`resign`."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        await super().stop()

    async def resign(self) -> None:
        """Give up the lead and tell every node of this name to elect at once."""
        await self.stop()
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            await self._engine.resign_leader(self._name, self._node)
            await self._engine.notify("leader", [down_message(self._name)])
        except Exception as error:
            logger.warning("could not resign leadership cleanly: %s", error)
