"""Queue control across nodes: pause, resume, scale, start/stop, cancel, shutdown, notifier.

Several ``Oban`` instances share one test schema and stand in for nodes. Each has its own
``node=``; ``name=`` differs too, except where a test addresses a signal to one node (signals
are addressed to ``f"{name}.{node}"``, so those tests give every instance the same name).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Cancel, Job, Oban, telemetry, worker
from tests.helpers import eventually

# Producers poll this often; "nothing gets fetched" checks wait a few of these.
FAST_POLL = {"poll_interval": 0.2}
QUIET = 0.6

# ---------------------------------------------------------------------------------------------
# Shared state the workers write to; reset before every test.
# ---------------------------------------------------------------------------------------------

RAN: dict[int, str] = {}
STARTED: dict[int, str] = {}
CANCEL_SEEN: dict[int, str] = {}
INTERRUPTED: dict[int, str] = {}
GATE = threading.Event()


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    RAN.clear()
    STARTED.clear()
    CANCEL_SEEN.clear()
    INTERRUPTED.clear()
    GATE.clear()
    yield
    GATE.set()


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


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------


def _node(job: Job) -> str:
    return job.attempted_by[0] if job.attempted_by else "?"


@worker(queue="qc")
class QueueControlRecordWorker:
    async def process(self, job: Job) -> None:
        RAN[job.id] = _node(job)  # type: ignore[index]


@worker(queue="qc")
class QueueControlGateWorker:
    """Runs until the test opens ``GATE``."""

    async def process(self, job: Job) -> None:
        STARTED[job.id] = _node(job)  # type: ignore[index]
        while not GATE.is_set():  # noqa: ASYNC110 (a threading.Event: loop-agnostic)
            await asyncio.sleep(0.01)
        RAN[job.id] = _node(job)  # type: ignore[index]


@worker(queue="qc")
class QueueControlCancelWorker:
    """Cooperates with cancellation: returns ``Cancel`` once ``job.cancelled()`` turns true."""

    async def process(self, job: Job) -> Any:
        STARTED[job.id] = _node(job)  # type: ignore[index]
        for _ in range(1000):
            if job.cancelled():
                CANCEL_SEEN[job.id] = _node(job)  # type: ignore[index]
                return Cancel("stopped on request")
            await asyncio.sleep(0.01)
        RAN[job.id] = _node(job)  # type: ignore[index]
        return None


@worker(queue="qc")
class QueueControlSleepWorker:
    """Sleeps ``args["sleep"]`` seconds on its first attempt only; records interruptions."""

    async def process(self, job: Job) -> None:
        STARTED.setdefault(job.id, _node(job))  # type: ignore[arg-type]
        if job.attempt == 1:
            try:
                await asyncio.sleep(job.args["sleep"])
            except asyncio.CancelledError:
                INTERRUPTED[job.id] = _node(job)  # type: ignore[index]
                raise
        RAN[job.id] = _node(job)  # type: ignore[index]


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

    return await eventually(check, timeout=timeout, message=f"job {job_id} {state}")


async def _states(sql: Any, ids: list[int]) -> Counter[str]:
    rows = await sql("SELECT state::text FROM oban_jobs WHERE id = ANY(%s)", (ids,))
    return Counter(row[0] for row in rows)


def _paused(oban: Oban, queue: str) -> bool | None:
    info = oban.check_queue(queue)
    return None if info is None else info.paused


def _limit(oban: Oban, queue: str) -> int | None:
    info = oban.check_queue(queue)
    return None if info is None else info.limit


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


async def _two_nodes(
    make_oban: Callable[..., Oban],
    *,
    same_name: bool = False,
    queues: dict[str, Any] | None = None,
) -> tuple[Oban, Oban]:
    queues = queues or {"qc": 1}
    a = make_oban(
        name="qc" if same_name else "qc_a",
        node="node-a",
        queues=dict(queues),
        notifier=dict(FAST_POLL),
    )
    b = make_oban(
        name="qc" if same_name else "qc_b",
        node="node-b",
        queues=dict(queues),
        notifier=dict(FAST_POLL),
    )
    await a.start()
    await b.start()
    return a, b


# ---------------------------------------------------------------------------------------------
# Pause and resume
# ---------------------------------------------------------------------------------------------


async def test_pause_queue_pauses_every_node_and_resume_runs_pending_jobs(make_oban):
    a, b = await _two_nodes(make_oban)

    await a.pause_queue("qc")

    assert _paused(a, "qc") is True
    await eventually(lambda: _paused(b, "qc"), message="node b paused through NOTIFY")
    job = await a.enqueue(QueueControlRecordWorker.new())
    await asyncio.sleep(QUIET)  # several poll intervals: nobody may fetch it
    assert (await _job(a, job.id)).state == "available"
    assert job.id not in RAN

    await a.resume_queue("qc")

    assert _paused(a, "qc") is False
    await eventually(lambda: _paused(b, "qc") is False, message="node b resumed")
    done = await _wait_state(a, job.id, "completed")
    assert done.attempted_by[0] in ("node-a", "node-b")
    assert RAN[job.id] == done.attempted_by[0]


async def test_pause_queue_sent_from_another_node_pauses_it_there(make_oban):
    a, b = await _two_nodes(make_oban)

    await b.pause_queue("qc")

    await eventually(lambda: _paused(a, "qc"), message="node a paused by node b's signal")
    assert _paused(b, "qc") is True


async def test_targeted_pause_and_resume_reach_only_the_named_node(make_oban, sql):
    a, b = await _two_nodes(make_oban, same_name=True, queues={"qc": 2})

    await a.pause_queue("qc", node="node-b")

    await eventually(lambda: _paused(b, "qc"), message="node b paused")
    assert _paused(a, "qc") is False
    jobs = [await a.enqueue(QueueControlRecordWorker.new()) for _ in range(4)]
    for job in jobs:
        done = await _wait_state(a, job.id, "completed")
        assert done.attempted_by[0] == "node-a", "a paused node fetched a job"
    assert _paused(a, "qc") is False
    assert _paused(b, "qc") is True

    # Now pause a only, and resume b only: the jobs must move to b.
    await b.pause_queue("qc", node="node-a")
    await eventually(lambda: _paused(a, "qc"), message="node a paused")
    await a.resume_queue("qc", node="node-b")
    await eventually(lambda: _paused(b, "qc") is False, message="node b resumed")
    assert _paused(a, "qc") is True

    later = [await a.enqueue(QueueControlRecordWorker.new()) for _ in range(3)]
    for job in later:
        done = await _wait_state(a, job.id, "completed")
        assert done.attempted_by[0] == "node-b"


async def test_pause_all_and_resume_all_queues_on_every_node(make_oban, sql):
    a, b = await _two_nodes(make_oban, queues={"qc": 1, "qc_other": 1})

    await a.pause_all_queues()

    def all_paused() -> bool:
        return all(_paused(o, q) for o in (a, b) for q in ("qc", "qc_other"))

    await eventually(all_paused, message="every queue on every node paused")
    jobs = [
        await a.enqueue(QueueControlRecordWorker.new()),
        await a.enqueue(QueueControlRecordWorker.new(queue="qc_other")),
    ]
    ids = [job.id for job in jobs]
    await asyncio.sleep(QUIET)
    assert await _states(sql, ids) == Counter({"available": 2})

    await b.resume_all_queues()

    def none_paused() -> bool:
        return not any(_paused(o, q) for o in (a, b) for q in ("qc", "qc_other"))

    await eventually(none_paused, message="every queue on every node resumed")
    for job in jobs:
        await _wait_state(a, job.id, "completed")


# ---------------------------------------------------------------------------------------------
# Scaling
# ---------------------------------------------------------------------------------------------


async def test_scale_queue_everywhere_raises_the_limit_and_concurrency(make_oban, sql):
    a, b = await _two_nodes(make_oban)
    ids = [(await a.enqueue(QueueControlGateWorker.new())).id for _ in range(6)]
    await eventually(lambda: len(STARTED) == 2, message="one job per node running")
    await asyncio.sleep(QUIET)
    assert len(STARTED) == 2, "a limit of 1 per node ran more than 2 jobs"

    await a.scale_queue(queue="qc", limit=3)

    assert _limit(a, "qc") == 3
    await eventually(lambda: _limit(b, "qc") == 3, message="node b scaled")
    await eventually(lambda: len(STARTED) == 6, message="6 jobs running after scaling")
    assert Counter(STARTED.values()) == Counter({"node-a": 3, "node-b": 3})

    GATE.set()
    await eventually(lambda: _done(sql, ids), message="all scaled jobs completed")
    assert len(RAN) == 6


async def _done(sql: Any, ids: list[int]) -> bool:
    return await _states(sql, ids) == Counter({"completed": len(ids)})


async def test_scale_queue_on_one_node_changes_only_that_node(make_oban, sql):
    a, b = await _two_nodes(make_oban, same_name=True)

    await a.scale_queue(queue="qc", limit=4, node="node-b")

    await eventually(lambda: _limit(b, "qc") == 4, message="node b scaled")
    assert _limit(a, "qc") == 1
    ids = [(await a.enqueue(QueueControlGateWorker.new())).id for _ in range(7)]
    await eventually(lambda: len(STARTED) == 5, message="1 + 4 jobs running")
    await asyncio.sleep(QUIET)
    assert Counter(STARTED.values()) == Counter({"node-a": 1, "node-b": 4})

    GATE.set()
    await eventually(lambda: _done(sql, ids), message="all jobs completed")


async def test_scale_queue_and_start_queue_reject_a_bad_limit(make_oban):
    a, b = await _two_nodes(make_oban)

    for bad in (0, -1, True, 1.5, "3", None):
        with pytest.raises(ValueError, match="limit"):
            await a.scale_queue(queue="qc", limit=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="limit"):
            await a.start_queue(queue="qc_bad", limit=bad)  # type: ignore[arg-type]

    await asyncio.sleep(QUIET)
    assert _limit(a, "qc") == 1
    assert _limit(b, "qc") == 1
    assert a.check_queue("qc_bad") is None
    assert b.check_queue("qc_bad") is None


# ---------------------------------------------------------------------------------------------
# Starting and stopping queues at runtime
# ---------------------------------------------------------------------------------------------


async def test_start_queue_runs_a_new_queue_everywhere_and_stop_queue_removes_it(make_oban, sql):
    a, b = await _two_nodes(make_oban)
    assert a.check_queue("qc_new") is None

    await a.start_queue(queue="qc_new", limit=2)

    assert _limit(a, "qc_new") == 2
    await eventually(lambda: _limit(b, "qc_new") == 2, message="queue started on node b")
    assert {info.queue for info in b.check_all_queues()} == {"qc", "qc_new"}
    rows = await sql("SELECT node FROM oban_producers WHERE queue = 'qc_new' ORDER BY node")
    assert rows == [("node-a",), ("node-b",)]

    jobs = [await a.enqueue(QueueControlRecordWorker.new(queue="qc_new")) for _ in range(4)]
    for job in jobs:
        done = await _wait_state(a, job.id, "completed")
        assert done.attempted_by[0] in ("node-a", "node-b")

    await a.stop_queue("qc_new")

    assert a.check_queue("qc_new") is None
    await eventually(lambda: b.check_queue("qc_new") is None, message="queue stopped on b")

    async def no_producers() -> bool:
        return not await sql("SELECT 1 FROM oban_producers WHERE queue = 'qc_new'")

    await eventually(no_producers, message="producer rows of the stopped queue removed")
    orphan = await a.enqueue(QueueControlRecordWorker.new(queue="qc_new"))
    still_running = await a.enqueue(QueueControlRecordWorker.new())
    await _wait_state(a, still_running.id, "completed")
    await asyncio.sleep(QUIET)
    assert (await _job(a, orphan.id)).state == "available"


async def test_start_queue_on_one_node_only(make_oban):
    a, b = await _two_nodes(make_oban, same_name=True)

    await b.start_queue(queue="qc_solo", limit=3, node="node-a")

    await eventually(lambda: _limit(a, "qc_solo") == 3, message="queue started on node a")
    job = await a.enqueue(QueueControlRecordWorker.new(queue="qc_solo"))
    done = await _wait_state(a, job.id, "completed")
    assert done.attempted_by[0] == "node-a"
    assert b.check_queue("qc_solo") is None


# ---------------------------------------------------------------------------------------------
# Cancelling
# ---------------------------------------------------------------------------------------------


async def test_cancel_job_running_on_another_node_is_cancelled_by_its_worker(make_oban):
    runner = make_oban(name="qc_runner", node="node-b", queues={"qc": 1}, notifier=FAST_POLL)
    await runner.start()
    client = make_oban(name="qc_client", node="node-client")

    job = await client.enqueue(QueueControlCancelWorker.new())
    await eventually(lambda: job.id in STARTED, message="job running on node b")
    assert (await _job(client, job.id)).state == "executing"

    assert await client.cancel_job(job) == 1

    done = await _wait_state(client, job.id, "cancelled", timeout=3)
    assert CANCEL_SEEN == {job.id: "node-b"}
    assert job.id not in RAN
    assert done.cancelled_at is not None
    assert done.completed_at is None
    assert done.attempt == 1
    assert "stopped on request" in str(done.errors[-1])


async def test_cancel_job_of_queued_jobs_cancels_them_at_once(oban, sql):
    available = await oban.enqueue(QueueControlRecordWorker.new())
    scheduled = await oban.enqueue(QueueControlRecordWorker.new(schedule_in=3600))
    retryable = await oban.enqueue(QueueControlRecordWorker.new())
    await sql(
        "UPDATE oban_jobs SET state = 'retryable', attempt = 1, "
        "scheduled_at = timezone('UTC', now()) + interval '1 hour' WHERE id = %s",
        (retryable.id,),
    )
    assert scheduled.state == "scheduled"

    for job in (available, scheduled, retryable):
        assert await oban.cancel_job(job.id) == 1
        found = await _job(oban, job.id)
        assert found.state == "cancelled", job
        assert found.cancelled_at is not None
        stamp = found.meta["cancel_attempted_at"]
        assert abs((datetime.fromisoformat(stamp) - found.cancelled_at).total_seconds()) < 1


async def test_cancel_job_leaves_a_completed_job_untouched(oban, sql):
    job = await oban.enqueue(QueueControlRecordWorker.new(meta={"keep": 1}))
    await sql(
        "UPDATE oban_jobs SET state = 'completed', attempt = 1, "
        "attempted_at = timezone('UTC', now()), completed_at = timezone('UTC', now()) "
        "WHERE id = %s",
        (job.id,),
    )
    before = await _job(oban, job.id)

    assert await oban.cancel_job(job) == 0

    after = await _job(oban, job.id)
    assert after.state == "completed"
    assert after.cancelled_at is None
    assert after.meta == {"keep": 1}
    assert after.completed_at == before.completed_at


# ---------------------------------------------------------------------------------------------
# Graceful shutdown
# ---------------------------------------------------------------------------------------------


async def test_stop_waits_for_a_short_job_and_removes_the_node_producers(make_oban, sql, events):
    a = make_oban(
        name="qc_a",
        node="node-a",
        queues={"qc": 1, "qc_other": 1},
        shutdown_grace_period=5.0,
    )
    await a.start()
    rows = await sql("SELECT queue FROM oban_producers WHERE node = 'node-a' ORDER BY queue")
    assert rows == [("qc",), ("qc_other",)]
    job = await a.enqueue(QueueControlSleepWorker.new({"sleep": 0.5}))
    await eventually(lambda: job.id in STARTED, message="job started")

    await a.stop()

    assert RAN == {job.id: "node-a"}
    assert (await _job(a, job.id)).state == "completed"
    shutdowns = {e["queue"]: e["orphaned"] for e in events("oban.queue.shutdown")}
    assert shutdowns == {"qc": [], "qc_other": []}
    assert await sql("SELECT uuid FROM oban_producers WHERE node = 'node-a'") == []


async def test_job_outliving_the_grace_period_is_orphaned_then_rescued_elsewhere(
    make_oban, sql, events
):
    a = make_oban(
        name="qc_a",
        node="node-a",
        queues={"qc": 1},
        leadership=False,
        shutdown_grace_period=0.3,
    )
    await a.start()
    job = await a.enqueue(QueueControlSleepWorker.new({"sleep": 30}))
    await eventually(lambda: job.id in STARTED, message="long job started on node a")

    await a.stop()

    # Cancelled locally, reported as orphaned, left executing for rescue.
    assert INTERRUPTED == {job.id: "node-a"}
    orphaned = [e["orphaned"] for e in events("oban.queue.shutdown") if e["queue"] == "qc"]
    assert orphaned == [[job.id]]
    stuck = await _job(a, job.id)
    assert stuck.state == "executing"
    assert stuck.attempted_by[0] == "node-a"
    expired = await sql(
        "SELECT updated_at = '-infinity' FROM oban_producers WHERE node = 'node-a' AND queue = 'qc'"
    )
    assert expired == [(True,)], "the stopped node's producer row is not expired"

    b = make_oban(
        name="qc_b",
        node="node-b",
        queues={"qc": 1},
        notifier=FAST_POLL,
        leader={"interval": 1.0},
        lifeline={"interval": 0.2},
        refresher={"interval": 0.2, "max_age": 1},
    )
    await b.start()
    await eventually(lambda: b.is_leader, message="node b leads")

    done = await _wait_state(b, job.id, "completed", timeout=3)
    assert done.attempted_by[0] == "node-b"
    assert done.attempt == 2
    assert done.meta.get("rescued") == 1
    assert RAN == {job.id: "node-b"}

    async def a_forgotten() -> bool:
        return not await sql("SELECT 1 FROM oban_producers WHERE node = 'node-a'")

    await eventually(a_forgotten, timeout=3, message="the expired producer row cleaned up")


# ---------------------------------------------------------------------------------------------
# Notifier
# ---------------------------------------------------------------------------------------------


async def test_notifier_reconnects_after_its_connection_is_killed(
    make_oban, pool, prefix, sql, events
):
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
    make_oban, pool, prefix
):
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


async def test_notifier_status_is_visible_in_check_queue(make_oban):
    listening = make_oban(name="StatusListen", node="status-l", queues={"default": 1})
    polling = make_oban(
        name="StatusPoll", node="status-p", queues={"default": 1}, notifier={"type": "poll"}
    )
    assert listening.notifier_status == "stopped"
    await listening.start()
    await polling.start()
    assert listening.check_queue("default").meta["notifier"] == "listening"
    assert polling.check_queue("default").meta["notifier"] == "polling"
    assert polling.notifier_status == "polling"
