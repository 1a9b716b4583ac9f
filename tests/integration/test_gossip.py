"""With ``metrics`` on, a PostgreSQL node NOTIFYs its queue checks on ``<prefix>.oban_gossip``
in the shape Oban Met's Examiner stores (``deps/oban_met/lib/oban/met/examiner.ex``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql

from oban import Job, Oban, worker
from oban._wire import decode_payload
from tests.helpers import eventually

RELEASE = asyncio.Event()
STARTED: set[int] = set()


@worker(queue="gossiped")
class GossipBlocker:
    async def process(self, job: Job) -> None:
        assert job.id is not None
        STARTED.add(job.id)
        await asyncio.wait_for(RELEASE.wait(), timeout=10)


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    RELEASE.clear()
    STARTED.clear()


async def _checks(listener: psycopg.AsyncConnection[Any], count: int) -> list[dict[str, Any]]:
    """The checks of the next ``count`` gossip messages."""
    checks: list[dict[str, Any]] = []
    async for note in listener.notifies(timeout=5.0, stop_after=count):
        checks.extend(decode_payload(note.payload)["checks"])
    return checks


async def test_a_node_gossips_its_queue_checks(
    dsn: str, make_oban: Callable[..., Oban], prefix: str
) -> None:
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        channel = psql.Identifier(f"{prefix}.oban_gossip")
        await listener.execute(psql.SQL("LISTEN {}").format(channel))
        oban = make_oban(
            metrics={"interval": 0.1},
            name="Oban",
            node="py-gossip",
            queues={"gossiped": 3, "quiet": {"limit": 1, "paused": True}},
        )
        await oban.start()
        job = await oban.enqueue(GossipBlocker.new())
        await eventually(lambda: job.id in STARTED, timeout=5, message="job running")

        checks = await _checks(listener, 3)
        running = [c for c in checks if c["queue"] == "gossiped" and c["running"] == [job.id]]
        quiet = [c for c in checks if c["queue"] == "quiet"]
        RELEASE.set()
    finally:
        await listener.close()

    assert running, f"no check shows job {job.id} running: {checks!r}"
    check = running[-1]
    info = oban.check_queue("gossiped")
    assert info is not None
    # The Examiner pattern-matches node, name and queue; Oban Web reads the rest.
    assert check["name"] == "Oban"
    assert check["node"] == "py-gossip"
    assert check["limit"] == 3
    assert check["paused"] is False
    assert check["uuid"] == info.uuid
    assert check["shutdown_started_at"] is None
    for key in ("started_at", "updated_at"):
        assert check[key].endswith("Z")
        datetime.fromisoformat(check[key])
    assert quiet and quiet[-1]["paused"] is True and quiet[-1]["limit"] == 1


async def test_without_metrics_nothing_is_gossiped(
    dsn: str, make_oban: Callable[..., Oban], prefix: str
) -> None:
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        channel = psql.Identifier(f"{prefix}.oban_gossip")
        await listener.execute(psql.SQL("LISTEN {}").format(channel))
        oban = make_oban(queues={"gossiped": 1})
        await oban.start()
        notes = [n async for n in listener.notifies(timeout=0.5)]
    finally:
        await listener.close()

    assert notes == []
