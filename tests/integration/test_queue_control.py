"""PostgreSQL-only queue control: the notifier (LISTEN connection, reconnecting after it is
killed, polling mode).

Queue control across several instances (pause/resume, scale, start/stop, cancel, graceful
shutdown) is tested on both engines in tests/conformance/test_cluster_conformance.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, telemetry, worker
from tests.helpers import eventually

# ---------------------------------------------------------------------------------------------
# Shared state the workers write to; reset before every test.
# ---------------------------------------------------------------------------------------------

RAN: dict[int | None, str] = {}  # keyed by job id (typed ``int | None``)


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    RAN.clear()


@pytest.fixture
def events() -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """Collect telemetry: ``events(name)`` lists the metadata of each ``name`` event so far."""
    seen: list[tuple[str, dict[str, Any]]] = []
    telemetry.attach(
        "test-queue-control",
        ["oban.queue.shutdown", "oban.notifier.status"],
        lambda name, meta: seen.append((name, meta)),
    )
    try:
        yield lambda name: [meta for event, meta in seen if event == name]
    finally:
        telemetry.detach("test-queue-control")


def _node(job: Job) -> str:
    return job.attempted_by[0] if job.attempted_by else "?"


@worker(queue="qc")
class QueueControlRecordWorker:
    async def process(self, job: Job) -> None:
        RAN[job.id] = _node(job)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


async def _job(oban: Oban, job_id: int | None) -> Job:
    assert job_id is not None
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing"
    return found


async def _wait_state(oban: Oban, job_id: int | None, state: str, timeout: float = 5.0) -> Job:
    async def check() -> Job | None:
        job = await _job(oban, job_id)
        return job if job.state == state else None

    found: Job = await eventually(check, timeout=timeout, message=f"job {job_id} {state}")
    return found


def _paused(oban: Oban, queue: str) -> bool | None:
    info = oban.check_queue(queue)
    return None if info is None else info.paused


async def _listen_pids(pool: AsyncConnectionPool[Any], prefix: str) -> list[int]:
    """Backends whose last statement was a LISTEN on one of this test schema's channels."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%%' AND position(%s in query) > 0 "
            "AND pid <> pg_backend_pid()",
            (f"{prefix}.oban_",),
        )
        return sorted(row[0] for row in await cur.fetchall())


# ---------------------------------------------------------------------------------------------
# Notifier
# ---------------------------------------------------------------------------------------------


async def test_notifier_reconnects_after_its_connection_is_killed(
    make_oban: Callable[..., Oban],
    pool: AsyncConnectionPool[Any],
    prefix: str,
    sql: Callable[..., Any],
    events: Callable[[str], list[dict[str, Any]]],
) -> None:
    a = make_oban(name="qc_a", node="node-a", queues={"qc": 2})
    await a.start()
    assert a._notifier is not None and a._notifier.status == "listening"
    old = await _listen_pids(pool, prefix)
    assert len(old) == 1, f"expected one LISTEN backend for the schema, found {old}"

    async with pool.connection() as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (old[0],))
    # Enqueued while the notifier is down or reconnecting: the producers' polling runs it.
    during = await a.enqueue(QueueControlRecordWorker.new())
    await _wait_state(a, during.id, "completed", timeout=2.5)

    def statuses() -> list[str]:
        return [e["status"] for e in events("oban.notifier.status")]

    await eventually(
        lambda: statuses()[-2:] == ["polling", "listening"], message="notifier reconnected"
    )
    assert statuses() == ["listening", "polling", "listening"]
    assert a._notifier is not None and a._notifier.status == "listening"
    new = await eventually(lambda: _listen_pids(pool, prefix), message="LISTEN re-issued")
    assert len(new) == 1 and new[0] != old[0]

    # Inserts are picked up through NOTIFY again: well under the 1 s poll interval, every time.
    for _ in range(3):
        job = await a.enqueue(QueueControlRecordWorker.new())
        done = await _wait_state(a, job.id, "completed", timeout=2)
        assert done.attempted_at is not None and done.inserted_at is not None
        latency = (done.attempted_at - done.inserted_at).total_seconds()
        assert latency < 0.4, f"job {job.id} started {latency:.2f}s after insert"

    # Signals (delivered only by NOTIFY) reach the node again.
    other = make_oban(name="qc_other", node="node-other")
    await other.pause_queue("qc")
    await eventually(lambda: _paused(a, "qc"), timeout=2, message="pause signal received")


async def test_poll_notifier_opens_no_listen_connection_and_still_runs_jobs(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str
) -> None:
    a = make_oban(name="qc_poll", node="node-p", queues={"qc": 1}, notifier={"type": "poll"})
    await a.start()

    assert a._notifier is None
    assert await _listen_pids(pool, prefix) == []

    for _ in range(2):
        job = await a.enqueue(QueueControlRecordWorker.new())
        done = await _wait_state(a, job.id, "completed", timeout=2)
        assert done.attempted_at is not None and done.inserted_at is not None
        latency = (done.attempted_at - done.inserted_at).total_seconds()
        assert latency < 1.3, f"job {job.id} started {latency:.2f}s after insert"
    assert await _listen_pids(pool, prefix) == []


async def test_notifier_status_is_visible_in_check_queue(
    make_oban: Callable[..., Oban],
) -> None:
    listening = make_oban(name="StatusListen", node="status-l", queues={"default": 1})
    polling = make_oban(
        name="StatusPoll", node="status-p", queues={"default": 1}, notifier={"type": "poll"}
    )
    assert listening.notifier_status == "stopped"
    await listening.start()
    await polling.start()
    listening_info = listening.check_queue("default")
    assert listening_info is not None
    assert listening_info.meta["notifier"] == "listening"
    polling_info = polling.check_queue("default")
    assert polling_info is not None
    assert polling_info.meta["notifier"] == "polling"
    assert polling.notifier_status == "polling"
