"""Gossips this node's queue checks on ``<prefix>.oban_gossip``, as Oban Met's Examiner does,
so Oban Met and Oban Web list the Python node's queues (limits, paused, running jobs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ._engines.base import Engine
from ._looper import Looper
from ._producer import QueueInfo
from ._wire import MAX_PAYLOAD_BYTES, encode_payload


def _timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as Jason encodes an Elixir ``DateTime``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_payload(info: QueueInfo, *, name: str, now: datetime) -> dict[str, Any]:
    """One queue's check shaped as ``Oban.Engines.Basic.check_meta/3`` builds it.

    Oban Met's Examiner keys checks by ``node``, ``name`` and ``queue`` (all required) and
    renames ``limit`` to ``local_limit``; Oban Web parses ``started_at`` as ISO 8601.

    >>> info = QueueInfo(limit=5, meta={}, node="n", paused=False, queue="q", running=[1],
    ...                  started_at=datetime(2026, 1, 1, tzinfo=UTC), uuid="u")
    >>> check_payload(info, name="Oban", now=info.started_at)["started_at"]
    '2026-01-01T00:00:00.000000Z'
    """
    return {
        "limit": info.limit,
        "name": name,
        "node": info.node,
        "paused": info.paused,
        "queue": info.queue,
        "running": info.running,
        "shutdown_started_at": None,
        "started_at": _timestamp(info.started_at),
        "updated_at": _timestamp(now),
        "uuid": info.uuid,
    }


def gossip_payloads(checks: list[dict[str, Any]]) -> list[str]:
    """All checks in one ``{"checks": [...]}`` message, or one message per check when together
    they would pass PostgreSQL's NOTIFY limit (the Examiner stores each message's checks)."""
    if not checks:
        return []
    whole = encode_payload({"checks": checks})
    if len(whole) <= MAX_PAYLOAD_BYTES:
        return [whole]
    return [encode_payload({"checks": [check]}) for check in checks]


class Gossip(Looper):
    """Every ``interval`` seconds: NOTIFY this node's queue checks on the gossip channel.

    Runs on every node (not only the leader), as each Elixir node's Oban Met Examiner does.
    """

    name = "gossip"

    def __init__(
        self,
        *,
        engine: Engine,
        infos: Callable[[], Iterable[QueueInfo]],
        name: str,
        interval: float = 1.0,
    ) -> None:
        super().__init__(interval=interval)
        self._engine = engine
        self._infos = infos
        self._instance = name

    async def tick(self) -> None:
        now = datetime.now(UTC)
        checks = [check_payload(i, name=self._instance, now=now) for i in self._infos()]
        payloads = gossip_payloads(checks)
        if payloads:
            await self._engine.notify("gossip", payloads)
