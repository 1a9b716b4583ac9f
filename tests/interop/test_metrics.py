"""A Python node started with ``metrics=True`` shows up in Oban Met: the kit's
``scripts/met_checks.exs`` (an Elixir node running Oban.Met) prints one JSON line per check it
stored from gossip, and the Python node's queue is among them with its limit and running job."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema
from tests.helpers import eventually
from tests.interop.elixir import Database, Kit
from tests.interop.support import states
from tests.interop.workers import echo


def _checks(output: str) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for line in output.splitlines():
        if line.startswith("{"):
            checks.append(json.loads(line))
    return checks


async def test_oban_met_lists_a_python_nodes_queue_checks(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
) -> None:
    await schema.install(pool)
    py = make_oban(name="Oban", node="py-met", queues={"pymet": 4}, metrics=True)
    await py.start()
    sleeper = await py.enqueue(echo({"mode": "sleep", "ms": 30_000}, queue="pymet"))
    assert sleeper.id is not None

    def running() -> list[int]:
        info = py.check_queue("pymet")
        return info.running if info else []

    await eventually(lambda: sleeper.id in running(), timeout=5, message="sleeper running")

    result = (await elixir_kit.run("met_checks.exs", "3", database=database)).check()
    await py.cancel_job(sleeper.id)

    ours = [c for c in _checks(result.output) if c["node"] == "py-met"]
    assert ours, result.output
    [check] = ours
    info = py.check_queue("pymet")
    assert info is not None
    assert check["queue"] == "pymet"
    assert check["name"] == "Oban"
    assert check["local_limit"] == 4  # the Examiner renames a check's limit to local_limit
    assert check["paused"] is False
    assert check["running"] == [sleeper.id]
    assert check["uuid"] == info.uuid
    await eventually(lambda: sleeper.id not in running(), timeout=5, message="sleeper stopped")
    assert await states(pool, sleeper.id) == {sleeper.id: "cancelled"}
