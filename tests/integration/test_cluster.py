"""Cluster behaviour against a real PostgreSQL: leadership, cron, pruning, rescue, refreshing.

Several ``Oban`` instances run on one test schema with distinct ``node`` names; instances that
must compete for leadership share the same ``name``. Intervals are short (a 1 s lease,
0.2 s lifeline/refresher/pruner ticks) so the file runs quickly, except for one test that
waits for a real minute boundary.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from oban import Job, Oban, worker
from oban._looper import Looper
from oban.decorators import cron_entries
from tests.helpers import eventually

# ---------------------------------------------------------------------------------------------
# Workers and cron entries (module level: workers are registered by module.QualName)
# ---------------------------------------------------------------------------------------------

RUNS: Counter[int] = Counter()


@worker(queue="cluster_rescue_q", max_attempts=3)
class ClusterRescueWorker:
    async def process(self, job: Job) -> Any:
        RUNS[job.id] += 1  # type: ignore[index]
        return None


@worker(queue="cluster_plain_q")
class ClusterPlainWorker:
    async def process(self, job: Job) -> Any:
        return None


@worker(queue="cluster_cron_q", oban="ClusterCron", cron="* * * * *")
class ClusterMinuteCronWorker:
    async def process(self, job: Job) -> Any:
        return None


@worker(
    queue="cluster_cron_tz_q",
    oban="ClusterCronTZ",
    cron={"expr": "0 9 * * *", "timezone": "America/New_York"},
)
class ClusterNewYorkCronWorker:
    async def process(self, job: Job) -> Any:
        return None


# The entries above live in a global list the scheduler of every instance reads. Take them
# out at once and put them back only while this module's tests run.
_CLUSTER_CRON = [
    entry
    for entry in cron_entries
    if entry.worker in (ClusterMinuteCronWorker, ClusterNewYorkCronWorker)
]
for _entry in _CLUSTER_CRON:
    cron_entries.remove(_entry)


@pytest.fixture(scope="module", autouse=True)
def _cluster_cron_entries() -> Iterator[None]:
    assert len(_CLUSTER_CRON) == 2, "the module's two cron entries were not registered"
    cron_entries.extend(_CLUSTER_CRON)
    try:
        yield
    finally:
        for entry in _CLUSTER_CRON:
            while entry in cron_entries:
                cron_entries.remove(entry)


@pytest.fixture(autouse=True)
def _clean_runs() -> None:
    RUNS.clear()


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

FAST: dict[str, Any] = {
    "leader": {"interval": 1},
    "lifeline": {"interval": 0.2, "rescue_after": 300},
    "refresher": {"interval": 0.2, "max_age": 1},
    "pruner": {"interval": 0.2, "max_age": 60},
}


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
    """Record the results of every finished call of ``instance._engine.<method>``.

    The call still goes to the real database; only its completion is counted.
    """
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
    """Wait until each spy has seen ``extra`` more finished calls than it has now."""
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


async def _leader_rows(sql: Callable[..., Any]) -> list[tuple[Any, ...]]:
    return await sql("SELECT name, node FROM oban_leaders ORDER BY name")


async def _insert_job(
    sql: Callable[..., Any],
    *,
    state: str,
    queue: str = "cluster_idle_q",
    worker_name: str | None = None,
    attempt: int = 0,
    max_attempts: int = 3,
    attempted_by: list[str] | None = None,
    attempted_ago: float | None = None,
    inserted_ago: float = 0.0,
    scheduled_in: float = 0.0,
    finished_ago: float | None = None,
) -> int:
    """Insert a job row as another node (or a crash) would have left it."""
    finished_column = {
        "completed": "completed_at",
        "cancelled": "cancelled_at",
        "discarded": "discarded_at",
    }.get(state)
    columns = [
        "state",
        "queue",
        "worker",
        "args",
        "attempt",
        "max_attempts",
        "attempted_by",
        "inserted_at",
        "scheduled_at",
    ]
    values = [
        "%s::oban_job_state",
        "%s",
        "%s",
        "'{}'::jsonb",
        "%s",
        "%s",
        "%s::text[]",
        "timezone('UTC', now()) - make_interval(secs => %s)",
        "timezone('UTC', now()) + make_interval(secs => %s)",
    ]
    params: list[Any] = [
        state,
        queue,
        worker_name or ClusterPlainWorker._worker_name,  # type: ignore[attr-defined]
        attempt,
        max_attempts,
        attempted_by,
        inserted_ago,
        scheduled_in,
    ]
    if attempted_ago is not None:
        columns.append("attempted_at")
        values.append("timezone('UTC', now()) - make_interval(secs => %s)")
        params.append(attempted_ago)
    if finished_column is not None and finished_ago is not None:
        columns.append(finished_column)
        values.append("timezone('UTC', now()) - make_interval(secs => %s)")
        params.append(finished_ago)
    rows = await sql(
        f"INSERT INTO oban_jobs ({', '.join(columns)}) VALUES ({', '.join(values)}) RETURNING id",
        tuple(params),
    )
    return int(rows[0][0])


async def _insert_producer(
    sql: Callable[..., Any],
    *,
    node: str = "dead-node",
    age: float = 3600.0,
    ident: str | None = None,
) -> str:
    """A producer row of another node whose last heartbeat was ``age`` seconds ago."""
    ident = ident or str(uuid.uuid4())
    await sql(
        "INSERT INTO oban_producers (uuid, name, node, queue, meta, started_at, updated_at) "
        "VALUES (%s::uuid, 'Oban', %s, 'cluster_idle_q', '{}', "
        "timezone('UTC', now()) - make_interval(secs => %s), "
        "timezone('UTC', now()) - make_interval(secs => %s))",
        (ident, node, age, age),
    )
    return ident


async def _job_row(sql: Callable[..., Any], job_id: int) -> dict[str, Any] | None:
    rows = await sql(
        "SELECT state::text, attempt, meta, discarded_at, attempted_by "
        "FROM oban_jobs WHERE id = %s",
        (job_id,),
    )
    if not rows:
        return None
    state, attempt, meta, discarded_at, attempted_by = rows[0]
    return {
        "state": state,
        "attempt": attempt,
        "meta": meta or {},
        "discarded_at": discarded_at,
        "attempted_by": attempted_by,
    }


async def _state(sql: Callable[..., Any], job_id: int) -> str | None:
    row = await _job_row(sql, job_id)
    return None if row is None else row["state"]


async def _producer_uuids(sql: Callable[..., Any]) -> set[str]:
    return {str(row[0]) for row in await sql("SELECT uuid FROM oban_producers")}


async def _ids(sql: Callable[..., Any]) -> set[int]:
    return {int(row[0]) for row in await sql("SELECT id FROM oban_jobs")}


# ---------------------------------------------------------------------------------------------
# Leadership
# ---------------------------------------------------------------------------------------------


async def test_exactly_one_of_three_nodes_leads_and_the_leaders_row_names_it(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [await _start(make_oban, node=f"lead-{n}", queues={"cluster_lead_q": 1}) for n in "abc"]
    await eventually(lambda: len(_leaders(nodes)) == 1, message="exactly one leader")
    leader = _leaders(nodes)[0]

    # Several elections later it is still the one and only leader.
    elections = [_spy(o, "elect_leader") for o in nodes]
    await _more_calls(*elections, extra=3)
    assert _leaders(nodes) == [leader]
    assert await _leader_rows(sql) == [("Oban", leader)]


async def test_leadership_false_and_client_mode_instances_never_lead(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    follower = await _start(
        make_oban, node="no-lead", leadership=False, queues={"cluster_lead_q": 1}
    )
    client = make_oban(node="client-only")
    await client.start()

    refreshes = _spy(follower, "refresh_producers")
    await _more_calls(refreshes, extra=8)  # well over one lease

    assert follower.is_leader is False
    assert client.is_leader is False
    assert await _leader_rows(sql) == []
    assert {p.name for p in follower._plugins}.isdisjoint({"pruner", "lifeline", "scheduler"})


async def test_stopping_the_leader_hands_over_at_once_through_the_resign_notice(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    # A 10 s lease: a prompt takeover can only come from the resign notification.
    nodes = [
        await _start(
            make_oban, node=f"resign-{n}", queues={"cluster_lead_q": 1}, leader={"interval": 10}
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
    await eventually(lambda: _leader_rows(sql), timeout=1.0, message="the new leader's row")
    assert await _leader_rows(sql) == [("Oban", new)]


async def test_a_leader_that_vanishes_without_resigning_is_replaced_after_its_lease(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [
        await _start(make_oban, node=f"vanish-{n}", queues={"cluster_lead_q": 1}) for n in "abc"
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
    assert await _leader_rows(sql) == [("Oban", new)]


async def test_leadership_is_dropped_when_elections_fail_and_regained_after(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [await _start(make_oban, node=f"fail-{n}", queues={"cluster_lead_q": 1}) for n in "ab"]
    await eventually(lambda: len(_leaders(nodes)) == 1, message="a first leader")

    await sql("ALTER TABLE oban_leaders RENAME TO oban_leaders_away")
    try:
        await eventually(
            lambda: _leaders(nodes) == [], timeout=2.0, message="no leader while elections fail"
        )
    finally:
        await sql("ALTER TABLE oban_leaders_away RENAME TO oban_leaders")

    await eventually(
        lambda: len(_leaders(nodes)) == 1, timeout=2.5, message="a leader once elections work"
    )
    assert await _leader_rows(sql) == [("Oban", _leaders(nodes)[0])]


async def test_leader_only_work_runs_on_the_leader_alone(
    make_oban: Callable[..., Oban],
) -> None:
    nodes = [make_oban(**_options(node=f"only-{n}", queues={"cluster_lead_q": 1})) for n in "abc"]
    spies = {
        o.node: {name: _spy(o, name) for name in ("prune_jobs", "rescue_jobs", "cleanup_producers")}
        for o in nodes
    }
    for o in nodes:
        await o.start()
    await eventually(lambda: len(_leaders(nodes)) == 1, message="exactly one leader")
    leader = _leaders(nodes)[0]

    await _more_calls(*spies[leader].values(), extra=3)
    assert _leaders(nodes) == [leader]
    for node, calls in spies.items():
        if node != leader:
            assert {name: len(c) for name, c in calls.items()} == {
                "prune_jobs": 0,
                "rescue_jobs": 0,
                "cleanup_producers": 0,
            }, f"follower {node} did leader-only work"


# ---------------------------------------------------------------------------------------------
# Cron
# ---------------------------------------------------------------------------------------------


def _cron_at(minute: datetime) -> str:
    return minute.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00Z")


async def _cron_jobs(sql: Callable[..., Any], worker_cls: Any, cron_at: str) -> list[Any]:
    return await sql(
        "SELECT id, queue, state::text, meta FROM oban_jobs "
        "WHERE worker = %s AND meta->>'cron_at' = %s ORDER BY id",
        (worker_cls._worker_name, cron_at),
    )


async def test_concurrent_evaluations_of_one_minute_insert_one_job(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [
        await _start(make_oban, name="ClusterCron", node=f"cron-{n}", leadership=True)
        for n in "abc"
    ]
    schedulers = [_plugin(o, "scheduler") for o in nodes]
    minute = datetime(2030, 1, 15, 14, 7, 31, tzinfo=UTC)

    results = await asyncio.gather(*(s.evaluate(minute) for s in schedulers))

    rows = await _cron_jobs(sql, ClusterMinuteCronWorker, "2030-01-15T14:07:00Z")
    assert len(rows) == 1
    job_id, queue, state, meta = rows[0]
    assert sorted(i for ids in results for i in ids) == [job_id]
    assert queue == "cluster_cron_q"
    assert state == "available"
    assert meta["cron"] is True
    assert meta["cron_expr"] == "* * * * *"
    assert re.fullmatch(r"[0-9a-f]{8}", meta["cron_name"])
    assert meta["cron_at"] == "2030-01-15T14:07:00Z"

    # Another minute is another slot.
    await asyncio.gather(*(s.evaluate(minute + timedelta(minutes=1)) for s in schedulers))
    later = await _cron_jobs(sql, ClusterMinuteCronWorker, "2030-01-15T14:08:00Z")
    assert len(later) == 1
    assert later[0][3]["cron_name"] == meta["cron_name"]
    assert len(await _cron_jobs(sql, ClusterMinuteCronWorker, "2030-01-15T14:07:00Z")) == 1


async def test_cron_entry_with_a_timezone_is_due_at_its_local_time(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    node = await _start(make_oban, name="ClusterCronTZ", node="cron-tz", leadership=True)
    scheduler = _plugin(node, "scheduler")

    # 09:00 in New York is 14:00 UTC in January (EST) and 13:00 UTC in July (EDT).
    assert await scheduler.evaluate(datetime(2031, 1, 15, 9, 0, tzinfo=UTC)) == []
    assert await scheduler.evaluate(datetime(2031, 1, 15, 13, 0, tzinfo=UTC)) == []
    january = await scheduler.evaluate(datetime(2031, 1, 15, 14, 0, tzinfo=UTC))
    assert len(january) == 1
    assert await scheduler.evaluate(datetime(2031, 7, 15, 14, 0, tzinfo=UTC)) == []
    july = await scheduler.evaluate(datetime(2031, 7, 15, 13, 0, tzinfo=UTC))
    assert len(july) == 1

    rows = await _cron_jobs(sql, ClusterNewYorkCronWorker, "2031-01-15T14:00:00Z")
    assert [r[0] for r in rows] == january
    assert rows[0][3]["cron_expr"] == "0 9 * * *"
    all_rows = await sql(
        "SELECT count(*) FROM oban_jobs WHERE worker = %s",
        (ClusterNewYorkCronWorker._worker_name,),  # type: ignore[attr-defined]
    )
    assert all_rows == [(2,)]


def test_invalid_cron_expression_fails_at_decoration_naming_the_field() -> None:
    before = list(cron_entries)
    with pytest.raises(ValueError, match=r"minute") as info:

        @worker(queue="cluster_bad_cron_q", cron="61 * * * *")
        class ClusterBadCronWorker:
            async def process(self, job: Job) -> Any:
                return None

    assert "61" in str(info.value)
    assert cron_entries == before


@pytest.mark.timeout(120)
async def test_real_minute_boundary_inserts_one_job_by_the_leader_only(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    nodes = [
        make_oban(**_options(name="ClusterCron", node=f"tick-{n}", leadership=True)) for n in "abc"
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

    rows = await eventually(
        lambda: _cron_jobs(sql, ClusterMinuteCronWorker, cron_at),
        timeout=wait + 10,
        message=f"the cron job for {cron_at}",
    )
    # Give every node's scheduler time to have woken for this boundary.
    remaining = (boundary + timedelta(seconds=3) - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        await asyncio.sleep(remaining)

    rows = await _cron_jobs(sql, ClusterMinuteCronWorker, cron_at)
    assert len(rows) == 1
    assert _leaders(nodes) == [leader]
    at_boundary = [node for node, at in evaluated if _cron_at(at) == cron_at]
    assert at_boundary == [leader]


# ---------------------------------------------------------------------------------------------
# Pruner
# ---------------------------------------------------------------------------------------------


async def test_pruner_deletes_old_finished_jobs_and_keeps_everything_else(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    old, hours = 7200.0, 7200.0
    doomed = {
        await _insert_job(sql, state=state, attempt=1, finished_ago=old, inserted_ago=old)
        for state in ("completed", "cancelled", "discarded")
    }
    kept = {
        # Finished, but younger than max_age (60 s).
        *{
            await _insert_job(sql, state=state, attempt=1, finished_ago=10, inserted_ago=old)
            for state in ("completed", "cancelled", "discarded")
        },
        # Not finished, however old.
        await _insert_job(sql, state="available", inserted_ago=hours, scheduled_in=-hours),
        await _insert_job(sql, state="scheduled", inserted_ago=hours, scheduled_in=3600),
        await _insert_job(
            sql,
            state="executing",
            attempt=1,
            attempted_by=["elsewhere"],
            attempted_ago=hours,
            inserted_ago=hours,
        ),
        await _insert_job(
            sql,
            state="retryable",
            attempt=1,
            attempted_ago=hours,
            inserted_ago=hours,
            scheduled_in=3600,
        ),
    }

    pruner_node = make_oban(
        **_options(
            node="pruner",
            leadership=True,
            lifeline={"interval": 3600, "rescue_after": 10**7},
        )
    )
    prunes = _spy(pruner_node, "prune_jobs")
    await pruner_node.start()
    await eventually(lambda: pruner_node.is_leader, message="the pruning node leads")

    async def doomed_gone() -> bool:
        return not (await _ids(sql)) & doomed

    await eventually(doomed_gone, message="old finished jobs pruned")
    await _more_calls(prunes, extra=3)
    assert await _ids(sql) == kept
    states = {row[0] for row in await sql("SELECT state::text FROM oban_jobs")}
    assert states == {
        "completed",
        "cancelled",
        "discarded",
        "available",
        "scheduled",
        "executing",
        "retryable",
    }


async def test_pruner_deletes_at_most_limit_jobs_per_run(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    ids = [
        await _insert_job(sql, state="completed", attempt=1, finished_ago=7000 + 10 * n)
        for n in range(5)
    ]
    node = make_oban(
        **_options(node="pruner-limit", leadership=True, pruner={"interval": 3600, "limit": 2})
    )
    prunes = _spy(node, "prune_jobs")
    await node.start()

    # The first run happens at start; the next one would be an hour later.
    await eventually(lambda: prunes, message="the first prune run")
    assert prunes == [2]
    # The oldest go first (the later inserts are the older ones).
    assert await _ids(sql) == set(ids[:3])

    pruner = _plugin(node, "pruner")
    await pruner.tick()
    assert await _ids(sql) == {ids[0]}
    await pruner.tick()
    assert await _ids(sql) == set()
    assert prunes == [2, 2, 1]


async def test_only_a_leader_prunes(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    job_id = await _insert_job(sql, state="completed", attempt=1, finished_ago=7200)

    follower = await _start(
        make_oban, node="prune-follower", leadership=False, queues={"cluster_idle_q": 1}
    )
    ticks = _spy(follower, "refresh_producers")
    await _more_calls(ticks, extra=6)  # over a second: five pruner intervals
    assert await _ids(sql) == {job_id}

    # A leader on the same schema does prune it.
    await _start(make_oban, node="prune-leader", leadership=True)

    async def pruned() -> bool:
        return job_id not in await _ids(sql)

    await eventually(pruned, message="the leader prunes the old job")


# ---------------------------------------------------------------------------------------------
# Lifeline
# ---------------------------------------------------------------------------------------------


async def test_job_of_a_dead_producer_is_rescued_at_once_keeping_its_attempt(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    dead = await _insert_producer(sql, age=3600)
    # Just started: a timestamp-based rescue (rescue_after = 300 s) would leave it alone.
    job_id = await _insert_job(
        sql, state="executing", attempt=1, attempted_by=["dead-node", dead], attempted_ago=0
    )
    await _start(make_oban, node="rescuer", leadership=True)

    async def rescued() -> dict[str, Any] | None:
        row = await _job_row(sql, job_id)
        return row if row is not None and row["state"] == "available" else None

    row = await eventually(rescued, timeout=2.0, message="the dead producer's job rescued")
    assert row["meta"].get("rescued") == 1
    assert row["attempt"] == 1
    assert row["discarded_at"] is None


async def test_long_running_job_of_a_live_producer_is_never_rescued(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    node = make_oban(
        **_options(
            node="live",
            queues={"cluster_live_q": 1},
            lifeline={"rescue_after": 0.5},
        )
    )
    rescues = _spy(node, "rescue_jobs")
    await node.start()
    await eventually(lambda: node.is_leader, message="the node leads")
    producer = node._producers["cluster_live_q"]

    live_job = await _insert_job(
        sql,
        state="executing",
        queue="cluster_live_q",
        attempt=1,
        attempted_by=[node.node, producer.uuid],
        attempted_ago=3 * 3600,
    )
    # A control: the same age without a producer row is rescued.
    orphan = await _insert_job(
        sql, state="executing", attempt=1, attempted_by=["elixir-node"], attempted_ago=3 * 3600
    )

    async def orphan_rescued() -> bool:
        return await _state(sql, orphan) == "available"

    await eventually(orphan_rescued, timeout=2.0, message="the control orphan rescued")
    await _more_calls(rescues, extra=5)
    row = await _job_row(sql, live_job)
    assert row is not None
    assert row["state"] == "executing"
    assert "rescued" not in row["meta"]
    assert row["attempt"] == 1


@pytest.mark.parametrize("attempted_by", [["elixir-node"], None], ids=["elixir", "null"])
async def test_job_without_a_producer_row_is_rescued_after_rescue_after(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], attempted_by: list[str] | None
) -> None:
    young = await _insert_job(
        sql, state="executing", attempt=1, attempted_by=attempted_by, attempted_ago=30
    )
    old = await _insert_job(
        sql, state="executing", attempt=1, attempted_by=attempted_by, attempted_ago=120
    )
    node = make_oban(**_options(node="timed", leadership=True, lifeline={"rescue_after": 60}))
    rescues = _spy(node, "rescue_jobs")
    await node.start()

    async def rescued(job_id: int) -> bool:
        return await _state(sql, job_id) == "available"

    await eventually(lambda: rescued(old), timeout=2.0, message="the old orphan rescued")
    await _more_calls(rescues, extra=3)
    assert await _state(sql, young) == "executing"

    # Once it too started over rescue_after ago, it is rescued.
    await sql(
        "UPDATE oban_jobs SET attempted_at = timezone('UTC', now()) - interval '61 seconds' "
        "WHERE id = %s",
        (young,),
    )
    await eventually(lambda: rescued(young), timeout=2.0, message="the young orphan rescued")
    for job_id in (young, old):
        row = await _job_row(sql, job_id)
        assert row is not None
        assert row["meta"].get("rescued") == 1
        assert row["attempt"] == 1


async def test_orphans_and_available_jobs_out_of_attempts_are_discarded(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    dead = await _insert_producer(sql, age=3600)
    exhausted_orphan = await _insert_job(
        sql,
        state="executing",
        attempt=3,
        max_attempts=3,
        attempted_by=["dead-node", dead],
        attempted_ago=5,
    )
    exhausted_available = await _insert_job(
        sql, state="available", attempt=2, max_attempts=2, attempted_ago=5
    )
    fresh_available = await _insert_job(sql, state="available", attempt=1, max_attempts=2)

    node = make_oban(**_options(node="discarder", leadership=True))
    rescues = _spy(node, "rescue_jobs")
    await node.start()

    async def discarded(job_id: int) -> dict[str, Any] | None:
        row = await _job_row(sql, job_id)
        return row if row is not None and row["state"] == "discarded" else None

    orphan_row = await eventually(
        lambda: discarded(exhausted_orphan), timeout=2.0, message="the exhausted orphan discarded"
    )
    assert orphan_row["discarded_at"] is not None
    assert orphan_row["attempt"] == 3
    available_row = await eventually(
        lambda: discarded(exhausted_available),
        timeout=2.0,
        message="the exhausted available job discarded",
    )
    assert available_row["discarded_at"] is not None

    await _more_calls(rescues, extra=3)
    assert await _state(sql, fresh_available) == "available"


async def test_rescued_job_runs_again_and_completes_exactly_once(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    dead = await _insert_producer(sql, age=3600)
    job_id = await _insert_job(
        sql,
        state="executing",
        queue="cluster_rescue_q",
        worker_name=ClusterRescueWorker._worker_name,  # type: ignore[attr-defined]
        attempt=1,
        max_attempts=3,
        attempted_by=["dead-node", dead],
        attempted_ago=1,
    )
    node = make_oban(**_options(node="rerun", queues={"cluster_rescue_q": 2}))
    acks = _spy(node, "ack_jobs")
    await node.start()

    async def completed() -> dict[str, Any] | None:
        row = await _job_row(sql, job_id)
        return row if row is not None and row["state"] == "completed" else None

    row = await eventually(completed, timeout=5.0, message="the rescued job completed")
    assert row["attempt"] == 2
    assert row["meta"].get("rescued") == 1
    assert row["attempted_by"][0] == "rerun"

    # Later lifeline ticks and fetches leave it alone.
    await _more_calls(_spy(node, "rescue_jobs"), extra=3)
    assert RUNS[job_id] == 1
    assert await _state(sql, job_id) == "completed"
    assert acks, "the completion was acked"


# ---------------------------------------------------------------------------------------------
# Refresher
# ---------------------------------------------------------------------------------------------


async def test_deleted_producer_row_of_a_running_queue_is_restored(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    node = await _start(make_oban, node="restorer", leadership=False, queues={"cluster_idle_q": 1})
    producer = node._producers["cluster_idle_q"]
    assert await _producer_uuids(sql) == {producer.uuid}

    deleted = await sql(
        "DELETE FROM oban_producers WHERE uuid = %s::uuid RETURNING uuid::text", (producer.uuid,)
    )
    assert deleted == [(producer.uuid,)]

    async def restored() -> bool:
        return producer.uuid in await _producer_uuids(sql)

    await eventually(restored, timeout=1.0, message="the producer row restored")
    rows = await sql(
        "SELECT node, queue, name FROM oban_producers WHERE uuid = %s::uuid", (producer.uuid,)
    )
    assert rows == [("restorer", "cluster_idle_q", "Oban")]


async def test_leader_deletes_stale_producers_without_executing_jobs(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    follower = await _start(
        make_oban, node="tidy-follower", leadership=False, queues={"cluster_idle_q": 1}
    )
    stale = await _insert_producer(sql, age=3600)
    ticks = _spy(follower, "refresh_producers")
    await _more_calls(ticks, extra=4)
    assert stale in await _producer_uuids(sql), "a non-leader cleaned up producers"

    leader = await _start(make_oban, node="tidy-leader", queues={"cluster_idle_q": 1})
    await eventually(lambda: leader.is_leader, message="the second node leads")

    async def gone() -> bool:
        return stale not in await _producer_uuids(sql)

    await eventually(gone, timeout=2.0, message="the stale producer deleted")
    live = {follower._producers["cluster_idle_q"].uuid, leader._producers["cluster_idle_q"].uuid}
    assert await _producer_uuids(sql) == live


async def test_stale_producer_with_executing_jobs_is_kept_until_they_are_rescued(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    # The lifeline runs once at start, then not for an hour (unless ticked by hand).
    node = make_oban(**_options(node="keeper", leadership=True, lifeline={"interval": 3600}))
    rescues = _spy(node, "rescue_jobs")
    cleanups = _spy(node, "cleanup_producers")
    await node.start()
    await eventually(lambda: rescues, message="the lifeline's first run")

    # The job first: a busy producer row without it could be cleaned up in between.
    busy = str(uuid.uuid4())
    job_id = await _insert_job(
        sql, state="executing", attempt=1, attempted_by=["dead-node", busy], attempted_ago=1
    )
    await _insert_producer(sql, age=3600, ident=busy)
    idle = await _insert_producer(sql, age=3600)

    async def idle_gone() -> bool:
        return idle not in await _producer_uuids(sql)

    await eventually(idle_gone, timeout=2.0, message="the idle stale producer deleted")
    await _more_calls(cleanups, extra=3)
    assert busy in await _producer_uuids(sql)
    assert await _state(sql, job_id) == "executing"

    lifeline: Looper = _plugin(node, "lifeline")

    # Heartbeats are trusted once the database has been reachable for a whole producer
    # max_age since the lifeline started (after a start or an outage every heartbeat is old).
    async def rescued_by_a_tick() -> bool:
        await lifeline.tick()
        return await _state(sql, job_id) == "available"

    await eventually(rescued_by_a_tick, timeout=3.0, message="the job rescued by a tick")

    async def busy_gone() -> bool:
        return busy not in await _producer_uuids(sql)

    await eventually(busy_gone, timeout=2.0, message="the producer deleted after the rescue")


async def test_after_a_database_outage_heartbeats_are_not_trusted_until_nodes_could_beat(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    # The lifeline is ticked by hand; producer max_age is 1 s.
    node = make_oban(**_options(node="outage", leadership=True, lifeline={"interval": 3600}))
    await node.start()
    lifeline: Looper = _plugin(node, "lifeline")
    await eventually(lambda: node.is_leader, message="the node leads")

    # An old heartbeat: the job would be an orphan if the database had been up all along.
    quiet = str(uuid.uuid4())
    job_id = await _insert_job(
        sql, state="executing", attempt=1, attempted_by=["quiet-node", quiet], attempted_ago=5
    )
    await _insert_producer(sql, node="quiet-node", age=5, ident=quiet)

    # The database "goes away" for the lifeline: its query fails.
    await sql("ALTER TABLE oban_producers RENAME TO oban_producers_away")
    with pytest.raises(Exception):
        await lifeline.tick()
    await sql("ALTER TABLE oban_producers_away RENAME TO oban_producers")

    # Right after the outage the old heartbeat proves nothing: no rescue...
    await lifeline.tick()
    assert await _state(sql, job_id) == "executing"

    # ...and once the database has been up for a whole max_age, it does.
    async def rescued_by_a_tick() -> bool:
        await lifeline.tick()
        return await _state(sql, job_id) == "available"

    await eventually(rescued_by_a_tick, timeout=3.0, message="rescued after the window")
