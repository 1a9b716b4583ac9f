"""Cluster behaviour on both engines: leadership, cron, pruning, rescue and local queue control.

Several ``Oban`` instances on one database stand in for nodes (distinct ``node=``; a shared
``name=`` where they compete for leadership). Intervals are short: a 1 s lease (elections
every 0.5 s) and 0.2 s lifeline/refresher/pruner ticks.

On SQLite each instance has its own connection and signals reach only the instance that sends
them, so a leader's resignation is noticed at the next election, and cross-instance queue
control is tested on PostgreSQL only (see the last section).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from oban import Cancel, Job, Oban, worker
from oban.decorators import cron_entries
from tests.helpers import eventually

# ---------------------------------------------------------------------------------------------
# Workers and cron entries
# ---------------------------------------------------------------------------------------------

RAN: dict[int, list[str]] = {}
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


def _node(job: Job) -> str:
    return job.attempted_by[0] if job.attempted_by else "?"


@worker(queue="confb_q")
class ConfBRecordWorker:
    async def process(self, job: Job) -> None:
        RAN.setdefault(job.id, []).append(_node(job))  # type: ignore[arg-type]


@worker(queue="confb_q")
class ConfBGateWorker:
    """Runs until the test opens ``GATE``."""

    async def process(self, job: Job) -> None:
        STARTED[job.id] = _node(job)  # type: ignore[index]
        while not GATE.is_set():  # noqa: ASYNC110 (a threading.Event: loop-agnostic)
            await asyncio.sleep(0.01)
        RAN.setdefault(job.id, []).append(_node(job))  # type: ignore[arg-type]


@worker(queue="confb_q")
class ConfBCancelWorker:
    """Cooperates with cancellation: returns ``Cancel`` once ``job.cancelled()`` turns true."""

    async def process(self, job: Job) -> Any:
        STARTED[job.id] = _node(job)  # type: ignore[index]
        for _ in range(1000):
            if job.cancelled():
                CANCEL_SEEN[job.id] = _node(job)  # type: ignore[index]
                return Cancel("confb stopped on request")
            await asyncio.sleep(0.01)
        RAN.setdefault(job.id, []).append(_node(job))  # type: ignore[arg-type]
        return None


@worker(queue="confb_rescue_q", max_attempts=3)
class ConfBStuckOnceWorker:
    """Blocks on its first attempt (until cancelled); later attempts finish at once."""

    async def process(self, job: Job) -> None:
        STARTED.setdefault(job.id, _node(job))  # type: ignore[arg-type]
        if job.attempt == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                INTERRUPTED[job.id] = _node(job)  # type: ignore[index]
                raise
        RAN.setdefault(job.id, []).append(_node(job))  # type: ignore[arg-type]


@worker(queue="confb_cron_q", oban="ConfBCron", cron="* * * * *")
class ConfBMinuteCronWorker:
    async def process(self, job: Job) -> None:
        return None


@worker(queue="confb_cron_q", oban="ConfBCron", cron="7 14 * * *")
class ConfBDailyCronWorker:
    async def process(self, job: Job) -> None:
        return None


# The scheduler of every instance reads the global cron_entries list: take this module's
# entries out at once and put them back only while the cron test runs.
_CONFB_CRON = [
    entry for entry in cron_entries if entry.worker in (ConfBMinuteCronWorker, ConfBDailyCronWorker)
]
for _entry in _CONFB_CRON:
    cron_entries.remove(_entry)


@pytest.fixture
def confb_cron_entries() -> Iterator[None]:
    assert len(_CONFB_CRON) == 2, "the module's two cron entries were not registered"
    cron_entries.extend(_CONFB_CRON)
    try:
        yield
    finally:
        for entry in _CONFB_CRON:
            while entry in cron_entries:
                cron_entries.remove(entry)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

FAST: dict[str, Any] = {
    "leader": {"interval": 1},
    "lifeline": {"interval": 0.2, "rescue_after": 300},
    "refresher": {"interval": 0.2, "max_age": 1},
    "pruner": {"interval": 0.2, "max_age": 60},
    "notifier": {"poll_interval": 0.2},
}
QUIET = 0.6  # a few poll intervals: "nothing gets fetched" checks wait this long


def _options(**overrides: Any) -> dict[str, Any]:
    options = {key: dict(value) for key, value in FAST.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(options.get(key), dict):
            options[key].update(value)
        else:
            options[key] = value
    return options


async def _start(make_oban: Callable[..., Oban], **overrides: Any) -> Oban:
    instance = make_oban(**_options(**overrides))
    await instance.start()
    return instance


def _spy(instance: Oban, method: str) -> list[Any]:
    """Record every finished call of ``instance._engine.<method>`` (still the real call)."""
    engine = instance._engine
    original = getattr(engine, method)
    calls: list[Any] = []

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        calls.append(result)
        return result

    setattr(engine, method, wrapper)
    return calls


async def _more_calls(*spies: list[Any], extra: int, timeout: float = 5.0) -> None:
    targets = [(calls, len(calls) + extra) for calls in spies]
    await eventually(
        lambda: all(len(calls) >= target for calls, target in targets),
        timeout=timeout,
        message=f"{extra} more calls finished on every spy",
    )


def _plugin(instance: Oban, name: str) -> Any:
    for plugin in instance._plugins:
        if plugin.name == name:
            return plugin
    raise AssertionError(f"{instance.node} has no {name!r} component")


def _leaders(instances: list[Oban]) -> list[str]:
    return [o.node for o in instances if o.is_leader]


async def _leader_rows(instance: Oban, sql: Callable[..., Any]) -> list[tuple[str, str]]:
    rows = await sql(instance, "SELECT name, node FROM oban_leaders ORDER BY name")
    return [(str(name), str(node)) for name, node in rows]


def _ts(offset: float = 0.0) -> str:
    """A UTC timestamp as SQLite stores it; PostgreSQL casts the same text."""
    value = datetime.now(UTC) + timedelta(seconds=offset)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


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


async def _ids(oban: Oban, sql: Callable[..., Any]) -> set[int]:
    return {int(row[0]) for row in await sql(oban, "SELECT id FROM oban_jobs")}


def _paused(oban: Oban, queue: str) -> bool | None:
    info = oban.check_queue(queue)
    return None if info is None else info.paused


def _limit(oban: Oban, queue: str) -> int | None:
    info = oban.check_queue(queue)
    return None if info is None else info.limit


# ---------------------------------------------------------------------------------------------
# Leadership
# ---------------------------------------------------------------------------------------------


async def test_exactly_one_of_three_nodes_sharing_a_name_leads(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [
        await _start(make_oban, name="ConfBLead", node=f"lead-{n}", queues={"confb_idle": 1})
        for n in "abc"
    ]
    await eventually(lambda: len(_leaders(nodes)) == 1, message="exactly one leader")
    leader = _leaders(nodes)[0]

    # Several elections later it is still the one and only leader.
    elections = [_spy(o, "elect_leader") for o in nodes]
    await _more_calls(*elections, extra=3)
    assert _leaders(nodes) == [leader]
    assert await _leader_rows(nodes[0], sql) == [("ConfBLead", leader)]


async def test_leadership_false_and_client_instances_never_lead(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    follower = await _start(
        make_oban, name="ConfBFollow", node="no-lead", leadership=False, queues={"confb_idle": 1}
    )
    client = make_oban(name="ConfBClient", node="client-only")
    await client.start()

    refreshes = _spy(follower, "refresh_producers")
    await _more_calls(refreshes, extra=7)  # over a lease interval

    assert follower.is_leader is False
    assert client.is_leader is False
    assert await _leader_rows(follower, sql) == []
    assert {p.name for p in follower._plugins}.isdisjoint({"pruner", "lifeline", "scheduler"})


async def test_stopping_the_leader_hands_the_lead_to_another_node(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [
        await _start(make_oban, name="ConfBHand", node=f"hand-{n}", queues={"confb_idle": 1})
        for n in "abc"
    ]
    await eventually(lambda: len(_leaders(nodes)) == 1, message="a first leader")
    old = next(o for o in nodes if o.is_leader)
    rest = [o for o in nodes if o is not old]

    await old.stop()

    assert old.is_leader is False
    # At the latest at the next election of a remaining node (every 0.5 s); two leases allowed.
    await eventually(lambda: len(_leaders(rest)) == 1, timeout=2.0, message="a new leader")
    new = _leaders(rest)[0]
    assert new != old.node
    assert await _leader_rows(rest[0], sql) == [("ConfBHand", new)]
    elections = [_spy(o, "elect_leader") for o in rest]
    await _more_calls(*elections, extra=2)
    assert _leaders(rest) == [new]


# ---------------------------------------------------------------------------------------------
# Cron
# ---------------------------------------------------------------------------------------------


async def test_concurrent_evaluations_of_one_minute_insert_one_job_per_entry(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], confb_cron_entries: None
) -> None:
    nodes = [
        await _start(make_oban, name="ConfBCron", node=f"cron-{n}", leadership=True) for n in "abc"
    ]
    schedulers = [_plugin(o, "scheduler") for o in nodes]
    minute = datetime(2030, 1, 15, 14, 7, 31, tzinfo=UTC)

    results = await asyncio.gather(*(s.evaluate(minute) for s in schedulers))

    inserted = sorted(i for ids in results for i in ids)
    assert len(inserted) == 2, results
    jobs = [await _job(nodes[0], job_id) for job_id in inserted]
    for_minute = [j for j in jobs if j.meta.get("cron_at") == "2030-01-15T14:07:00Z"]
    assert len(for_minute) == 2
    assert sorted(j.worker for j in for_minute) == sorted(
        [
            ConfBDailyCronWorker._worker_name,  # type: ignore[attr-defined]
            ConfBMinuteCronWorker._worker_name,  # type: ignore[attr-defined]
        ]
    )
    for found in for_minute:
        assert found.state == "available"
        assert found.queue == "confb_cron_q"
        assert found.meta["cron"] is True
    assert {j.meta["cron_expr"] for j in for_minute} == {"* * * * *", "7 14 * * *"}

    # The next minute: only the every-minute entry is due, once.
    later = await asyncio.gather(*(s.evaluate(minute + timedelta(minutes=1)) for s in schedulers))
    later_ids = [i for ids in later for i in ids]
    assert len(later_ids) == 1
    next_job = await _job(nodes[0], later_ids[0])
    assert next_job.worker == ConfBMinuteCronWorker._worker_name  # type: ignore[attr-defined]
    assert next_job.meta["cron_at"] == "2030-01-15T14:08:00Z"

    # Evaluating the first minute again inserts nothing more.
    again = await asyncio.gather(*(s.evaluate(minute) for s in schedulers))
    assert [i for ids in again for i in ids] == []


# ---------------------------------------------------------------------------------------------
# Pruner
# ---------------------------------------------------------------------------------------------


async def _forced(
    oban: Oban, sql: Callable[..., Any], state: str, assignments: str, *values: Any
) -> int:
    job = await oban.enqueue(ConfBRecordWorker.new({"state": state}, queue="confb_idle"))  # type: ignore[attr-defined]
    await sql(
        oban,
        f"UPDATE oban_jobs SET state = %s, {assignments} WHERE id = %s",
        (state, *values, job.id),
    )
    assert job.id is not None
    return job.id


async def test_pruner_deletes_old_finished_jobs_and_keeps_everything_else(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], backdate: Callable[..., Any]
) -> None:
    client = make_oban(name="ConfBPruneClient")
    finished_field = {
        "completed": "completed_at",
        "cancelled": "cancelled_at",
        "discarded": "discarded_at",
    }
    doomed: set[int] = set()
    kept: set[int] = set()
    for state, field in finished_field.items():
        for age, bucket in ((7200, doomed), (10, kept)):
            job_id = await _forced(
                client, sql, state, f"attempt = 1, attempted_at = %s, {field} = %s", _ts(), _ts()
            )
            await backdate(client, job_id, field, age)
            await backdate(client, job_id, "inserted_at", 7200)
            bucket.add(job_id)
    kept |= {
        await _forced(client, sql, "available", "scheduled_at = %s", _ts(-7200)),
        await _forced(client, sql, "scheduled", "scheduled_at = %s", _ts(3600)),
        await _forced(client, sql, "executing", "attempt = 1, attempted_at = %s", _ts(-7200)),
        await _forced(
            client,
            sql,
            "retryable",
            "attempt = 1, attempted_at = %s, scheduled_at = %s",
            _ts(-7200),
            _ts(3600),
        ),
    }
    for job_id in kept:
        await backdate(client, job_id, "inserted_at", 7200)

    pruner_node = make_oban(
        **_options(
            name="ConfBPrune",
            node="pruner",
            leadership=True,
            lifeline={"interval": 3600, "rescue_after": 10**7},
        )
    )
    prunes = _spy(pruner_node, "prune_jobs")
    await pruner_node.start()
    await eventually(lambda: pruner_node.is_leader, message="the pruning node leads")

    async def doomed_gone() -> bool:
        return not (await _ids(client, sql)) & doomed

    await eventually(doomed_gone, message="old finished jobs pruned")
    await _more_calls(prunes, extra=3)
    assert await _ids(client, sql) == kept
    states = sorted([(await _job(client, job_id)).state for job_id in kept])
    assert states == sorted(
        [
            "available",
            "cancelled",
            "completed",
            "discarded",
            "executing",
            "retryable",
            "scheduled",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Lifeline
# ---------------------------------------------------------------------------------------------


async def test_job_orphaned_by_a_stopped_node_is_rescued_by_the_leader_and_completed(
    make_oban: Callable[..., Oban],
) -> None:
    a = make_oban(
        **_options(
            name="ConfBRescueA",
            node="node-a",
            queues={"confb_rescue_q": 1},
            leadership=False,
            shutdown_grace_period=0.2,
        )
    )
    await a.start()
    job = await a.enqueue(ConfBStuckOnceWorker.new({}))  # type: ignore[attr-defined]
    await eventually(lambda: job.id in STARTED, message="job running on node a")

    await a.stop()

    # Interrupted locally, and left executing for a rescue.
    assert INTERRUPTED == {job.id: "node-a"}
    stuck = await _job(a, job.id)
    assert stuck.state == "executing"
    assert stuck.attempt == 1
    assert stuck.attempted_by is not None and stuck.attempted_by[0] == "node-a"

    b = make_oban(**_options(name="ConfBRescueB", node="node-b", queues={"confb_rescue_q": 1}))
    await b.start()
    await eventually(lambda: b.is_leader, message="node b leads")

    done = await _wait_state(b, job.id, "completed", timeout=5)
    assert done.meta.get("rescued") == 1
    assert done.attempt == 2
    assert done.attempted_by is not None and done.attempted_by[0] == "node-b"
    assert RAN == {job.id: ["node-b"]}


async def test_long_running_job_of_a_live_node_is_not_rescued(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], backdate: Callable[..., Any]
) -> None:
    node = make_oban(
        **_options(
            name="ConfBLive",
            node="live",
            queues={"confb_q": 1},
            lifeline={"rescue_after": 0.5},
        )
    )
    rescues = _spy(node, "rescue_jobs")
    await node.start()
    await eventually(lambda: node.is_leader, message="the node leads")

    live = await node.enqueue(ConfBGateWorker.new({}))  # type: ignore[attr-defined]
    await eventually(lambda: live.id in STARTED, message="the live job running")
    # (Its attempted_at is left alone: acks are matched on it.)
    # A control: an executing job that no producer claimed, as old, is rescued.
    orphan = await _forced(node, sql, "executing", "attempt = 1, attempted_at = %s", _ts())
    await backdate(node, orphan, "attempted_at", 3 * 3600)

    control = await _wait_state(node, orphan, "available", timeout=3)
    assert control.meta.get("rescued") == 1
    await _more_calls(rescues, extra=5)

    still = await _job(node, live.id)
    assert still.attempted_at is not None
    age = (datetime.now(UTC) - still.attempted_at).total_seconds()
    assert age > 0.8, f"the live job ran only {age:.2f}s, not well over rescue_after"
    assert still.state == "executing"
    assert "rescued" not in still.meta
    assert still.attempt == 1

    GATE.set()
    done = await _wait_state(node, live.id, "completed")
    assert done.attempt == 1
    assert RAN == {live.id: ["live"]}


# ---------------------------------------------------------------------------------------------
# New jobs from another instance of the same process
# ---------------------------------------------------------------------------------------------


async def test_job_enqueued_by_another_instance_in_the_same_process_starts_at_once(
    make_oban: Callable[..., Oban],
) -> None:
    # docs/engines.md: new jobs are noticed "at once in the same process" on SQLite (and at
    # once everywhere on PostgreSQL). The server polls only every 5 s here, so a prompt start
    # can only come from the insert notification.
    server = make_oban(
        name="ConfBWakeServer", node="server", queues={"confb_q": 1}, notifier={"poll_interval": 5}
    )
    await server.start()
    client = make_oban(name="ConfBWakeClient", node="client")
    await asyncio.sleep(0.2)  # past the producer's first fetch at start

    for _ in range(2):
        job = await client.enqueue(ConfBRecordWorker.new({}))  # type: ignore[attr-defined]
        await eventually(
            lambda job_id=job.id: job_id in RAN,
            timeout=1.0,
            message="the job started by the other instance's insert notification",
        )
    assert all(nodes == ["server"] for nodes in RAN.values())


# ---------------------------------------------------------------------------------------------
# Queue control on the local instance
# ---------------------------------------------------------------------------------------------


async def _local(make_oban: Callable[..., Oban], **queues: Any) -> Oban:
    instance = make_oban(
        name="ConfBLocal",
        node="local",
        queues=queues or {"confb_q": 1},
        notifier={"poll_interval": 0.2},
    )
    await instance.start()
    return instance


async def test_pause_and_resume_queue_on_the_local_instance(
    make_oban: Callable[..., Oban],
) -> None:
    oban = await _local(make_oban, confb_q=2, confb_other=1)

    await oban.pause_queue("confb_q")

    assert _paused(oban, "confb_q") is True
    assert _paused(oban, "confb_other") is False
    held = await oban.enqueue(ConfBRecordWorker.new({}))  # type: ignore[attr-defined]
    other = await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_other"))  # type: ignore[attr-defined]
    await _wait_state(oban, other.id, "completed")
    await asyncio.sleep(QUIET)
    assert (await _job(oban, held.id)).state == "available"

    await oban.resume_queue("confb_q")

    assert _paused(oban, "confb_q") is False
    await _wait_state(oban, held.id, "completed")


async def test_pause_all_and_resume_all_queues_on_the_local_instance(
    make_oban: Callable[..., Oban],
) -> None:
    oban = await _local(make_oban, confb_q=1, confb_other=1)

    await oban.pause_all_queues()

    assert _paused(oban, "confb_q") is True
    assert _paused(oban, "confb_other") is True
    jobs = [
        await oban.enqueue(ConfBRecordWorker.new({})),  # type: ignore[attr-defined]
        await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_other")),  # type: ignore[attr-defined]
    ]
    await asyncio.sleep(QUIET)
    assert [(await _job(oban, j.id)).state for j in jobs] == ["available", "available"]

    await oban.resume_all_queues()

    assert not _paused(oban, "confb_q") and not _paused(oban, "confb_other")
    for job in jobs:
        await _wait_state(oban, job.id, "completed")


async def test_scale_queue_on_the_local_instance_raises_concurrency(
    make_oban: Callable[..., Oban],
) -> None:
    oban = await _local(make_oban, confb_q=1)
    ids = [(await oban.enqueue(ConfBGateWorker.new({}))).id for _ in range(4)]  # type: ignore[attr-defined]
    await eventually(lambda: len(STARTED) == 1, message="one job running")
    await asyncio.sleep(QUIET)
    assert len(STARTED) == 1, "a limit of 1 ran more than one job"

    await oban.scale_queue(queue="confb_q", limit=3)

    assert _limit(oban, "confb_q") == 3
    await eventually(lambda: len(STARTED) == 3, message="3 jobs running after scaling")
    await asyncio.sleep(QUIET)
    assert len(STARTED) == 3, "a limit of 3 ran more than three jobs"
    GATE.set()
    for job_id in ids:
        await _wait_state(oban, job_id, "completed")

    for bad in (0, -1, True, 1.5, "3", None):
        with pytest.raises(ValueError, match="limit"):
            await oban.scale_queue(queue="confb_q", limit=bad)  # type: ignore[arg-type]
    assert _limit(oban, "confb_q") == 3


async def test_start_queue_and_stop_queue_on_the_local_instance(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    oban = await _local(make_oban, confb_q=1)
    assert oban.check_queue("confb_new") is None

    await oban.start_queue(queue="confb_new", limit=2)

    assert _limit(oban, "confb_new") == 2
    assert {info.queue for info in oban.check_all_queues()} == {"confb_q", "confb_new"}
    rows = await sql(oban, "SELECT node FROM oban_producers WHERE queue = 'confb_new'")
    assert [row[0] for row in rows] == ["local"]
    jobs = [
        await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_new"))  # type: ignore[attr-defined]
        for _ in range(3)
    ]
    for job in jobs:
        done = await _wait_state(oban, job.id, "completed")
        assert done.attempted_by is not None and done.attempted_by[0] == "local"

    await oban.stop_queue("confb_new")

    assert oban.check_queue("confb_new") is None
    assert await sql(oban, "SELECT node FROM oban_producers WHERE queue = 'confb_new'") == []
    orphan = await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_new"))  # type: ignore[attr-defined]
    still_running = await oban.enqueue(ConfBRecordWorker.new({}))  # type: ignore[attr-defined]
    await _wait_state(oban, still_running.id, "completed")
    await asyncio.sleep(QUIET)
    assert (await _job(oban, orphan.id)).state == "available"


async def test_start_queue_paused_runs_nothing_until_resumed(
    make_oban: Callable[..., Oban],
) -> None:
    oban = await _local(make_oban, confb_q=1)

    await oban.start_queue(queue="confb_new", limit=1, paused=True)

    assert _paused(oban, "confb_new") is True
    job = await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_new"))  # type: ignore[attr-defined]
    await asyncio.sleep(QUIET)
    assert (await _job(oban, job.id)).state == "available"
    await oban.resume_queue("confb_new")
    await _wait_state(oban, job.id, "completed")


async def test_cancel_job_of_a_running_job_on_the_same_instance_is_seen_by_its_worker(
    make_oban: Callable[..., Oban],
) -> None:
    oban = await _local(make_oban, confb_q=1)
    job = await oban.enqueue(ConfBCancelWorker.new({}))  # type: ignore[attr-defined]
    await eventually(lambda: job.id in STARTED, message="job running")
    assert (await _job(oban, job.id)).state == "executing"

    assert await oban.cancel_job(job) == 1

    done = await _wait_state(oban, job.id, "cancelled", timeout=3)
    assert CANCEL_SEEN == {job.id: "local"}
    assert job.id not in RAN
    assert done.cancelled_at is not None
    assert done.completed_at is None
    assert done.attempt == 1
    assert "confb stopped on request" in str(done.errors[-1])


# ---------------------------------------------------------------------------------------------
# Signals between instances (PostgreSQL only: SQLite signals stay within the sending instance)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["postgres"])
async def test_postgres_queue_signals_and_cancel_reach_other_instances(
    make_oban: Callable[..., Oban], engine: str
) -> None:
    assert engine == "postgres"
    runner = await _start(
        make_oban, name="ConfBSig", node="runner", queues={"confb_q": 1}, leadership=False
    )
    other = make_oban(name="ConfBSig", node="other")

    # pause, addressed to the runner node
    await other.pause_queue("confb_q", node="runner")
    await eventually(lambda: _paused(runner, "confb_q") is True, message="runner paused")
    held = await other.enqueue(ConfBRecordWorker.new({}))  # type: ignore[attr-defined]
    await asyncio.sleep(QUIET)
    assert (await _job(other, held.id)).state == "available"

    # resume and scale, to every node
    await other.resume_queue("confb_q")
    await eventually(lambda: _paused(runner, "confb_q") is False, message="runner resumed")
    await _wait_state(other, held.id, "completed")
    await other.scale_queue(queue="confb_q", limit=3)
    await eventually(lambda: _limit(runner, "confb_q") == 3, message="runner scaled")

    # start and stop a queue
    await other.start_queue(queue="confb_new", limit=2)
    await eventually(lambda: _limit(runner, "confb_new") == 2, message="queue started")
    await other.stop_queue("confb_new")
    await eventually(lambda: runner.check_queue("confb_new") is None, message="queue stopped")

    # cancel a job running on the runner
    job = await other.enqueue(ConfBCancelWorker.new({}))  # type: ignore[attr-defined]
    await eventually(lambda: job.id in STARTED, message="job running on the runner")
    assert await other.cancel_job(job) == 1
    await _wait_state(other, job.id, "cancelled", timeout=3)
    assert CANCEL_SEEN == {job.id: "runner"}
