"""Telemetry events fire at runtime with their documented metadata; acks are batched; the
notifier heartbeats; the producer's debounce interval spaces out fetches.

A leader node with fast intervals (a 1 s lease, 0.2 s component ticks) runs a queue while a
handler attached to every name in ``oban.telemetry.EVENTS`` records what is emitted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, telemetry, worker
from oban.decorators import cron_entries
from tests.helpers import eventually

# ---------------------------------------------------------------------------------------------
# Workers (module level: workers are registered by module.QualName)
# ---------------------------------------------------------------------------------------------

INSTANCE = "TelemetryRuntime"


@worker(queue="tele_q")
class TeleOkWorker:
    async def process(self, job: Job) -> Any:
        return None


@worker(queue="tele_q", max_attempts=1)
class TeleFailWorker:
    async def process(self, job: Job) -> Any:
        raise ValueError("tele boom")


@worker(queue="tele_ack_q")
class TeleAckNoopWorker:
    async def process(self, job: Job) -> Any:
        return None


STARTS: defaultdict[str, list[float]] = defaultdict(list)


@worker(queue="tele_deb_q")
class TeleDebounceWorker:
    async def process(self, job: Job) -> Any:
        STARTS[job.queue].append(time.monotonic())
        await asyncio.sleep(job.args.get("sleep", 0))
        return None


@worker(queue="tele_cron_q", oban=INSTANCE, cron="* * * * *")
class TeleCronWorker:
    async def process(self, job: Job) -> Any:
        return None


# The cron entry lives in a global list every scheduler reads: keep it out of it except while
# the test that needs it runs.
_TELE_CRON = [entry for entry in cron_entries if entry.worker is TeleCronWorker]
for _entry in _TELE_CRON:
    cron_entries.remove(_entry)


@pytest.fixture
def tele_cron() -> Iterator[None]:
    assert len(_TELE_CRON) == 1, "the module's cron entry was not registered"
    cron_entries.extend(_TELE_CRON)
    try:
        yield
    finally:
        for entry in _TELE_CRON:
            if entry in cron_entries:
                cron_entries.remove(entry)


class Recorder:
    def __init__(self) -> None:
        self.id = f"test-telemetry-runtime-{uuid.uuid4().hex[:8]}"
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, meta: dict[str, Any]) -> None:
        self.events.append((name, meta))

    def names(self) -> set[str]:
        return {name for name, _ in self.events}

    def of(self, name: str) -> list[dict[str, Any]]:
        return [meta for event, meta in self.events if event == name]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    telemetry.attach(rec.id, list(telemetry.EVENTS), rec)
    try:
        yield rec
    finally:
        telemetry.detach(rec.id)


FAST = {
    "leader": {"interval": 1},
    "stager": {"interval": 0.2},
    "pruner": {"interval": 0.2, "max_age": 0.5},
    "lifeline": {"interval": 0.2},
    "refresher": {"interval": 0.2},
}


def _plugin(oban: Oban, name: str) -> Any:
    found = [plugin for plugin in oban._plugins if plugin.name == name]
    assert found, f"no {name} among {[p.name for p in oban._plugins]}"
    return found[0]


# ---------------------------------------------------------------------------------------------
# Events at runtime
# ---------------------------------------------------------------------------------------------


async def test_runtime_events_fire_with_documented_metadata(
    make_oban: Callable[..., Oban],
    recorder: Recorder,
    sql: Callable[..., Any],
    tele_cron: None,
) -> None:
    # Two orphans of a node that is gone (no producer row, started two hours ago, past the
    # one-hour rescue_after): the lifeline rescues one and discards the other.
    await sql(
        "INSERT INTO oban_jobs (state, queue, worker, args, attempt, max_attempts, "
        "attempted_at, attempted_by) VALUES "
        "('executing', 'tele_orphan_q', 'gone.Worker', '{}', 1, 3, "
        "timezone('UTC', now()) - interval '2 hours', ARRAY['gone-node', %s]), "
        "('executing', 'tele_orphan_q', 'gone.Worker', '{}', 3, 3, "
        "timezone('UTC', now()) - interval '2 hours', ARRAY['gone-node', %s])",
        (str(uuid.uuid4()), str(uuid.uuid4())),
    )

    oban = make_oban(name=INSTANCE, queues={"tele_q": 5}, **FAST)
    await oban.start()
    assert oban.is_leader

    ok = await oban.enqueue(TeleOkWorker.new({"n": 1}))
    fail = await oban.enqueue(TeleFailWorker.new({"n": 2}))
    staged = await oban.enqueue(TeleOkWorker.new({"n": 3}, scheduled_in=0.3))
    assert staged.state == "scheduled"

    def stop_for(job: Job) -> list[dict[str, Any]]:
        return [m for m in recorder.of("oban.job.stop") if m["job"].id == job.id]

    required = {
        "oban.job.start",
        "oban.job.stop",
        "oban.job.exception",
        "oban.producer.get.start",
        "oban.producer.get.stop",
        "oban.producer.ack.start",
        "oban.producer.ack.stop",
        "oban.leader.election.stop",
        "oban.stager.stage.stop",
        "oban.lifeline.rescue.stop",
        "oban.pruner.prune.stop",
        "oban.refresher.refresh.stop",
        "oban.refresher.cleanup.stop",
        "oban.enqueue.start",
        "oban.enqueue.stop",
        "oban.notifier.status",
    }
    await eventually(
        lambda: required <= recorder.names() and stop_for(ok) and stop_for(staged),
        timeout=8,
        message="runtime events",
    )
    await eventually(
        lambda: any(m["rescued_count"] >= 1 for m in recorder.of("oban.lifeline.rescue.stop")),
        timeout=5,
        message="a rescue",
    )
    await eventually(
        lambda: any(m["pruned_count"] >= 1 for m in recorder.of("oban.pruner.prune.stop")),
        timeout=5,
        message="a prune",
    )

    # The scheduler's evaluation, called directly for a chosen minute.
    minute = datetime(2031, 1, 2, 3, 4, tzinfo=UTC)
    ids = await _plugin(oban, "scheduler").evaluate(minute)
    assert len(ids) == 1

    await oban.stop()

    # oban.job.start
    started = [m for m in recorder.of("oban.job.start") if m["job"].id == ok.id]
    assert started, recorder.of("oban.job.start")
    assert {"job", "monotonic_time"} <= started[0].keys()
    assert isinstance(started[0]["monotonic_time"], int)

    # oban.job.stop
    stop = stop_for(ok)[0]
    assert {"job", "monotonic_time", "duration", "queue_time", "state"} <= stop.keys()
    assert stop["state"] == "completed"
    assert isinstance(stop["queue_time"], int) and stop["queue_time"] >= 0
    assert isinstance(stop["monotonic_time"], int)
    assert stop["monotonic_time"] >= started[0]["monotonic_time"]

    # oban.job.exception
    raised = [m for m in recorder.of("oban.job.exception") if m["job"].id == fail.id]
    assert len(raised) == 1
    exc = raised[0]
    assert {"job", "monotonic_time", "duration", "queue_time", "state"} <= exc.keys()
    assert exc["state"] == "discarded"
    assert exc["error_message"] == "tele boom"
    assert exc["error_type"] == "ValueError"
    assert "ValueError: tele boom" in exc["traceback"]
    assert isinstance(exc["duration"], int) and exc["duration"] > 0

    # oban.producer.get.*
    assert all(m["queue"] == "tele_q" for m in recorder.of("oban.producer.get.start"))
    gets = recorder.of("oban.producer.get.stop")
    assert all(m["queue"] == "tele_q" and isinstance(m["count"], int) for m in gets)
    assert sum(m["count"] for m in gets) >= 3

    # oban.producer.ack.*
    assert any(m["queue"] == "tele_q" for m in recorder.of("oban.producer.ack.start"))
    acks = [m for m in recorder.of("oban.producer.ack.stop") if m["queue"] == "tele_q"]
    assert acks
    assert sum(m["count"] for m in acks) >= 3

    # oban.leader.election.stop
    elections = recorder.of("oban.leader.election.stop")
    assert len(elections) >= 2  # at start, then every half lease
    assert all(m["leader"] is True for m in elections)

    # oban.stager.stage.stop
    stages = recorder.of("oban.stager.stage.stop")
    assert all(isinstance(m["staged_count"], int) for m in stages)
    assert all(isinstance(m["available_queues"], list) for m in stages)
    assert any(m["staged_count"] >= 1 and "tele_q" in m["available_queues"] for m in stages)

    # oban.lifeline.rescue.stop
    rescues = recorder.of("oban.lifeline.rescue.stop")
    assert all({"rescued_count", "discarded_count"} <= m.keys() for m in rescues)
    assert sum(m["rescued_count"] for m in rescues) == 1
    assert sum(m["discarded_count"] for m in rescues) == 1

    # oban.pruner.prune.stop
    prunes = recorder.of("oban.pruner.prune.stop")
    assert all(isinstance(m["pruned_count"], int) for m in prunes)

    # oban.refresher.refresh.stop and oban.refresher.cleanup.stop
    refreshes = recorder.of("oban.refresher.refresh.stop")
    assert all({"refreshed_count", "restored_count"} <= m.keys() for m in refreshes)
    assert any(m["refreshed_count"] == 1 for m in refreshes)
    assert all(m["restored_count"] == 0 for m in refreshes)
    cleanups = recorder.of("oban.refresher.cleanup.stop")
    assert all(isinstance(m["cleanup_count"], int) for m in cleanups)

    # oban.scheduler.evaluate.stop
    evaluations = [m for m in recorder.of("oban.scheduler.evaluate.stop") if m["cron_at"] == minute]
    assert len(evaluations) == 1
    assert evaluations[0]["enqueued_count"] == 1

    # oban.queue.shutdown
    shutdowns = [m for m in recorder.of("oban.queue.shutdown") if m["queue"] == "tele_q"]
    assert len(shutdowns) == 1
    assert shutdowns[0]["orphaned"] == []
    assert isinstance(shutdowns[0]["elapsed"], float) and shutdowns[0]["elapsed"] >= 0

    # oban.enqueue.*
    enqueue_starts = recorder.of("oban.enqueue.start")
    assert any([j.id for j in m["jobs"]] == [fail.id] for m in recorder.of("oban.enqueue.stop"))
    assert all({"jobs", "count"} <= m.keys() for m in enqueue_starts)
    assert all(m["count"] == len(m["jobs"]) for m in recorder.of("oban.enqueue.stop"))

    # oban.notifier.status (the LISTEN connection came up)
    statuses = recorder.of("oban.notifier.status")
    assert {"status": "listening", "reason": None} in statuses

    # Every stop event of a span carries its duration in nanoseconds.
    stops = [(name, meta) for name, meta in recorder.events if name.endswith(".stop")]
    assert {
        "oban.job.stop",
        "oban.enqueue.stop",
        "oban.producer.get.stop",
        "oban.producer.ack.stop",
        "oban.leader.election.stop",
        "oban.stager.stage.stop",
        "oban.lifeline.rescue.stop",
        "oban.pruner.prune.stop",
        "oban.refresher.refresh.stop",
        "oban.refresher.cleanup.stop",
        "oban.scheduler.evaluate.stop",
    } <= {name for name, _ in stops}
    for name, meta in stops:
        duration = meta.get("duration")
        assert isinstance(duration, int) and not isinstance(duration, bool), (name, meta)
        assert duration > 0, (name, meta)


async def test_enqueue_events_carry_the_jobs_and_count(
    make_oban: Callable[..., Oban], recorder: Recorder
) -> None:
    oban = make_oban(name=f"{INSTANCE}Client")
    jobs = await oban.enqueue_many([TeleOkWorker.new({"n": n}) for n in range(3)])

    (start,) = recorder.of("oban.enqueue.start")
    (stop,) = recorder.of("oban.enqueue.stop")
    assert start["count"] == 3 and stop["count"] == 3
    assert [j.id for j in stop["jobs"]] == [j.id for j in jobs]
    assert all(j.id is not None for j in stop["jobs"])
    assert isinstance(stop["duration"], int) and stop["duration"] > 0

    # Detached handlers hear nothing more.
    telemetry.detach(recorder.id)
    await oban.enqueue(TeleOkWorker.new({"n": 9}))
    assert len(recorder.of("oban.enqueue.start")) == 1


async def test_poll_notifier_emits_polling_status_at_start(
    make_oban: Callable[..., Oban], recorder: Recorder
) -> None:
    oban = make_oban(name=f"{INSTANCE}Poll", queues={"tele_poll_q": 1}, notifier={"type": "poll"})
    await oban.start()
    statuses = recorder.of("oban.notifier.status")
    assert len(statuses) == 1
    assert statuses[0]["status"] == "polling"
    assert "reason" in statuses[0]
    assert oban.notifier_status == "polling"


# ---------------------------------------------------------------------------------------------
# Batched acks
# ---------------------------------------------------------------------------------------------


async def test_acks_are_written_in_batches(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    oban = make_oban(name=f"{INSTANCE}Acks", queues={"tele_ack_q": 50})
    engine: Any = oban._engine  # Any: its methods are replaced below
    original = engine.ack_jobs
    calls: list[int] = []

    async def counting_ack_jobs(acks: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(acks))
        return await original(acks, *args, **kwargs)

    engine.ack_jobs = counting_ack_jobs
    carrying = engine.ack_fetch_jobs

    async def counting_ack_fetch_jobs(acks: Any, *args: Any, **kwargs: Any) -> Any:
        if acks:  # a fetch that carried acks
            calls.append(len(acks))
        return await carrying(acks, *args, **kwargs)

    engine.ack_fetch_jobs = counting_ack_fetch_jobs
    await oban.enqueue_many([TeleAckNoopWorker.new({"n": n}) for n in range(200)])
    await oban.start()

    async def all_completed() -> bool:
        rows: list[tuple[int]] = await sql(
            "SELECT count(*) FROM oban_jobs WHERE state = 'completed'"
        )
        return rows[0][0] == 200

    await eventually(all_completed, timeout=15, message="200 jobs completed")
    assert sum(calls) >= 200
    assert len(calls) < 200, calls
    assert max(calls) > 1, calls


# ---------------------------------------------------------------------------------------------
# Notifier heartbeat
# ---------------------------------------------------------------------------------------------


async def test_notifier_heartbeats_on_the_listen_connection(
    make_oban: Callable[..., Oban], pool: AsyncConnectionPool[Any], prefix: str
) -> None:
    async def activity() -> list[tuple[Any, ...]]:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT pid, query, backend_start FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
            rows: list[tuple[Any, ...]] = await cur.fetchall()
            return rows

    before = {row[0] for row in await activity()}
    oban = make_oban(
        name=f"{INSTANCE}Beat", queues={"tele_beat_q": 1}, notifier={"beat_interval": 0.2}
    )
    await oban.start()
    assert oban.notifier_status == "listening"

    # The LISTEN connection names this test's schema in its channels.
    async def listener() -> int | None:
        for pid, query, _ in await activity():
            if pid in before or not query:
                continue
            if query.startswith("LISTEN") and f"{prefix}.oban_" in query:
                return int(pid)
        return None

    pid = await eventually(listener, timeout=2, message="the notifier's LISTEN backend")

    async def heartbeat() -> bool:
        return any(row[0] == pid and row[1] == "SELECT 1" for row in await activity())

    await eventually(heartbeat, timeout=3, message="a SELECT 1 heartbeat on the LISTEN backend")


# ---------------------------------------------------------------------------------------------
# Debounce interval
# ---------------------------------------------------------------------------------------------


async def _start_gaps(
    make_oban: Callable[..., Oban], name: str, queue: str, debounce: float, *, limit: int
) -> list[float]:
    """Gaps between the starts of quick jobs 1..3. With ``limit=2``, job 0 holds the other
    slot for a second, so each refetch happens while a job is still running."""
    STARTS[queue].clear()
    oban = make_oban(
        name=name,
        queues={queue: {"limit": limit, "debounce_interval": debounce}},
        notifier={"type": "poll", "poll_interval": 5},
    )
    sleeps = [1.0 if limit > 1 else 0, 0, 0, 0]
    await oban.enqueue_many(
        [
            TeleDebounceWorker.new({"n": n, "sleep": sleep}, queue=queue)
            for n, sleep in enumerate(sleeps)
        ]
    )
    await oban.start()
    await eventually(lambda: len(STARTS[queue]) == 4, timeout=8, message=f"4 jobs in {queue}")
    await oban.stop()
    starts = STARTS[queue][1:]
    return [later - earlier for earlier, later in pairwise(starts)]


async def test_debounce_interval_spaces_out_fetches_while_jobs_run(
    make_oban: Callable[..., Oban],
) -> None:
    fast = await _start_gaps(make_oban, f"{INSTANCE}DebFast", "tele_deb_fast_q", 0, limit=2)
    slow = await _start_gaps(make_oban, f"{INSTANCE}DebSlow", "tele_deb_slow_q", 0.3, limit=2)

    assert len(fast) == 2 and len(slow) == 2
    assert max(fast) < 0.15, fast
    # Jittered between 0.75 and 1.25 times the interval.
    assert min(slow) >= 0.2, slow


async def test_a_queue_with_every_slot_free_fetches_without_debounce(
    make_oban: Callable[..., Oban],
) -> None:
    # limit 1: each refetch happens with nothing running, so no later wake-up could add to
    # the batch and the queue fetches at once despite the long debounce_interval.
    gaps = await _start_gaps(make_oban, f"{INSTANCE}DebIdle", "tele_deb_idle_q", 0.3, limit=1)

    assert len(gaps) == 2
    assert max(gaps) < 0.15, gaps
