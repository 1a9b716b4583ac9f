"""The documented telemetry event names, and the default node name."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Oban
from oban.oban import _instances, default_node
from oban.telemetry import EVENTS

SPANS = [
    "oban.producer.get",
    "oban.producer.ack",
    "oban.leader.election",
    "oban.stager.stage",
    "oban.lifeline.rescue",
    "oban.pruner.prune",
    "oban.refresher.refresh",
    "oban.refresher.cleanup",
    "oban.scheduler.evaluate",
]

DOCUMENTED = [
    "oban.job.start",
    "oban.job.stop",
    "oban.job.exception",
    *(f"{span}.{kind}" for span in SPANS for kind in ("start", "stop", "exception")),
    "oban.queue.shutdown",
]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_events_lists_each_documented_name(name: str) -> None:
    assert name in EVENTS


def test_every_span_has_start_stop_and_exception() -> None:
    for span in SPANS:
        assert {f"{span}.start", f"{span}.stop", f"{span}.exception"} <= set(EVENTS), span


def test_events_has_no_duplicates() -> None:
    assert len(EVENTS) == len(set(EVENTS))
    assert all(isinstance(name, str) and name.startswith("oban.") for name in EVENTS)


def test_default_node_is_hostname_dot_pid() -> None:
    assert default_node() == f"{socket.gethostname()}.{os.getpid()}"


@pytest.fixture
async def unopened_pool() -> AsyncIterator[AsyncConnectionPool[Any]]:
    # Never opened: constructing an Oban must not need a database.
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        "postgresql://nobody@127.0.0.1:1/none", open=False
    )
    try:
        yield pool
    finally:
        _instances.pop("EventsNodeDefault", None)
        _instances.pop("EventsNodeExplicit", None)
        await pool.close()


async def test_oban_node_defaults_to_default_node(unopened_pool: Any) -> None:
    oban = Oban(pool=unopened_pool, name="EventsNodeDefault")
    assert oban.node == f"{socket.gethostname()}.{os.getpid()}"
    assert oban.node == default_node()
    # Building an instance does not open the pool.
    assert unopened_pool.closed


async def test_explicit_node_wins_over_default(unopened_pool: Any) -> None:
    oban = Oban(pool=unopened_pool, name="EventsNodeExplicit", node="worker-7")
    assert oban.node == "worker-7"
