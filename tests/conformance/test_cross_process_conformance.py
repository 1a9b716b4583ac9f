"""Cross-node behaviour with the node in another process, on both engines.

test_cluster_conformance.py runs its nodes as instances in one process, where SQLite delivers
notifications in-process. Here each node is a real ``python -m oban start`` process (see
process_nodes.py): on PostgreSQL signals travel by NOTIFY, on SQLite through the file's
``oban_signals`` table, which every node polls (``notifier.poll_interval``, 1 s, the
default). A client ``Oban`` in the test process drives the node through the public API, and
each test asserts what the node process did: its producer rows, the job rows, and the ledger
its workers append to.

"Within about a second" is asserted as within :data:`BOUND` (3 s, for a noisy 2-core
machine); every measured latency is printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import Awaitable, Callable

import pytest

from oban import Job
from oban._producer import QueueInfo
from tests.conformance import process_nodes
from tests.conformance.process_nodes import (
    ASYNC_WORKER,
    BOUND,
    MAX_AGE,
    REFRESH_INTERVAL,
    SYNC_WORKER,
    Cluster,
    Entry,
    XprocNode,
    with_node_output,
)

pytestmark = pytest.mark.timeout(60)

# The fixture, by assignment (an import would read as unused, then redefined).
cluster = process_nodes.cluster


def _max_overlap(entries: list[Entry]) -> int:
    """The most jobs running at once according to the ledger's start/done lines."""
    events = sorted(
        (entry.at, 0 if entry.kind == "done" else 1) for entry in entries if entry.kind != "finally"
    )
    running = peak = 0
    for _at, starting in events:  # at equal times a "done" (0) sorts before a "start" (1)
        running += 1 if starting else -1
        peak = max(peak, running)
    return peak


def _reports(
    cluster: Cluster, test: Callable[[QueueInfo], bool], queue: str = "default"
) -> Callable[[], Awaitable[bool]]:
    """A check for :meth:`Cluster.until` and :meth:`Cluster.timed`: whether ``queues()``
    lists node-1's ``queue`` and ``test`` holds for what it reports."""

    async def check() -> bool:
        info = await cluster.remote("node-1", queue)
        return info is not None and test(info)

    return check


async def _completed(cluster: Cluster, job_id: int | None) -> bool:
    return await cluster.state(job_id) == "completed"


async def _pause_and_wait(cluster: Cluster, message: str) -> None:
    """Pause ``default`` through the client; wait until ``queues()`` reports node-1's paused
    (timed: see :meth:`Cluster.timed`)."""
    since = time.monotonic()
    await cluster.client.pause_queue("default")
    await cluster.timed(_reports(cluster, lambda info: info.paused), since=since, message=message)


async def _resume_and_wait(cluster: Cluster, job: Job, message: str) -> None:
    """Resume ``default`` through the client; wait until ``job`` completed (timed)."""
    since = time.monotonic()
    await cluster.client.resume_queue("default")
    await cluster.timed(lambda: _completed(cluster, job.id), since=since, message=message)


async def _untouched(cluster: Cluster, job_id: int | None) -> bool:
    """The job is still available and no node started it."""
    return await cluster.state(job_id) == "available" and not cluster.entries(job_id=job_id)


async def _running_on_node_1(
    cluster: Cluster, worker: str, *, sleep: float
) -> tuple[XprocNode, Job]:
    """Start node-1 (``default:1``) and a ``worker`` job that sleeps ``sleep`` seconds there;
    return both once the job started."""
    node = await cluster.launch("node-1", "default:1")
    job = await cluster.client.enqueue(Job(worker, args=cluster.job_args(sleep=sleep)))
    await cluster.until(
        lambda: cluster.entries("start", job.id), timeout=5, message="the job started on node-1"
    )
    return node, job


async def _cancel(cluster: Cluster, job: Job) -> Job:
    """Cancel ``job`` through the client; assert its row is cancelled at once and return it."""
    assert await cluster.client.cancel_job(job) == 1
    row = await cluster.job(job.id)
    assert row.state == "cancelled" and row.cancelled_at is not None, row
    return row


async def _next_job_runs(cluster: Cluster) -> Job:
    """Enqueue a quick job and wait until node-1 completed it (its slot is free)."""
    after = await cluster.client.enqueue(Job(ASYNC_WORKER, args=cluster.job_args()))
    await cluster.until(
        lambda: _completed(cluster, after.id), timeout=5, message="node-1 ran the next job"
    )
    return after


# ---------------------------------------------------------------------------------------------
# Queue control
# ---------------------------------------------------------------------------------------------


@with_node_output
async def test_pause_queue_stops_the_other_process_fetching_and_resume_runs_its_jobs(
    cluster: Cluster,
) -> None:
    node = await cluster.launch("node-1", "default:2")
    client = cluster.client

    await _pause_and_wait(cluster, "pause: queues() reports node-1 paused")

    # Enqueued after the node reported the pause: it must not be fetched.
    job = await client.enqueue(Job(ASYNC_WORKER, args=cluster.job_args()))

    await cluster.holds(
        lambda: _untouched(cluster, job.id),
        seconds=2.5,
        message=f"job {job.id} waits on the paused queue",
    )

    await _resume_and_wait(cluster, job, "resume: node-1 ran the waiting job")
    assert [entry.pid for entry in cluster.entries("start", job.id)] == [node.pid]

    await cluster.until(
        _reports(cluster, lambda info: not info.paused), message="queues() reports node-1 resumed"
    )


@with_node_output
async def test_a_signal_sent_once_the_other_process_lists_its_queues_is_obeyed(
    cluster: Cluster,
) -> None:
    # A node's queues are visible to every process (producer rows, queues()) from the moment
    # its producers start: from then on its signals must reach it. Its start continues after
    # that (leader election, plugins); a first election slowed by 1 s, as on a busy database,
    # makes that stretch long enough to send a signal in for certain.
    node = await cluster.launch("node-1", "default:1", ready=False, slow_election=True)
    listed = await cluster.remote("node-1", "default")
    assert listed is not None and listed.limit == 1, listed
    since = time.monotonic()
    await cluster.client.scale_queue(queue="default", limit=3)
    # The premise: the signal went out while the node was still starting.
    assert f"node {node.name} running queues" not in node.text(), node.tail()

    await cluster.timed(
        _reports(cluster, lambda info: info.limit == 3),
        since=since,
        timeout=BOUND + 1.0,
        message="scale sent as node-1 came up: queues() reports limit 3",
    )


@with_node_output
async def test_scale_queue_reaches_the_other_process_and_it_runs_that_many_jobs_at_once(
    cluster: Cluster,
) -> None:
    node = await cluster.launch("node-1", "default:1")
    client = cluster.client
    before = await cluster.remote("node-1", "default")
    assert before is not None and before.limit == 1, before

    since = time.monotonic()
    await client.scale_queue(queue="default", limit=3)

    await cluster.timed(
        _reports(cluster, lambda info: info.limit == 3),
        since=since,
        message="scale: queues() reports node-1 limit 3",
    )

    jobs = await client.enqueue_many(
        [Job(ASYNC_WORKER, args=cluster.job_args(sleep=1.5, n=n)) for n in range(4)]
    )
    ids = sorted(job.id for job in jobs if job.id is not None)

    await cluster.until(
        _reports(cluster, lambda info: len(info.running) == 3),
        timeout=5,
        message="queues() shows 3 jobs running",
    )

    async def all_completed() -> bool:
        return all([await cluster.state(job_id) == "completed" for job_id in ids])

    await cluster.until(all_completed, timeout=15, message="the 4 jobs completed")
    entries = [entry for entry in cluster.entries() if entry.job_id in ids]
    assert {entry.pid for entry in entries} == {node.pid}
    # Three at once, never four: the new limit, enforced by the node.
    assert _max_overlap(entries) == 3, "\n".join(map(str, entries))


@with_node_output
async def test_stop_queue_and_start_queue_for_a_node_in_another_process(cluster: Cluster) -> None:
    node = await cluster.launch("node-1", "default:1,extra:1")
    client = cluster.client

    # Sent first, for another node: node-1 must ignore it (checked once the stop arrived).
    await client.pause_queue("default", node="ghost")
    since = time.monotonic()
    await client.stop_queue("extra", node="node-1")

    async def stopped() -> bool:
        return await cluster.producer_queues("node-1") == ["default"]

    await cluster.timed(stopped, since=since, message="stop: node-1's extra producer row gone")
    default = await cluster.remote("node-1", "default")
    assert default is not None and not default.paused, f"a pause for ghost paused node-1: {default}"
    assert await cluster.remote("node-1", "extra") is None

    job = await client.enqueue(Job(ASYNC_WORKER, args=cluster.job_args(), queue="extra"))

    await cluster.holds(
        lambda: _untouched(cluster, job.id),
        seconds=2.0,
        message=f"job {job.id} waits, extra is stopped",
    )

    since = time.monotonic()
    await client.start_queue(queue="extra", limit=2, node="node-1")

    async def started() -> bool:
        return await cluster.producer_queues("node-1") == ["default", "extra"]

    await cluster.timed(started, since=since, message="start: node-1's extra producer row back")

    await cluster.timed(
        lambda: _completed(cluster, job.id), since=since, message="start: node-1 ran the extra job"
    )
    assert [entry.pid for entry in cluster.entries("start", job.id)] == [node.pid]
    extra = await cluster.remote("node-1", "extra")
    assert extra is not None and extra.limit == 2 and not extra.paused, extra


# ---------------------------------------------------------------------------------------------
# Cancelling a job running in another process
# ---------------------------------------------------------------------------------------------


@with_node_output
async def test_cancel_job_stops_an_async_job_running_in_the_other_process(
    cluster: Cluster,
) -> None:
    node, job = await _running_on_node_1(cluster, ASYNC_WORKER, sleep=30)

    since = time.monotonic()
    row = await _cancel(cluster, job)
    assert row.errors and row.errors[-1]["error"] == "cancelled while executing", row.errors

    await cluster.timed(
        lambda: cluster.entries("finally", job.id),
        since=since,
        message="cancel: the async job's finally ran on node-1",
    )
    assert [entry.pid for entry in cluster.entries("finally", job.id)] == [node.pid]
    assert cluster.entries("done", job.id) == [], "the cancelled job ran to its end"
    assert "was cancelled while running: stopping it" in node.text(), node.tail()

    # Its slot is free there (limit 1), and the row stays cancelled.
    await _next_job_runs(cluster)
    assert await cluster.state(job.id) == "cancelled"
    assert cluster.entries("done", job.id) == []


@with_node_output
async def test_cancel_job_of_a_sync_job_in_the_other_process_discards_its_result(
    cluster: Cluster,
) -> None:
    node, job = await _running_on_node_1(cluster, SYNC_WORKER, sleep=3.0)

    sent_at = time.time()
    await _cancel(cluster, job)

    # The thread cannot be interrupted: it sees job.cancelled() turn true, keeps sleeping and
    # returns normally.
    seen = await cluster.until(
        lambda: cluster.entries("seen", job.id), message="the thread saw job.cancelled()"
    )
    latency = seen[0].at - sent_at
    print(f"[{cluster.engine}] cancel: the sync job saw job.cancelled() on node-1: {latency:.3f} s")
    assert latency < BOUND
    done = await cluster.until(
        lambda: cluster.entries("done", job.id), timeout=5, message="the thread returned"
    )
    assert [(entry.pid, entry.detail) for entry in done] == [(node.pid, "cancelled=True")]
    assert "was cancelled while running in a thread" in node.text(), node.tail()

    # Once the slot is free again (limit 1: the next job runs after the thread's result was
    # handled), the row is still cancelled: the result was discarded.
    after = await _next_job_runs(cluster)
    row = await cluster.job(job.id)
    assert row.state == "cancelled" and row.completed_at is None, row
    assert [entry.pid for entry in cluster.entries("start", after.id)] == [node.pid]


# ---------------------------------------------------------------------------------------------
# Every node's queues, from any process
# ---------------------------------------------------------------------------------------------


@with_node_output
async def test_queues_lists_the_other_process_queues_and_drops_a_killed_node(
    cluster: Cluster,
) -> None:
    client = cluster.client
    await client.start()
    await client.start_queue(queue="client_q", limit=1, node="client")  # its own queue
    node = await cluster.launch("node-1", "default:2,extra:1")

    since = time.monotonic()
    jobs = await client.enqueue_many(
        [Job(ASYNC_WORKER, args=cluster.job_args(sleep=30, n=n)) for n in range(2)]
    )
    ids = sorted(job.id for job in jobs if job.id is not None)

    await cluster.timed(
        _reports(cluster, lambda info: sorted(info.running) == ids),
        since=since,
        message="queues() shows node-1 running both",
    )
    await cluster.until(
        lambda: len(cluster.entries("start")) == 2, message="both jobs started on node-1"
    )

    infos = {(info.node, info.queue): info for info in await client.queues()}
    assert sorted(infos) == [("client", "client_q"), ("node-1", "default"), ("node-1", "extra")]
    default, extra = infos["node-1", "default"], infos["node-1", "extra"]
    assert (default.limit, default.paused, sorted(default.running)) == (2, False, ids)
    assert (extra.limit, extra.paused, extra.running) == (1, False, [])
    local = infos["client", "client_q"]
    assert (local.limit, local.paused, local.running) == (1, False, [])
    assert default.uuid and default.uuid != extra.uuid
    assert {entry.pid for entry in cluster.entries("start")} == {node.pid}

    await node.kill()
    since = time.monotonic()
    listed = {info.node for info in await client.queues()}
    assert "node-1" in listed, f"node-1 dropped out at once, before its heartbeat aged: {listed}"

    async def dropped() -> bool:
        return all(info.node != "node-1" for info in await client.queues())

    _, elapsed = await cluster.timed(
        dropped,
        since=since,
        timeout=MAX_AGE + BOUND,
        message=f"queues() drops the killed node-1 (max_age {MAX_AGE} s)",
    )
    # Dropped by its heartbeat's age, not earlier.
    assert elapsed >= MAX_AGE - REFRESH_INTERVAL - 0.3, elapsed
    assert [(info.node, info.queue) for info in await client.queues()] == [("client", "client_q")]
    # The listing leaves it out; its rows are still there (no leader deleted them).
    assert await cluster.producer_queues("node-1") == ["default", "extra"]


# ---------------------------------------------------------------------------------------------
# Hostile signals
# ---------------------------------------------------------------------------------------------

_BOMB = "Z:" + base64.b64encode(gzip.compress(b'{"a":"' + b"0" * 5_000_000 + b'"}')).decode()

#: Payloads no node sent, each of which a node must log and skip.
_HOSTILE = [
    "not json {",
    "[1, 2, 3]",
    "42",
    "null",
    '"pause"',
    "",
    "Z:%%% not base64",
    "H4sIgarbage",
    _BOMB,
    '{"action":"scale","queue":"default","limit":"lots"}',
    '{"action":"scale","queue":"default","limit":0}',
    '{"action":"scale","queue":"default","limit":2,"evil":true}',
    '{"action":"pause","queue":["default"]}',
    '{"action":"pause","queue":""}',
    '{"action":"pkill","job_id":"1"}',
    '{"action":"pkill","job_id":1e400}',
    '{"action":"start","queue":"default","limit":-1}',
    '{"action":"start","queue":"evil","limit":1,"rm":"-rf"}',
    '{"action":"stop","queue":null}',
    '{"action":"pause","queue":"default","ident":{"x":1}}',
    '{"action":{"nested":[]},"queue":"default"}',
]


async def _send_raw(cluster: Cluster, channel: str, payloads: list[str]) -> None:
    """Send ``payloads`` on ``channel`` as anyone with database access could, in order: rows
    of ``oban_signals`` (anyone who can write the SQLite file) or NOTIFYs (any PostgreSQL
    login; PostgreSQL itself refuses payloads of 8000 bytes or more, so those are left out)."""
    if cluster.engine == "sqlite":
        await cluster.sqlite_many(
            "INSERT INTO oban_signals (channel, payload, origin) VALUES (?, ?, 'evil')",
            [(channel, payload) for payload in payloads],
        )
        return
    full = f"{cluster.prefix}.oban_{channel}"
    for payload in payloads:
        if len(payload.encode()) < 8000:
            await cluster.sql("SELECT pg_notify(%s, %s)", (full, payload))


@with_node_output
async def test_hostile_signals_do_not_stop_the_other_process_from_obeying_the_next_one(
    cluster: Cluster,
) -> None:
    node = await cluster.launch("node-1", "default:1")
    client = cluster.client
    assert len(_BOMB) < 8000  # fits a NOTIFY: inflates to 5 MB

    huge = '{"action":"pause","queue":"' + "x" * 8_000_000 + '"}'
    junk = [f"junk {n}" for n in range(2_500)]  # several reads' worth
    await _send_raw(cluster, "signal", [*_HOSTILE, huge, *junk])
    await _send_raw(cluster, "leader", ["garbage", '{"down":[1]}', "[]"])
    await _send_raw(cluster, "elsewhere", ['{"action":"pause","queue":"default"}'])
    if cluster.engine == "sqlite":
        # Not even text: invalid UTF-8 stored as a BLOB.
        await cluster.sql(
            "INSERT INTO oban_signals (channel, payload, origin) "
            "VALUES ('signal', X'FF00FE', 'evil')"
        )

    await _pause_and_wait(cluster, "pause after hostile signals: node-1 paused")
    info = await cluster.remote("node-1", "default")
    assert info is not None and info.limit == 1, f"a hostile signal changed the queue: {info}"
    assert await cluster.producer_queues("node-1") == ["default"], "a hostile start/stop acted"

    job = await client.enqueue(Job(ASYNC_WORKER, args=cluster.job_args()))
    await _resume_and_wait(cluster, job, "resume after hostile signals: job ran")
    assert node.proc.returncode is None, node.tail()
    output = node.text()
    assert "ignoring" in output, node.tail()


#: Valid JSON objects whose fields have the wrong type: a node must reject each signal as
#: invalid (a warning naming the problem), as it rejects a wrong limit, not fail on it.
_WRONG_TYPES = [
    '{"action":{"nested":[]},"queue":"default"}',
    '{"action":["pause"],"queue":"default"}',
    '{"action":"pause","queue":{"name":"default"}}',
    '{"action":"scale","queue":"default","limit":{"n":3}}',
    '{"action":"pkill","job_id":[1]}',
    '{"action":"start","queue":"other","limit":1,"paused":{"x":1}}',
    '{"action":"pause","queue":"default","ident":["any"]}',
]


@with_node_output
async def test_signals_with_wrongly_typed_fields_are_rejected_with_a_warning_not_an_error(
    cluster: Cluster,
) -> None:
    node = await cluster.launch("node-1", "default:1")
    await _send_raw(cluster, "signal", _WRONG_TYPES)
    # Delivered after them: once the node acted on it, it handled every one of them.
    await _pause_and_wait(cluster, "pause after wrongly typed signals")
    info = await cluster.remote("node-1", "default")
    assert info is not None and info.limit == 1, info
    assert await cluster.producer_queues("node-1") == ["default"]
    failures = [
        line
        for line in node.text().splitlines()
        if " ERROR " in line or line.startswith(("Traceback", "TypeError"))
    ]
    assert failures == [], (
        "a signal handler failed on a wrongly typed field instead of rejecting the signal"
    )
