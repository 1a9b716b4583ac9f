"""Cluster behaviour on both engines: leadership, cron, pruning, rescue and local queue control.

Several ``Oban`` instances on one database stand in for nodes (distinct ``node=``; a shared
``name=`` where they compete for leadership). Intervals are short: a 1 s lease (elections
every 0.5 s) and 0.2 s lifeline/refresher/pruner ticks.

On SQLite each instance has its own connection, and notifications are delivered in-process:
signals (pause, scale, start/stop, cancel) and a leader's resignation reach every instance of
this process on the same file, as docs/engines.md says, so they are tested on both engines.
(Across processes SQLite has no notifications; tests/acceptance covers several processes.)
The cross-instance "pause, then a job enqueued right after is not fetched" tests stay in
tests/integration/test_queue_control.py (PostgreSQL): on SQLite a fetch already in flight
when the pause lands claims such a job now and then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from oban import Job, Oban, telemetry, worker
from oban.decorators import cron_entries
from tests.helpers import eventually, spy

# ---------------------------------------------------------------------------------------------
# Workers and cron entries
# ---------------------------------------------------------------------------------------------

# Keyed by ``job.id``.
RAN: dict[int | None, list[str]] = {}
STARTED: dict[int | None, str] = {}
CANCEL_SEEN: dict[int | None, str] = {}
INTERRUPTED: dict[int | None, str] = {}
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
        RAN.setdefault(job.id, []).append(_node(job))


@worker(queue="confb_q")
class ConfBGateWorker:
    """Runs until the test opens ``GATE``."""

    async def process(self, job: Job) -> None:
        STARTED[job.id] = _node(job)
        while not GATE.is_set():  # noqa: ASYNC110 (a threading.Event: loop-agnostic)
            await asyncio.sleep(0.01)
        RAN.setdefault(job.id, []).append(_node(job))


@worker(queue="confb_q")
class ConfBCancelWorker:
    """Sleeps 10 s unless stopped; notes in ``CANCEL_SEEN`` the node whose cancel stopped it
    (a task cancelled while ``job.cancelled()`` is true)."""

    async def process(self, job: Job) -> None:
        STARTED[job.id] = _node(job)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            CANCEL_SEEN[job.id] = _node(job) if job.cancelled() else "not by a cancel"
            raise
        RAN.setdefault(job.id, []).append(_node(job))


@worker(queue="confb_rescue_q", max_attempts=3)
class ConfBStuckOnceWorker:
    """Blocks on its first attempt (until cancelled); later attempts finish at once."""

    async def process(self, job: Job) -> None:
        STARTED.setdefault(job.id, _node(job))
        if job.attempt == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                INTERRUPTED[job.id] = _node(job)
                raise
        RAN.setdefault(job.id, []).append(_node(job))


@worker(queue="confb_q")
class ConfBSleepWorker:
    """Sleeps ``args["sleep"]`` seconds on its first attempt only; records interruptions."""

    async def process(self, job: Job) -> None:
        STARTED.setdefault(job.id, _node(job))
        if job.attempt == 1:
            try:
                await asyncio.sleep(job.args["sleep"])
            except asyncio.CancelledError:
                INTERRUPTED[job.id] = _node(job)
                raise
        RAN.setdefault(job.id, []).append(_node(job))


@worker(queue="confb_rerun_q", max_attempts=3)
class ConfBRescueWorker:
    async def process(self, job: Job) -> None:
        RAN.setdefault(job.id, []).append(_node(job))


@worker(queue="confb_cron_q", oban="ConfBCron", cron="* * * * *")
class ConfBMinuteCronWorker:
    async def process(self, job: Job) -> None:
        return None


@worker(queue="confb_cron_q", oban="ConfBCron", cron="7 14 * * *")
class ConfBDailyCronWorker:
    async def process(self, job: Job) -> None:
        return None


@worker(
    queue="confb_cron_tz_q",
    oban="ConfBCronTZ",
    cron={"expr": "0 9 * * *", "timezone": "America/New_York"},
)
class ConfBNewYorkCronWorker:
    async def process(self, job: Job) -> None:
        return None


# The scheduler of every instance reads the global cron_entries list: take this module's
# entries out at once and put them back only while the cron tests run.
_CONFB_CRON = [
    entry
    for entry in cron_entries
    if entry.worker in (ConfBMinuteCronWorker, ConfBDailyCronWorker, ConfBNewYorkCronWorker)
]
for _entry in _CONFB_CRON:
    cron_entries.remove(_entry)


@pytest.fixture
def confb_cron_entries() -> Iterator[None]:
    assert len(_CONFB_CRON) == 3, "the module's three cron entries were not registered"
    cron_entries.extend(_CONFB_CRON)
    try:
        yield
    finally:
        for entry in _CONFB_CRON:
            while entry in cron_entries:
                cron_entries.remove(entry)


@pytest.fixture
def events() -> Iterator[Callable[[str], list[dict[str, Any]]]]:
    """Collect telemetry: ``events(name)`` lists the metadata of each ``name`` event so far."""
    seen: list[tuple[str, dict[str, Any]]] = []
    telemetry.attach(
        "test-confb-cluster",
        ["oban.queue.shutdown"],
        lambda name, meta: seen.append((name, meta)),
    )
    try:
        yield lambda name: [meta for event, meta in seen if event == name]
    finally:
        telemetry.detach("test-confb-cluster")


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


def _lease_table(instance: Oban) -> str:
    """Where leases live: Elixir's oban_peers on PostgreSQL, oban_leaders on SQLite."""
    return "oban_leaders" if instance.sqlite_path is not None else "oban_peers"


async def _leader_rows(instance: Oban, sql: Callable[..., Any]) -> list[tuple[str, str]]:
    rows = await sql(instance, f"SELECT name, node FROM {_lease_table(instance)} ORDER BY name")
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

    found: Job = await eventually(check, timeout=timeout, message=f"job {job_id} {state}")
    return found


async def _ids(oban: Oban, sql: Callable[..., Any]) -> set[int]:
    return {int(row[0]) for row in await sql(oban, "SELECT id FROM oban_jobs")}


def _text_array(engine: str, value: list[str] | None) -> Any:
    """An ``attempted_by`` value for an UPDATE: a text[] (PostgreSQL) or JSON text (SQLite)."""
    if value is None or engine == "postgres":
        return value
    return json.dumps(value)


async def _insert_job(
    oban: Oban,
    sql: Callable[..., Any],
    engine: str,
    *,
    state: str,
    queue: str = "confb_idle",
    worker_cls: Any = None,
    attempt: int = 0,
    max_attempts: int = 3,
    attempted_by: list[str] | None = None,
    attempted_ago: float | None = None,
    inserted_ago: float = 0.0,
    scheduled_in: float = 0.0,
    finished_ago: float | None = None,
) -> int:
    """A job row as another node (or a crash) would have left it.

    Enqueued as a scheduled job (nobody fetches it meanwhile), then set in one UPDATE.
    """
    cls = worker_cls or ConfBRecordWorker
    job = await oban.enqueue(cls.new({}, queue=queue, max_attempts=max_attempts, scheduled_in=3600))
    assignments = ["state = %s", "attempt = %s", "attempted_by = %s"]
    assignments += ["inserted_at = %s", "scheduled_at = %s"]
    values: list[Any] = [state, attempt, _text_array(engine, attempted_by)]
    values += [_ts(-inserted_ago), _ts(scheduled_in)]
    if attempted_ago is not None:
        assignments.append("attempted_at = %s")
        values.append(_ts(-attempted_ago))
    finished_column = {
        "completed": "completed_at",
        "cancelled": "cancelled_at",
        "discarded": "discarded_at",
    }.get(state)
    if finished_column is not None and finished_ago is not None:
        assignments.append(f"{finished_column} = %s")
        values.append(_ts(-finished_ago))
    await sql(
        oban, f"UPDATE oban_jobs SET {', '.join(assignments)} WHERE id = %s", (*values, job.id)
    )
    assert job.id is not None
    return job.id


async def _insert_producer(
    oban: Oban,
    sql: Callable[..., Any],
    *,
    node: str = "dead-node",
    age: float = 3600.0,
    ident: str | None = None,
) -> str:
    """A producer row of another node whose last heartbeat was ``age`` seconds ago."""
    ident = ident or str(uuid.uuid4())
    await sql(
        oban,
        "INSERT INTO oban_producers (uuid, name, node, queue, meta, started_at, updated_at) "
        "VALUES (%s, 'Oban', %s, 'confb_idle', '{}', %s, %s)",
        (ident, node, _ts(-age), _ts(-age)),
    )
    return ident


async def _producer_uuids(oban: Oban, sql: Callable[..., Any]) -> set[str]:
    return {str(row[0]) for row in await sql(oban, "SELECT uuid FROM oban_producers")}


async def _state(oban: Oban, job_id: int) -> str | None:
    found = await oban.get_job(job_id)
    return None if found is None else str(found.state)


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
    elections = [spy(o, "elect_leader") for o in nodes]
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

    refreshes = spy(follower, "refresh_producers")
    await _more_calls(refreshes, extra=8)  # well over one lease

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
    elections = [spy(o, "elect_leader") for o in rest]
    await _more_calls(*elections, extra=2)
    assert _leaders(rest) == [new]


async def test_a_leader_that_vanishes_without_resigning_is_replaced_after_its_lease(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [
        await _start(make_oban, name="ConfBVanish", node=f"vanish-{n}", queues={"confb_idle": 1})
        for n in "abc"
    ]
    await eventually(lambda: len(_leaders(nodes)) == 1, message="a first leader")
    old = next(o for o in nodes if o.is_leader)
    rest = [o for o in nodes if o is not old]

    assert old._leader is not None
    await old._leader.stop()  # the loop halts: no more lease renewals, and no resign
    await eventually(
        lambda: len(_leaders(rest)) == 1,
        timeout=2.5,
        message="another node leads once the 1 s lease lapsed",
    )
    new = _leaders(rest)[0]
    assert await _leader_rows(rest[0], sql) == [("ConfBVanish", new)]


async def test_leadership_is_dropped_when_elections_fail_and_regained_after(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [
        await _start(make_oban, name="ConfBFail", node=f"fail-{n}", queues={"confb_idle": 1})
        for n in "ab"
    ]
    await eventually(lambda: len(_leaders(nodes)) == 1, message="a first leader")

    table = _lease_table(nodes[0])
    await sql(nodes[0], f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        await eventually(
            lambda: _leaders(nodes) == [], timeout=2.0, message="no leader while elections fail"
        )
    finally:
        await sql(nodes[0], f"ALTER TABLE {table}_away RENAME TO {table}")

    await eventually(
        lambda: len(_leaders(nodes)) == 1, timeout=2.5, message="a leader once elections work"
    )
    assert await _leader_rows(nodes[0], sql) == [("ConfBFail", _leaders(nodes)[0])]


async def test_leader_only_work_runs_on_the_leader_alone(
    make_oban: Callable[..., Oban], engine: str
) -> None:
    nodes = [
        make_oban(**_options(name="ConfBOnly", node=f"only-{n}", queues={"confb_idle": 1}))
        for n in "abc"
    ]
    # On PostgreSQL staging is the leader's too (SQLite nodes stage their own queues).
    leader_only = ["prune_jobs", "rescue_jobs", "cleanup_producers"]
    leader_only += ["stage_jobs"] if engine == "postgres" else []
    spies = {o.node: {name: spy(o, name) for name in leader_only} for o in nodes}
    for o in nodes:
        await o.start()
    await eventually(lambda: len(_leaders(nodes)) == 1, message="exactly one leader")
    leader = _leaders(nodes)[0]

    await _more_calls(*spies[leader].values(), extra=3)
    assert _leaders(nodes) == [leader]
    for node, calls in spies.items():
        if node != leader:
            assert {name: len(c) for name, c in calls.items()} == dict.fromkeys(leader_only, 0), (
                f"follower {node} did leader-only work"
            )


async def test_stopping_the_leader_hands_over_at_once_through_the_resign_notice(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    # A 10 s lease: a prompt takeover can only come from the resign notification.
    nodes = [
        await _start(
            make_oban,
            name="ConfBResign",
            node=f"resign-{n}",
            queues={"confb_idle": 1},
            leader={"interval": 10},
        )
        for n in "abc"
    ]
    await eventually(lambda: len(_leaders(nodes)) == 1, message="a first leader")
    old = next(o for o in nodes if o.is_leader)
    rest = [o for o in nodes if o is not old]

    await old.stop()
    assert old.is_leader is False
    await eventually(
        lambda: len(_leaders(rest)) == 1, timeout=1.0, message="a new leader within 1 s"
    )
    new = _leaders(rest)[0]
    assert new != old.node
    await eventually(
        lambda: _leader_rows(rest[0], sql), timeout=1.0, message="the new leader's row"
    )
    assert await _leader_rows(rest[0], sql) == [("ConfBResign", new)]


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
            ConfBDailyCronWorker._worker_name,
            ConfBMinuteCronWorker._worker_name,
        ]
    )
    for found in for_minute:
        assert found.state == "available"
        assert found.queue == "confb_cron_q"
        assert found.meta["cron"] is True
    assert {j.meta["cron_expr"] for j in for_minute} == {"* * * * *", "7 14 * * *"}
    names = {j.meta["cron_name"] for j in for_minute}
    assert len(names) == 2
    assert all(re.fullmatch(r"[0-9a-f]{8}", name) for name in names)
    minute_job = next(j for j in for_minute if j.worker == ConfBMinuteCronWorker._worker_name)

    # The next minute: only the every-minute entry is due, once.
    later = await asyncio.gather(*(s.evaluate(minute + timedelta(minutes=1)) for s in schedulers))
    later_ids = [i for ids in later for i in ids]
    assert len(later_ids) == 1
    next_job = await _job(nodes[0], later_ids[0])
    assert next_job.worker == ConfBMinuteCronWorker._worker_name
    assert next_job.meta["cron_at"] == "2030-01-15T14:08:00Z"
    # Another minute is another slot of the same entry.
    assert next_job.meta["cron_name"] == minute_job.meta["cron_name"]

    # Evaluating the first minute again inserts nothing more.
    again = await asyncio.gather(*(s.evaluate(minute) for s in schedulers))
    assert [i for ids in again for i in ids] == []


def _cron_at(minute: datetime) -> str:
    return minute.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00Z")


async def _cron_jobs(
    oban: Oban, sql: Callable[..., Any], worker_cls: Any, cron_at: str | None = None
) -> list[Job]:
    """The jobs of ``worker_cls`` (for the minute ``cron_at``), oldest first."""
    rows = await sql(
        oban,
        "SELECT id FROM oban_jobs WHERE worker = %s ORDER BY id",
        (worker_cls._worker_name,),
    )
    jobs = [await _job(oban, int(row[0])) for row in rows]
    return [j for j in jobs if cron_at is None or j.meta.get("cron_at") == cron_at]


async def test_cron_entry_with_a_timezone_is_due_at_its_local_time(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], confb_cron_entries: None
) -> None:
    node = await _start(make_oban, name="ConfBCronTZ", node="cron-tz", leadership=True)
    scheduler = _plugin(node, "scheduler")

    # 09:00 in New York is 14:00 UTC in January (EST) and 13:00 UTC in July (EDT).
    assert await scheduler.evaluate(datetime(2031, 1, 15, 9, 0, tzinfo=UTC)) == []
    assert await scheduler.evaluate(datetime(2031, 1, 15, 13, 0, tzinfo=UTC)) == []
    january = await scheduler.evaluate(datetime(2031, 1, 15, 14, 0, tzinfo=UTC))
    assert len(january) == 1
    assert await scheduler.evaluate(datetime(2031, 7, 15, 14, 0, tzinfo=UTC)) == []
    july = await scheduler.evaluate(datetime(2031, 7, 15, 13, 0, tzinfo=UTC))
    assert len(july) == 1

    jobs = await _cron_jobs(node, sql, ConfBNewYorkCronWorker, "2031-01-15T14:00:00Z")
    assert [j.id for j in jobs] == january
    assert jobs[0].meta["cron_expr"] == "0 9 * * *"
    assert len(await _cron_jobs(node, sql, ConfBNewYorkCronWorker)) == 2


def test_invalid_cron_expression_fails_at_decoration_naming_the_field() -> None:
    # No database: runs once.
    before = list(cron_entries)
    with pytest.raises(ValueError, match=r"minute") as info:
        # (A short class name: the worker name, with "<locals>", must stay under 128 chars.)
        @worker(queue="confb_bad_cron_q", cron="61 * * * *")
        class ConfBBad:
            async def process(self, job: Job) -> Any:
                return None

    assert "61" in str(info.value)
    assert cron_entries == before


@pytest.mark.timeout(120)
async def test_real_minute_boundary_inserts_one_job_by_the_leader_only(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], confb_cron_entries: None
) -> None:
    nodes = [
        make_oban(**_options(name="ConfBCron", node=f"tick-{n}", leadership=True)) for n in "abc"
    ]
    evaluated: list[tuple[str, datetime]] = []
    for o in nodes:
        await o.start()
        scheduler = _plugin(o, "scheduler")
        original = scheduler.evaluate

        async def recording(at: datetime, _node: str = o.node, _orig: Any = original) -> Any:
            evaluated.append((_node, at))
            return await _orig(at)

        scheduler.evaluate = recording
    await eventually(lambda: len(_leaders(nodes)) == 1, message="exactly one leader")
    leader = _leaders(nodes)[0]

    now = datetime.now(UTC)
    boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    wait = (boundary - now).total_seconds()
    cron_at = _cron_at(boundary)

    await eventually(
        lambda: _cron_jobs(nodes[0], sql, ConfBMinuteCronWorker, cron_at),
        timeout=wait + 10,
        message=f"the cron job for {cron_at}",
    )
    # Give every node's scheduler time to have woken for this boundary.
    remaining = (boundary + timedelta(seconds=3) - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        await asyncio.sleep(remaining)

    jobs = await _cron_jobs(nodes[0], sql, ConfBMinuteCronWorker, cron_at)
    assert len(jobs) == 1
    assert _leaders(nodes) == [leader]
    at_boundary = [node for node, at in evaluated if _cron_at(at) == cron_at]
    assert at_boundary == [leader]


# ---------------------------------------------------------------------------------------------
# Pruner
# ---------------------------------------------------------------------------------------------


async def _forced(
    oban: Oban, sql: Callable[..., Any], state: str, assignments: str, *values: Any
) -> int:
    job = await oban.enqueue(ConfBRecordWorker.new({"state": state}, queue="confb_idle"))
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
    prunes = spy(pruner_node, "prune_jobs")
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


async def test_pruner_deletes_at_most_limit_jobs_per_run(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    client = make_oban(name="ConfBPruneLimitClient")
    ids = [
        await _insert_job(
            client, sql, engine, state="completed", attempt=1, finished_ago=7000 + 10 * n
        )
        for n in range(5)
    ]
    node = make_oban(
        **_options(
            name="ConfBPruneLimit",
            node="pruner-limit",
            leadership=True,
            pruner={"interval": 3600, "limit": 2},
        )
    )
    prunes = spy(node, "prune_jobs")
    await node.start()

    # The first run happens at start; the next one would be an hour later.
    await eventually(lambda: prunes, message="the first prune run")
    assert prunes == [2]
    # The oldest go first (the later inserts are the older ones).
    assert await _ids(client, sql) == set(ids[:3])

    pruner = _plugin(node, "pruner")
    await pruner.tick()
    assert await _ids(client, sql) == {ids[0]}
    await pruner.tick()
    assert await _ids(client, sql) == set()
    assert prunes == [2, 2, 1]


async def test_only_a_leader_prunes(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    follower = await _start(
        make_oban,
        name="ConfBPruneOnly",
        node="prune-follower",
        leadership=False,
        queues={"confb_idle": 1},
    )
    job_id = await _insert_job(
        follower, sql, engine, state="completed", attempt=1, finished_ago=7200
    )
    ticks = spy(follower, "refresh_producers")
    await _more_calls(ticks, extra=6)  # over a second: five pruner intervals
    assert await _ids(follower, sql) == {job_id}

    # A leader on the same database does prune it.
    await _start(make_oban, name="ConfBPruneOnly", node="prune-leader", leadership=True)

    async def pruned() -> bool:
        return job_id not in await _ids(follower, sql)

    await eventually(pruned, message="the leader prunes the old job")


# ---------------------------------------------------------------------------------------------
# Lifeline
# ---------------------------------------------------------------------------------------------


# How a stopped node marks its producer row expired: a heartbeat older than any real one.
EXPIRED_HEARTBEAT = {"postgres": "-infinity", "sqlite": "0000-01-01 00:00:00.000"}


async def test_job_orphaned_by_a_stopped_node_is_rescued_by_the_leader_and_completed(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    engine: str,
    events: Callable[[str], list[dict[str, Any]]],
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
    job = await a.enqueue(ConfBStuckOnceWorker.new({}))
    await eventually(lambda: job.id in STARTED, message="job running on node a")

    await a.stop()

    # Interrupted locally, reported as orphaned, and left executing for a rescue.
    assert INTERRUPTED == {job.id: "node-a"}
    orphaned = [
        e["orphaned"] for e in events("oban.queue.shutdown") if e["queue"] == "confb_rescue_q"
    ]
    assert orphaned == [[job.id]]
    stuck = await _job(a, job.id)
    assert stuck.state == "executing"
    assert stuck.attempt == 1
    assert stuck.attempted_by is not None and stuck.attempted_by[0] == "node-a"
    expired = await sql(
        a,
        "SELECT updated_at = %s FROM oban_producers "
        "WHERE node = 'node-a' AND queue = 'confb_rescue_q'",
        (EXPIRED_HEARTBEAT[engine],),
    )
    assert [bool(row[0]) for row in expired] == [True], "the producer row is not expired"

    b = make_oban(**_options(name="ConfBRescueB", node="node-b", queues={"confb_rescue_q": 1}))
    await b.start()
    await eventually(lambda: b.is_leader, message="node b leads")

    done = await _wait_state(b, job.id, "completed", timeout=3)
    assert done.meta.get("rescued") == 1
    assert done.attempt == 2
    assert done.attempted_by is not None and done.attempted_by[0] == "node-b"
    assert RAN == {job.id: ["node-b"]}

    async def a_forgotten() -> bool:
        return not await sql(b, "SELECT 1 FROM oban_producers WHERE node = 'node-a'")

    await eventually(a_forgotten, timeout=3, message="the expired producer row cleaned up")


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
    rescues = spy(node, "rescue_jobs")
    await node.start()
    await eventually(lambda: node.is_leader, message="the node leads")

    live = await node.enqueue(ConfBGateWorker.new({}))
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


async def test_job_of_a_dead_producer_is_rescued_at_once_keeping_its_attempt(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    client = make_oban(name="ConfBDeadClient")
    dead = await _insert_producer(client, sql, age=3600)
    # Just started: a timestamp-based rescue (rescue_after = 300 s) would leave it alone.
    job_id = await _insert_job(
        client,
        sql,
        engine,
        state="executing",
        attempt=1,
        attempted_by=["dead-node", dead],
        attempted_ago=0,
    )
    await _start(make_oban, name="ConfBDead", node="rescuer", leadership=True)

    # Prompt: within the heartbeat-trust window (producer max_age, 1 s, counted from the
    # lifeline's first run) plus a couple of lifeline intervals; 4 s leaves room on a busy box.
    found = await _wait_state(client, job_id, "available", timeout=4.0)
    assert found.meta.get("rescued") == 1
    assert found.attempt == 1
    assert found.discarded_at is None


@pytest.mark.parametrize("attempted_by", [["elixir-node"], None], ids=["elixir", "null"])
async def test_job_without_a_producer_row_is_rescued_after_rescue_after(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    engine: str,
    attempted_by: list[str] | None,
) -> None:
    client = make_oban(name="ConfBTimedClient")
    young = await _insert_job(
        client,
        sql,
        engine,
        state="executing",
        attempt=1,
        attempted_by=attempted_by,
        attempted_ago=30,
    )
    old = await _insert_job(
        client,
        sql,
        engine,
        state="executing",
        attempt=1,
        attempted_by=attempted_by,
        attempted_ago=120,
    )
    node = make_oban(
        **_options(name="ConfBTimed", node="timed", leadership=True, lifeline={"rescue_after": 60})
    )
    rescues = spy(node, "rescue_jobs")
    await node.start()

    await _wait_state(client, old, "available", timeout=2.0)
    await _more_calls(rescues, extra=3)
    assert await _state(client, young) == "executing"

    # Once it too started over rescue_after ago, it is rescued.
    await backdate(client, young, "attempted_at", 61)
    await _wait_state(client, young, "available", timeout=2.0)
    for job_id in (young, old):
        found = await _job(client, job_id)
        assert found.meta.get("rescued") == 1
        assert found.attempt == 1


async def test_orphans_and_available_jobs_out_of_attempts_are_discarded(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    client = make_oban(name="ConfBDiscardClient")
    dead = await _insert_producer(client, sql, age=3600)
    exhausted_orphan = await _insert_job(
        client,
        sql,
        engine,
        state="executing",
        attempt=3,
        max_attempts=3,
        attempted_by=["dead-node", dead],
        attempted_ago=5,
    )
    exhausted_available = await _insert_job(
        client, sql, engine, state="available", attempt=2, max_attempts=2, attempted_ago=5
    )
    fresh_available = await _insert_job(
        client, sql, engine, state="available", attempt=1, max_attempts=2
    )

    node = make_oban(**_options(name="ConfBDiscard", node="discarder", leadership=True))
    rescues = spy(node, "rescue_jobs")
    await node.start()

    orphan = await _wait_state(client, exhausted_orphan, "discarded", timeout=2.0)
    assert orphan.discarded_at is not None
    assert orphan.attempt == 3
    assert "rescued" not in orphan.meta, "a discarded orphan was counted as rescued"
    available = await _wait_state(client, exhausted_available, "discarded", timeout=2.0)
    assert available.discarded_at is not None

    await _more_calls(rescues, extra=3)
    assert await _state(client, fresh_available) == "available"


async def test_rescued_job_runs_again_and_completes_exactly_once(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    client = make_oban(name="ConfBRerunClient")
    dead = await _insert_producer(client, sql, age=3600)
    job_id = await _insert_job(
        client,
        sql,
        engine,
        state="executing",
        queue="confb_rerun_q",
        worker_cls=ConfBRescueWorker,
        attempt=1,
        max_attempts=3,
        attempted_by=["dead-node", dead],
        attempted_ago=1,
    )
    node = make_oban(**_options(name="ConfBRerun", node="rerun", queues={"confb_rerun_q": 2}))
    acks = spy(node, "ack_jobs")
    carried = spy(node, "ack_fetch_jobs")  # acks that rode along with a fetch
    await node.start()

    done = await _wait_state(client, job_id, "completed", timeout=5.0)
    assert done.attempt == 2
    assert done.meta.get("rescued") == 1
    assert done.attempted_by is not None and done.attempted_by[0] == "rerun"

    # Later lifeline ticks and fetches leave it alone.
    await _more_calls(spy(node, "rescue_jobs"), extra=3)
    assert RAN == {job_id: ["rerun"]}
    assert await _state(client, job_id) == "completed"
    acked = [job for written in acks for job in written]
    acked += [job for written, _claimed in carried for job in written]
    assert acked == [job_id], "the completion was acked once"


# ---------------------------------------------------------------------------------------------
# Refresher
# ---------------------------------------------------------------------------------------------


async def test_deleted_producer_row_of_a_running_queue_is_restored(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    node = await _start(
        make_oban, name="ConfBRestore", node="restorer", leadership=False, queues={"confb_idle": 1}
    )
    producer = node._producers["confb_idle"]
    assert await _producer_uuids(node, sql) == {producer.uuid}

    deleted = await sql(
        node, "DELETE FROM oban_producers WHERE uuid = %s RETURNING uuid", (producer.uuid,)
    )
    assert [str(row[0]) for row in deleted] == [producer.uuid]

    async def restored() -> bool:
        return producer.uuid in await _producer_uuids(node, sql)

    await eventually(restored, timeout=1.0, message="the producer row restored")
    rows = await sql(
        node, "SELECT node, queue, name FROM oban_producers WHERE uuid = %s", (producer.uuid,)
    )
    assert [tuple(row) for row in rows] == [("restorer", "confb_idle", "ConfBRestore")]


async def test_leader_deletes_stale_producers_without_executing_jobs(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    follower = await _start(
        make_oban,
        name="ConfBTidy",
        node="tidy-follower",
        leadership=False,
        queues={"confb_idle": 1},
    )
    stale = await _insert_producer(follower, sql, age=3600)
    ticks = spy(follower, "refresh_producers")
    await _more_calls(ticks, extra=4)
    assert stale in await _producer_uuids(follower, sql), "a non-leader cleaned up producers"

    leader = await _start(make_oban, name="ConfBTidy", node="tidy-leader", queues={"confb_idle": 1})
    await eventually(lambda: leader.is_leader, message="the second node leads")

    async def gone() -> bool:
        return stale not in await _producer_uuids(follower, sql)

    await eventually(gone, timeout=2.0, message="the stale producer deleted")
    live = {follower._producers["confb_idle"].uuid, leader._producers["confb_idle"].uuid}
    assert await _producer_uuids(follower, sql) == live


async def test_stale_producer_with_executing_jobs_is_kept_until_they_are_rescued(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    # The lifeline runs once at start, then not for an hour (unless ticked by hand).
    node = make_oban(
        **_options(name="ConfBKeeper", node="keeper", leadership=True, lifeline={"interval": 3600})
    )
    rescues = spy(node, "rescue_jobs")
    cleanups = spy(node, "cleanup_producers")
    await node.start()
    await eventually(lambda: rescues, message="the lifeline's first run")
    first_run = time.monotonic()

    # The job first: a busy producer row without it could be cleaned up in between.
    busy = str(uuid.uuid4())
    job_id = await _insert_job(
        node,
        sql,
        engine,
        state="executing",
        attempt=1,
        attempted_by=["dead-node", busy],
        attempted_ago=1,
    )
    await _insert_producer(node, sql, age=3600, ident=busy)
    idle = await _insert_producer(node, sql, age=3600)

    async def idle_gone() -> bool:
        return idle not in await _producer_uuids(node, sql)

    await eventually(idle_gone, timeout=2.0, message="the idle stale producer deleted")
    await _more_calls(cleanups, extra=3)
    assert busy in await _producer_uuids(node, sql)
    assert await _state(node, job_id) == "executing"

    # The lifeline judges by heartbeats only once it has run for a producer max_age (1 s,
    # see Lifeline.tick): before that a stale heartbeat alone rescues nothing.
    await asyncio.sleep(
        max(0.0, first_run + FAST["refresher"]["max_age"] + 0.05 - time.monotonic())
    )
    lifeline = _plugin(node, "lifeline")
    await lifeline.tick()
    assert await _state(node, job_id) == "available"

    async def busy_gone() -> bool:
        return busy not in await _producer_uuids(node, sql)

    await eventually(busy_gone, timeout=2.0, message="the producer deleted after the rescue")


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
        job = await client.enqueue(ConfBRecordWorker.new({}))

        def ran(job_id: int | None = job.id) -> bool:
            return job_id in RAN

        await eventually(
            ran,
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
    held = await oban.enqueue(ConfBRecordWorker.new({}))
    other = await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_other"))
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
        await oban.enqueue(ConfBRecordWorker.new({})),
        await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_other")),
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
    ids = [(await oban.enqueue(ConfBGateWorker.new({}))).id for _ in range(4)]
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

    for bad in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            await oban.scale_queue(queue="confb_q", limit=bad)
    for wrong in (True, 1.5, "3", None):
        with pytest.raises(TypeError, match="limit"):
            # Deliberately not an int: the runtime check is what is tested.
            await oban.scale_queue(queue="confb_q", limit=cast(Any, wrong))
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
    jobs = [await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_new")) for _ in range(3)]
    for job in jobs:
        done = await _wait_state(oban, job.id, "completed")
        assert done.attempted_by is not None and done.attempted_by[0] == "local"

    await oban.stop_queue("confb_new")

    assert oban.check_queue("confb_new") is None
    assert await sql(oban, "SELECT node FROM oban_producers WHERE queue = 'confb_new'") == []
    orphan = await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_new"))
    still_running = await oban.enqueue(ConfBRecordWorker.new({}))
    await _wait_state(oban, still_running.id, "completed")
    await asyncio.sleep(QUIET)
    assert (await _job(oban, orphan.id)).state == "available"


async def test_start_queue_paused_runs_nothing_until_resumed(
    make_oban: Callable[..., Oban],
) -> None:
    oban = await _local(make_oban, confb_q=1)

    await oban.start_queue(queue="confb_new", limit=1, paused=True)

    assert _paused(oban, "confb_new") is True
    job = await oban.enqueue(ConfBRecordWorker.new({}, queue="confb_new"))
    await asyncio.sleep(QUIET)
    assert (await _job(oban, job.id)).state == "available"
    await oban.resume_queue("confb_new")
    await _wait_state(oban, job.id, "completed")


THREADS: dict[int | None, str] = {}


@worker(queue="confb_lazy_q")
class ConfBThreadWorker:
    """A sync worker: it runs in the instance's thread pool, whose thread it records."""

    def process(self, job: Job) -> None:
        THREADS[job.id] = threading.current_thread().name


async def test_start_returns_the_instance(make_oban: Callable[..., Oban]) -> None:
    client = make_oban(name="ConfBStartClient")
    runner = make_oban(name="ConfBStartRunner", queues={"confb_q": 1}, notifier=dict(FAST_POLL))

    assert await client.start() is client
    assert await runner.start() is runner
    assert await runner.start() is runner, "starting a started instance returns it too"
    assert runner.check_queue("confb_q") is not None


async def test_start_queue_on_an_instance_started_without_queues_runs_it_until_stop(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    engine: str,
    events: Callable[[str], list[dict[str, Any]]],
) -> None:
    client = await _start(make_oban, name="ConfBLazy", node="lazy")
    assert client.check_queue("confb_lazy_q") is None

    await client.start_queue(queue="confb_lazy_q", limit=2)

    info = client.check_queue("confb_lazy_q")
    assert info is not None and info.limit == 2 and info.node == "lazy"
    expected_status = {"postgres": "listening", "sqlite": "local"}[engine]
    await eventually(lambda: client.notifier_status == expected_status, message="notifier")
    now = await client.enqueue(ConfBThreadWorker.new({}))
    later = await client.enqueue(ConfBThreadWorker.new({}, scheduled_in=0.3))  # the stager's
    for job in (now, later):
        done = await _wait_state(client, job.id, "completed")
        assert done.attempted_by is not None and done.attempted_by[0] == "lazy"
        assert THREADS[job.id].startswith("oban-ConfBLazy"), THREADS[job.id]
    query = "SELECT updated_at FROM oban_producers WHERE queue = 'confb_lazy_q'"
    beat = await sql(client, query)

    async def heartbeat() -> bool:
        return bool(await sql(client, query) != beat)

    await eventually(heartbeat, message="the refresher beats for the new queue")

    await client.stop()

    assert client.check_queue("confb_lazy_q") is None
    assert [e["queue"] for e in events("oban.queue.shutdown")] == ["confb_lazy_q"]
    assert await sql(client, "SELECT uuid FROM oban_producers") == []
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("oban-")]
    assert left == [], f"stop() left tasks running: {left}"


async def test_queue_control_rejects_wrong_types_with_type_error_naming_the_option(
    make_oban: Callable[..., Oban],
) -> None:
    oban = await _local(make_oban, confb_q=1)
    wrong: list[tuple[str, dict[str, Any], str]] = [
        ("start_queue", {"queue": 1, "limit": 1}, "queue"),
        ("start_queue", {"queue": "confb_new", "limit": "3"}, "limit"),
        ("start_queue", {"queue": "confb_new", "limit": 1, "paused": "yes"}, "paused"),
        ("start_queue", {"queue": "confb_new", "limit": 1, "node": 7}, "node"),
        ("start_queue", {"queue": "confb_new", "limit": 1, "debounce_interval": "1"}, "debounce"),
        ("scale_queue", {"queue": None, "limit": 2}, "queue"),
        ("scale_queue", {"queue": "confb_q", "limit": 2.0}, "limit"),
        ("scale_queue", {"queue": "confb_q", "limit": 2, "node": b"local"}, "node"),
        ("stop_queue", {"queue": ["confb_q"]}, "queue"),
        ("stop_queue", {"queue": "confb_q", "node": 1}, "node"),
        ("check_queue", {"queue": 1}, "queue"),
    ]
    for method, kwargs, option in wrong:
        with pytest.raises(TypeError, match=option):
            result = getattr(oban, method)(**kwargs)
            if asyncio.iscoroutine(result):
                await result

    bad_values: list[tuple[str, dict[str, Any], str]] = [
        ("start_queue", {"queue": " ", "limit": 1}, "queue"),
        ("start_queue", {"queue": "confb_new", "limit": 0}, "limit"),
        ("start_queue", {"queue": "confb_new", "limit": 1, "debounce_interval": -1}, "debounce"),
        (
            "start_queue",
            {"queue": "confb_new", "limit": 1, "pasued": True},
            "did you mean 'paused'",
        ),
        ("scale_queue", {"queue": "confb_q", "limit": -1}, "limit"),
        ("scale_queue", {"queue": "confb_q", "limit": 2, "limt": 3}, "did you mean 'limit'"),
        ("stop_queue", {"queue": ""}, "queue"),
    ]
    for method, kwargs, match in bad_values:
        with pytest.raises(ValueError, match=match):
            await getattr(oban, method)(**kwargs)

    await asyncio.sleep(QUIET)
    assert _limit(oban, "confb_q") == 1
    assert oban.check_queue("confb_new") is None


async def test_start_signal_with_a_wrong_option_starts_nothing(
    make_oban: Callable[..., Oban],
) -> None:
    a, b = await _two_nodes(make_oban, same_name=True)
    bad: list[dict[str, Any]] = [
        {"limit": "2"},
        {"limit": 2, "paused": "no"},
        {"limit": 2, "global_limit": 5},
    ]

    for options in bad:
        await a._signal({"action": "start", "queue": "confb_sig", **options}, "node-b")

    await asyncio.sleep(QUIET)
    assert b.check_queue("confb_sig") is None
    await a._signal({"action": "start", "queue": "confb_sig", "limit": 2}, "node-b")
    await eventually(lambda: _limit(b, "confb_sig") == 2, message="a valid signal starts it")
    assert a.check_queue("confb_sig") is None


async def test_job_of_an_unknown_worker_logs_an_error_naming_it_and_is_retried(
    make_oban: Callable[..., Oban], caplog: pytest.LogCaptureFixture
) -> None:
    oban = await _local(make_oban, confb_q=1)
    missing = f"tests.confb_missing_{uuid.uuid4().hex}.Worker"
    caplog.set_level(logging.ERROR, logger="oban.executor")

    job = await oban.enqueue(Job(missing, queue="confb_q", max_attempts=2))

    done = await _wait_state(oban, job.id, "retryable")
    assert "WorkerResolutionError" in str(done.errors[-1])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and missing in r.message]
    assert len(errors) == 1, caplog.text


async def test_cancel_job_of_a_running_job_on_the_same_instance_cancels_it_and_stops_its_task(
    make_oban: Callable[..., Oban],
) -> None:
    oban = await _local(make_oban, confb_q=1)
    job = await oban.enqueue(ConfBCancelWorker.new({}))
    await eventually(lambda: job.id in STARTED, message="job running")
    assert (await _job(oban, job.id)).state == "executing"

    assert await oban.cancel_job(job) == 1

    _assert_cancelled_while_executing(await _job(oban, job.id))  # written at once
    await eventually(lambda: job.id in CANCEL_SEEN, timeout=2, message="task stopped")
    assert CANCEL_SEEN == {job.id: "local"}
    await eventually(lambda: _running(oban, "confb_q") == [], timeout=2, message="slot freed")
    _assert_cancelled_while_executing(await _job(oban, job.id))


# ---------------------------------------------------------------------------------------------
# Queue control across instances of one process (docs/engines.md: "every instance in the
# calling process" on SQLite, every node on PostgreSQL). Signals are addressed to
# f"{name}.{node}", so the tests that target one node give both instances the same name.
# ---------------------------------------------------------------------------------------------


FAST_POLL = {"poll_interval": 0.2}


def _assert_cancelled_while_executing(done: Job) -> None:
    """``done`` was cancelled while it ran its first attempt, which never finished."""
    assert done.id not in RAN
    assert done.state == "cancelled"
    assert done.cancelled_at is not None
    assert done.completed_at is None
    assert done.attempt == 1
    assert [(e["attempt"], e["error"]) for e in done.errors] == [(1, "cancelled while executing")]


def _running(oban: Oban, queue: str) -> list[int]:
    info = oban.check_queue(queue)
    assert info is not None, f"{oban.node} does not run {queue}"
    return info.running


async def _two_nodes(
    make_oban: Callable[..., Oban],
    *,
    same_name: bool = False,
    queues: dict[str, Any] | None = None,
) -> tuple[Oban, Oban]:
    queues = queues or {"confb_q": 1}
    a = make_oban(
        name="ConfBQC" if same_name else "ConfBQC-A",
        node="node-a",
        queues=dict(queues),
        notifier=dict(FAST_POLL),
    )
    b = make_oban(
        name="ConfBQC" if same_name else "ConfBQC-B",
        node="node-b",
        queues=dict(queues),
        notifier=dict(FAST_POLL),
    )
    await a.start()
    await b.start()
    return a, b


async def _states(oban: Oban, ids: Sequence[int | None]) -> Counter[str]:
    return Counter([str((await _job(oban, job_id)).state) for job_id in ids])


async def _done(oban: Oban, ids: Sequence[int | None]) -> bool:
    return await _states(oban, ids) == Counter({"completed": len(ids)})


async def test_pause_queue_sent_from_another_instance_pauses_it_there(
    make_oban: Callable[..., Oban],
) -> None:
    a, b = await _two_nodes(make_oban)

    await b.pause_queue("confb_q")

    await eventually(lambda: _paused(a, "confb_q"), message="node a paused by node b's signal")
    assert _paused(b, "confb_q") is True


async def test_scale_queue_everywhere_raises_the_limit_and_concurrency(
    make_oban: Callable[..., Oban],
) -> None:
    a, b = await _two_nodes(make_oban)
    ids = [(await a.enqueue(ConfBGateWorker.new({}))).id for _ in range(6)]
    await eventually(lambda: len(STARTED) == 2, message="one job per node running")
    await asyncio.sleep(QUIET)
    assert len(STARTED) == 2, "a limit of 1 per node ran more than 2 jobs"

    await a.scale_queue(queue="confb_q", limit=3)

    assert _limit(a, "confb_q") == 3
    await eventually(lambda: _limit(b, "confb_q") == 3, message="node b scaled")
    await eventually(lambda: len(STARTED) == 6, message="6 jobs running after scaling")
    assert Counter(STARTED.values()) == Counter({"node-a": 3, "node-b": 3})

    GATE.set()
    await eventually(lambda: _done(a, ids), message="all scaled jobs completed")
    assert len(RAN) == 6


async def test_scale_queue_on_one_node_changes_only_that_node(
    make_oban: Callable[..., Oban],
) -> None:
    a, b = await _two_nodes(make_oban, same_name=True)

    await a.scale_queue(queue="confb_q", limit=4, node="node-b")

    await eventually(lambda: _limit(b, "confb_q") == 4, message="node b scaled")
    assert _limit(a, "confb_q") == 1
    ids = [(await a.enqueue(ConfBGateWorker.new({}))).id for _ in range(7)]
    await eventually(lambda: len(STARTED) == 5, message="1 + 4 jobs running")
    await asyncio.sleep(QUIET)
    assert Counter(STARTED.values()) == Counter({"node-a": 1, "node-b": 4})

    GATE.set()
    await eventually(lambda: _done(a, ids), message="all jobs completed")


async def test_scale_queue_and_start_queue_reject_a_bad_limit(
    make_oban: Callable[..., Oban],
) -> None:
    a, b = await _two_nodes(make_oban)

    for bad in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            await a.scale_queue(queue="confb_q", limit=bad)
        with pytest.raises(ValueError, match="limit"):
            await a.start_queue(queue="confb_bad", limit=bad)
    for wrong in (True, 1.5, "3", None):
        # Deliberately not an int: the runtime check is what is tested.
        with pytest.raises(TypeError, match="limit"):
            await a.scale_queue(queue="confb_q", limit=cast(Any, wrong))
        with pytest.raises(TypeError, match="limit"):
            await a.start_queue(queue="confb_bad", limit=cast(Any, wrong))

    await asyncio.sleep(QUIET)
    assert _limit(a, "confb_q") == 1
    assert _limit(b, "confb_q") == 1
    assert a.check_queue("confb_bad") is None
    assert b.check_queue("confb_bad") is None


async def test_start_queue_runs_a_new_queue_everywhere_and_stop_queue_removes_it(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    a, b = await _two_nodes(make_oban)
    assert a.check_queue("confb_new") is None

    await a.start_queue(queue="confb_new", limit=2)

    assert _limit(a, "confb_new") == 2
    await eventually(lambda: _limit(b, "confb_new") == 2, message="queue started on node b")
    assert {info.queue for info in b.check_all_queues()} == {"confb_q", "confb_new"}

    async def producer_nodes() -> list[str]:
        rows = await sql(
            a, "SELECT node FROM oban_producers WHERE queue = 'confb_new' ORDER BY node"
        )
        return [row[0] for row in rows]

    async def on_both_nodes() -> bool:
        return await producer_nodes() == ["node-a", "node-b"]

    # A node lists a started queue (check_queue) just before its producer row is written.
    await eventually(on_both_nodes, message="a producer row of the new queue on each node")

    jobs = [await a.enqueue(ConfBRecordWorker.new({}, queue="confb_new")) for _ in range(4)]
    for job in jobs:
        done = await _wait_state(a, job.id, "completed")
        assert done.attempted_by is not None
        assert done.attempted_by[0] in ("node-a", "node-b")

    await a.stop_queue("confb_new")

    assert a.check_queue("confb_new") is None
    await eventually(lambda: b.check_queue("confb_new") is None, message="queue stopped on b")

    async def no_producers() -> bool:
        return not await sql(a, "SELECT 1 FROM oban_producers WHERE queue = 'confb_new'")

    await eventually(no_producers, message="producer rows of the stopped queue removed")
    orphan = await a.enqueue(ConfBRecordWorker.new({}, queue="confb_new"))
    still_running = await a.enqueue(ConfBRecordWorker.new({}))
    await _wait_state(a, still_running.id, "completed")
    await asyncio.sleep(QUIET)
    assert (await _job(a, orphan.id)).state == "available"


async def test_start_queue_on_one_node_only(make_oban: Callable[..., Oban]) -> None:
    a, b = await _two_nodes(make_oban, same_name=True)

    await b.start_queue(queue="confb_solo", limit=3, node="node-a")

    await eventually(lambda: _limit(a, "confb_solo") == 3, message="queue started on node a")
    job = await a.enqueue(ConfBRecordWorker.new({}, queue="confb_solo"))
    done = await _wait_state(a, job.id, "completed")
    assert done.attempted_by is not None and done.attempted_by[0] == "node-a"
    assert b.check_queue("confb_solo") is None


async def test_cancel_job_running_on_another_instance_cancels_it_and_that_instance_stops_it(
    make_oban: Callable[..., Oban],
) -> None:
    runner = make_oban(
        name="ConfBQCRunner", node="node-b", queues={"confb_q": 1}, notifier=dict(FAST_POLL)
    )
    await runner.start()
    client = make_oban(name="ConfBQCClient", node="node-client")

    job = await client.enqueue(ConfBCancelWorker.new({}))
    await eventually(lambda: job.id in STARTED, message="job running on node b")
    assert (await _job(client, job.id)).state == "executing"

    assert await client.cancel_job(job) == 1

    _assert_cancelled_while_executing(await _job(client, job.id))  # written at once
    await eventually(lambda: job.id in CANCEL_SEEN, timeout=2, message="node b stopped it")
    assert CANCEL_SEEN == {job.id: "node-b"}
    await eventually(lambda: _running(runner, "confb_q") == [], timeout=2, message="slot freed")
    _assert_cancelled_while_executing(await _job(client, job.id))


async def test_stop_waits_for_a_short_job_and_removes_the_node_producers(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    events: Callable[[str], list[dict[str, Any]]],
) -> None:
    a = make_oban(
        name="ConfBStopA",
        node="node-a",
        queues={"confb_q": 1, "confb_other": 1},
        shutdown_grace_period=5.0,
    )
    await a.start()
    rows = await sql(a, "SELECT queue FROM oban_producers WHERE node = 'node-a' ORDER BY queue")
    assert [row[0] for row in rows] == ["confb_other", "confb_q"]
    job = await a.enqueue(ConfBSleepWorker.new({"sleep": 0.5}))
    await eventually(lambda: job.id in STARTED, message="job started")

    await a.stop()

    assert RAN == {job.id: ["node-a"]}
    assert (await _job(a, job.id)).state == "completed"
    shutdowns = {e["queue"]: e["orphaned"] for e in events("oban.queue.shutdown")}
    assert shutdowns == {"confb_q": [], "confb_other": []}
    assert await sql(a, "SELECT uuid FROM oban_producers WHERE node = 'node-a'") == []


# ---------------------------------------------------------------------------------------------
# Signals from a client instance to a running one. PostgreSQL only: its first step pauses the
# runner and then checks that a job enqueued right after is not fetched, which fails now and
# then on SQLite (a fetch already in flight when the pause lands still claims the new job; on
# SQLite a busy retry makes that window wide). The other signals are tested on both engines
# above.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["postgres"])
async def test_postgres_queue_signals_reach_other_instances_and_cancel_stops_a_job_there(
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
    held = await other.enqueue(ConfBRecordWorker.new({}))
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

    # cancel a job running on the runner: cancelled at once, stopped there
    job = await other.enqueue(ConfBCancelWorker.new({}))
    await eventually(lambda: job.id in STARTED, message="job running on the runner")
    assert await other.cancel_job(job) == 1
    _assert_cancelled_while_executing(await _job(other, job.id))
    await eventually(lambda: job.id in CANCEL_SEEN, timeout=2, message="the runner stopped it")
    assert CANCEL_SEEN == {job.id: "runner"}
    await eventually(lambda: _running(runner, "confb_q") == [], timeout=2, message="slot freed")


async def test_after_a_database_outage_heartbeats_are_not_trusted_until_nodes_could_beat(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    # The lifeline is ticked by hand; producer max_age is 1 s.
    node = make_oban(
        **_options(name="ConfBOutage", node="outage", leadership=True, lifeline={"interval": 3600})
    )
    await node.start()
    lifeline = _plugin(node, "lifeline")
    await eventually(lambda: node.is_leader, message="the node leads")
    await lifeline.stop()  # no tick of its own from here on (a database up all along makes
    # heartbeats trusted at once: its first tick would rescue the job below)

    # An old heartbeat: the job would be an orphan if the database had been up all along.
    quiet = str(uuid.uuid4())
    job_id = await _insert_job(
        node,
        sql,
        engine,
        state="executing",
        attempt=1,
        attempted_by=["quiet", quiet],
        attempted_ago=5,
    )
    await _insert_producer(node, sql, node="quiet", age=5, ident=quiet)

    # The database "goes away" for the lifeline: its query fails.
    await sql(node, "ALTER TABLE oban_producers RENAME TO oban_producers_away")
    with pytest.raises(Exception):
        await lifeline.tick()
    await sql(node, "ALTER TABLE oban_producers_away RENAME TO oban_producers")

    # Right after the outage the old heartbeat proves nothing: no rescue...
    await lifeline.tick()
    assert await _state(node, job_id) == "executing"

    # ...and once the database has been up for a whole max_age, it does.
    async def rescued_by_a_tick() -> bool:
        await lifeline.tick()
        return await _state(node, job_id) == "available"

    await eventually(rescued_by_a_tick, timeout=3.0, message="rescued after the window")


# Pause and resume across nodes: a node reports a queue paused only once no fetch that began
# before the pause is still in flight, so a job enqueued after every node reports paused is
# claimed by nobody until a resume.


async def test_pause_queue_pauses_every_node_and_resume_runs_pending_jobs(
    make_oban: Callable[..., Oban],
) -> None:
    a, b = await _two_nodes(make_oban)

    await a.pause_queue("confb_q")

    assert _paused(a, "confb_q") is True
    await eventually(lambda: _paused(b, "confb_q"), message="node b paused through NOTIFY")
    job = await a.enqueue(ConfBRecordWorker.new())
    await asyncio.sleep(QUIET)  # several poll intervals: nobody may fetch it
    assert (await _job(a, job.id)).state == "available"
    assert job.id not in RAN

    await a.resume_queue("confb_q")

    assert _paused(a, "confb_q") is False
    await eventually(lambda: _paused(b, "confb_q") is False, message="node b resumed")
    done = await _wait_state(a, job.id, "completed")
    assert done.attempted_by[0] in ("node-a", "node-b")
    assert RAN[job.id] == [done.attempted_by[0]]


async def test_targeted_pause_and_resume_reach_only_the_named_node(
    make_oban: Callable[..., Oban],
) -> None:
    a, b = await _two_nodes(make_oban, same_name=True, queues={"confb_q": 2})

    await a.pause_queue("confb_q", node="node-b")

    await eventually(lambda: _paused(b, "confb_q"), message="node b paused")
    assert _paused(a, "confb_q") is False
    jobs = [await a.enqueue(ConfBRecordWorker.new()) for _ in range(4)]
    for job in jobs:
        done = await _wait_state(a, job.id, "completed")
        assert done.attempted_by[0] == "node-a", "a paused node fetched a job"
    assert _paused(a, "confb_q") is False
    assert _paused(b, "confb_q") is True

    # Now pause a only, and resume b only: the jobs must move to b.
    await b.pause_queue("confb_q", node="node-a")
    await eventually(lambda: _paused(a, "confb_q"), message="node a paused")
    await a.resume_queue("confb_q", node="node-b")
    await eventually(lambda: _paused(b, "confb_q") is False, message="node b resumed")
    assert _paused(a, "confb_q") is True

    later = [await a.enqueue(ConfBRecordWorker.new()) for _ in range(3)]
    for job in later:
        done = await _wait_state(a, job.id, "completed")
        assert done.attempted_by[0] == "node-b"


async def test_pause_all_and_resume_all_queues_on_every_node(
    make_oban: Callable[..., Oban],
) -> None:
    a, b = await _two_nodes(make_oban, queues={"confb_q": 1, "confb_other": 1})

    await a.pause_all_queues()

    def all_paused() -> bool:
        return all(_paused(o, q) for o in (a, b) for q in ("confb_q", "confb_other"))

    await eventually(all_paused, message="every queue on every node paused")
    jobs = [
        await a.enqueue(ConfBRecordWorker.new()),
        await a.enqueue(ConfBRecordWorker.new(queue="confb_other")),
    ]
    ids = [job.id for job in jobs]
    await asyncio.sleep(QUIET)
    assert [(await _job(a, job_id)).state for job_id in ids] == ["available", "available"]

    await b.resume_all_queues()

    def none_paused() -> bool:
        return not any(_paused(o, q) for o in (a, b) for q in ("confb_q", "confb_other"))

    await eventually(none_paused, message="every queue on every node resumed")
    for job in jobs:
        await _wait_state(a, job.id, "completed")
