"""Signals between processes on one SQLite file, which has no LISTEN/NOTIFY.

Senders append their ``signal`` and ``leader`` notifications to ``oban_signals`` (see
``SQLiteEngine.notify``); each node reads the rows other processes wrote after the last id it
saw, every ``interval`` seconds, and hands them to the same handlers PostgreSQL's notifier
feeds. Rows older than ``max_age`` are deleted as the nodes go (by any node, at most once a
``max_age``): every node has long read them by then, and a node that starts reads only what is
sent after it started, as a LISTEN would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ._looper import Looper
from ._wire import decode_payload

logger = logging.getLogger("oban.signals")

#: Seconds a signal row is kept.
MAX_AGE = 60.0


class SignalPoller(Looper):
    """Reads the signals other processes wrote to the SQLite file and delivers them."""

    name = "signals"

    def __init__(
        self,
        *,
        engine: Any,
        deliver: Callable[[str, dict[str, Any]], None],
        interval: float,
        max_age: float = MAX_AGE,
    ) -> None:
        super().__init__(interval=interval)
        self._engine = engine
        self._deliver = deliver
        self._max_age = max_age
        self._last: int | None = None
        self._pruned_at = time.monotonic()

    async def prime(self) -> None:
        """Start after the newest signal: what was sent before this node started is not for
        it (it reads its queues' state from its own configuration)."""
        self._last = await self._engine.last_signal()

    async def tick(self) -> None:
        if self._last is None:
            await self.prime()
            return
        while True:
            rows = await self._engine.read_signals(self._last)
            for row_id, channel, payload in rows:
                self._last = row_id
                self._dispatch(channel, payload)
            if len(rows) < 1_000:
                break
        if time.monotonic() - self._pruned_at >= self._max_age:
            self._pruned_at = time.monotonic()
            await self._engine.prune_signals(self._max_age)

    def _dispatch(self, channel: str, payload: str) -> None:
        # Anyone who can write the file can write here: a bad row is logged and skipped, and
        # the handlers validate what they receive as they do for NOTIFY payloads.
        try:
            message = decode_payload(payload)
        except Exception as error:
            logger.warning("ignoring an unreadable %s signal: %s", channel, error)
            return
        try:
            self._deliver(channel, message)
        except Exception:
            logger.exception("handling a %s signal failed: %.200r", channel, message)
