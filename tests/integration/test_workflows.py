"""Workflows (issue 18 item 2) on both engines: build-time validation, release after every
dependency, the fan-in race, the ignore policies and cascades, results, cancel, status and
wait, the pruner, the sweeper behind a missed check, transactional insert."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from oban import Job, Oban, Workflow, _workflows, telemetry
from tests.helpers import eventually, oban_factory
from tests.integration import workflow_workers
from tests.integration.databases import (  # noqa: F401 (fixture)
    Database,
    database_fixture,
    set_state_directly,
)
from tests.integration.workflow_workers import LEDGER, Fail, Gather, Step


@pytest.fixture
async def make(database: Database) -> AsyncIterator[Callable[..., Oban]]:
    LEDGER.clear()
    workflow_workers.BARRIER = None
    async with oban_factory(dsn=database.dsn, prefix=database.prefix) as made:
        yield made


async def node(make: Callable[..., Oban], name: str = "Oban", **options: Any) -> Oban:
    options.setdefault("queues", {"wf": 10})
    options.setdefault("stager", {"interval": 0.05})
    oban = make(name=name, node=f"{name}-node", **options)
    await oban.start()
    return oban


def diamond(**values: Any) -> Workflow:
    return (
        Workflow("diamond")
        .add("a", Step.new({"sleep": 0.01}))
        .add("b", Step.new({"sleep": 0.02}), deps="a")
        .add("c", Step.new({"sleep": 0.01}), deps="a")
        .add("d", Step.new({}), deps=["b", "c"])
    )


def assert_order(workflow_id: str, deps: dict[str, list[str]]) -> None:
    """Every step started after each of its dependencies ended (the ledger's times)."""
    times = {(name, event): at for wid, name, event, at in LEDGER if wid == workflow_id}
    for step, parents in deps.items():
        for parent in parents:
            assert times[parent, "end"] <= times[step, "start"], (step, parent)


# --- building -------------------------------------------------------------------------------


def test_a_workflow_is_checked_as_it_is_built() -> None:
    wf = Workflow().add("a", Step.new({}))
    with pytest.raises(ValueError, match="already has a step named 'a'"):
        wf.add("a", Step.new({}))
    with pytest.raises(ValueError, match="depends on 'zz', which is not in the workflow yet"):
        wf.add("b", Step.new({}), deps=["a", "zz"])
    with pytest.raises(ValueError, match="cannot depend on itself"):
        wf.add("c", Step.new({}), deps="c")
    with pytest.raises(TypeError, match="takes a Job"):
        wf.add("d", {"not": "a job"})  # type: ignore[arg-type]
    other = Workflow().add("x", job := Step.new({}))
    with pytest.raises(ValueError, match="already in workflow"):
        wf.add("x", job)
    assert other.names() == ["x"] and wf.names() == ["a"]


def test_the_meta_is_the_one_oban_pro_writes() -> None:
    wf = diamond()
    a, b, _c, d = wf.jobs
    assert a.meta == {
        "workflow": True,
        "workflow_id": wf.id,
        "name": "a",
        "deps": [],
        "workflow_name": "diamond",
    }
    assert d.meta["deps"] == ["b", "c"] and d.state == "suspended"
    assert a.state == "available" and b.state == "suspended"


def test_a_sub_workflow_becomes_steps_of_the_workflow() -> None:
    sub = Workflow().add("one", Step.new({})).add("two", Step.new({}), deps="one")
    wf = Workflow().add("a", Step.new({})).add_workflow("sub", sub, deps="a")
    wf.add("z", Step.new({}), deps="sub")
    deps = {job.meta["name"]: job.meta["deps"] for job in wf}
    assert deps == {
        "a": [],
        "sub.one": ["a"],
        "sub.two": ["sub.one"],
        "z": ["sub.one", "sub.two"],
    }
    assert {job.meta["workflow_id"] for job in wf} == {wf.id}


def test_an_empty_sub_workflow_stands_for_its_dependencies() -> None:
    """A step that depends on an empty part waits for what the part would have waited for
    (a fan-out over no items still orders what comes after it)."""
    wf = Workflow().add("a", Step.new({})).add_workflow("none", Workflow(), deps="a")
    wf.add("b", Step.new({}), deps="none")
    b = wf.jobs[-1]
    assert b.meta["deps"] == ["a"] and b.state == "suspended"


def test_a_sub_workflow_is_added_whole_or_not_at_all() -> None:
    """A step name that clashes is found before any step of the part is added."""
    sub = Workflow().add("x", Step.new({})).add("y", Step.new({}))
    wf = Workflow().add("s.y", Step.new({}))
    with pytest.raises(ValueError, match=r"already has a step named 's\.y'"):
        wf.add_workflow("s", sub)
    assert wf.names() == ["s.y"]
    wf.add("s", Step.new({}))  # the name is still free


def test_a_sub_workflow_keeps_its_steps_options() -> None:
    """Its steps keep their unique and replace options, and the ignore flags of the workflow
    they were built in (a step ignores what either workflow ignores)."""
    sub = Workflow(ignore_cancelled=True).add(
        "u", Step.new({"n": 1}, unique={"group": "incomplete"}, replace={"scheduled": ["args"]})
    )
    sub.add("v", Step.new({}), deps="u")
    sub.jobs[0].id = 99  # inserted already: it serves as a template
    wf = Workflow(ignore_discarded=True).add("a", Step.new({})).add_workflow("s", sub, deps="a")
    u, v = wf.jobs[1:]
    assert u.id is None and u.state == "suspended"
    u.args["n"] = 2
    u.extra["k"] = 1
    assert sub.jobs[0].args == {"n": 1} and "k" not in sub.jobs[0].extra  # nothing shared
    assert u.unique is not None and "suspended" in u.unique.states
    assert u.replace == {"scheduled": ("args",)}
    for step in (u, v):
        assert step.meta["ignore_cancelled"] is True and step.meta["ignore_discarded"] is True
    assert sub.jobs[0].meta["workflow_id"] == sub.id  # the part as it was


def test_a_waiting_unique_step_must_hold_its_key_while_suspended() -> None:
    """Unique states without suspended would leave a waiting step without its key: a
    duplicate could take it and keep the step from ever being released."""
    states = ["available", "scheduled", "executing", "retryable"]
    wf = Workflow().add("a", Step.new({}))
    with pytest.raises(ValueError, match="Add 'suspended' to unique states"):
        wf.add("b", Step.new({}, unique={"states": states}), deps="a")
    wf.add("c", Step.new({}, unique={"states": states}))  # no deps: never suspended
    wf.add("d", Step.new({}, unique={"states": [*states, "suspended"]}), deps="a")
    sub = Workflow().add("x", Step.new({}, unique={"states": states}))
    with pytest.raises(ValueError, match="Add 'suspended' to unique states"):
        wf.add_workflow("s", sub, deps="a")  # its first step would wait for a
    assert wf.names() == ["a", "c", "d"]


# --- running --------------------------------------------------------------------------------


async def test_a_diamond_runs_in_order(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    workflows = [diamond() for _ in range(10)]
    for wf in workflows:
        inserted = await oban.enqueue_many(wf)
        assert [j.state for j in inserted] == ["available", "suspended", "suspended", "suspended"]
    for wf in workflows:
        status = await wf.wait(timeout=20)
        assert (status.state, status.done, status.counts) == ("completed", True, {"completed": 4})
        assert await wf.status() == status
        assert_order(wf.id, {"b": ["a"], "c": ["a"], "d": ["b", "c"]})


async def test_a_diamond_across_three_nodes(make: Callable[..., Oban]) -> None:
    """Every node runs steps and checks releases; 100 diamonds (PROOF_DIAMONDS), each child
    after its parents, each step once."""
    count = int(os.environ.get("PROOF_DIAMONDS", "100"))
    nodes = [await node(make, name=f"n{i}", queues={"wf": 5}) for i in range(3)]
    client = make(name="client")
    workflows = [diamond() for _ in range(count)]
    for start in range(0, count, 25):
        await client.enqueue_many(job for wf in workflows[start : start + 25] for job in wf)
    for wf in workflows:
        status = await client.wait_for_workflow(wf, timeout=60)
        assert status.state == "completed", status
        assert_order(wf.id, {"b": ["a"], "c": ["a"], "d": ["b", "c"]})
    starts = Counter((wid, name) for wid, name, event, _ in LEDGER if event == "start")
    assert set(starts.values()) == {1} and len(starts) == 4 * count
    ran_on = {job.attempted_by[0] for job in (await client.list_jobs(limit=1000)).jobs}
    assert len(ran_on) >= 2, ran_on
    assert nodes


async def test_fifty_parents_finishing_together_release_their_child_once(
    make: Callable[..., Oban],
) -> None:
    """The fan-in race: 50 parents on 4 nodes end at the same moment (a barrier); whichever
    acks commit last, the child is released, and exactly once. Repeated 10 times
    (PROOF_FANIN_ROUNDS)."""
    nodes = [await node(make, name=f"n{i}", queues={"wf": 20}) for i in range(4)]
    client = make(name="client")
    for _round in range(int(os.environ.get("PROOF_FANIN_ROUNDS", "10"))):
        workflow_workers.BARRIER = asyncio.Event()
        wf = Workflow()
        for i in range(50):
            wf.add(f"p{i}", Step.new({"barrier": True}))
        wf.add("child", Step.new({}), deps=[f"p{i}" for i in range(50)])
        await client.enqueue_many(wf)

        async def parents_waiting(wid: str = wf.id) -> bool:
            started = [n for w, n, e, _ in LEDGER if w == wid and e == "start"]
            return len(started) == 50

        await eventually(parents_waiting, timeout=30, message="every parent to start")
        workflow_workers.BARRIER.set()
        status = await client.wait_for_workflow(wf, timeout=30)
        assert status.counts == {"completed": 51}, status
        child_runs = [1 for w, n, e, _ in LEDGER if w == wf.id and n == "child" and e == "start"]
        assert child_runs == [1]
    assert len(nodes) == 4


async def test_results_of_the_dependencies(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    blob = "z" * 1_000_000
    wf = (
        Workflow()
        .add("count", Step.new({"value": 42}))
        .add("doc", Step.new({"value": {"nested": [1, {"x": None}]}}))
        .add("blob", Step.new({"value": blob}))
        .add("none", Step.new({"value": None}))
        .add("gather", Gather.new({}), deps=["count", "doc", "blob", "none"])
        .add("unrelated", Step.new({"value": "not a dep"}))
    )
    await oban.enqueue_many(wf)
    assert (await oban.wait_for_workflow(wf, timeout=20)).state == "completed"
    (gather,) = (await oban.list_jobs(worker=Gather)).jobs
    assert gather.recorded == {
        "count": 42,
        "doc": {"nested": [1, {"x": None}]},
        "blob": blob,
        "none": None,
    }
    everything = await oban.workflow_results(wf.id)
    assert everything["unrelated"] == "not a dep" and everything["count"] == 42


# --- failures and policies --------------------------------------------------------------------


def chain(wf: Workflow, first: Job, depth: int) -> Workflow:
    wf.add("s0", first)
    for level in range(1, depth + 1):
        wf.add(f"s{level}", Step.new({}), deps=f"s{level - 1}")
    return wf


async def test_a_discarded_step_cancels_everything_after_it(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    events: list[dict[str, Any]] = []
    telemetry.attach("wf-test", ["oban.workflow.release"], lambda _n, meta: events.append(meta))
    wf = chain(Workflow(), Fail.new({}), 5)
    wf.add("free", Step.new({}))
    await oban.enqueue_many(wf)
    try:
        status = await oban.wait_for_workflow(wf, timeout=20)
        # The event follows the cascade's last statement, which a waiter may see commit first.
        await eventually(
            lambda: sum(len(meta["cancelled"]) for meta in events) >= 5,
            message="the release event of every cancelled job",
        )
    finally:
        telemetry.detach("wf-test")
    cancelled = sorted(job_id for meta in events for job_id in meta["cancelled"])
    assert len(cancelled) == 5 and all(meta["workflow_ids"] == [wf.id] for meta in events)
    assert status.counts == {"discarded": 1, "cancelled": 5, "completed": 1}, status
    assert status.state == "cancelled"
    jobs = {j.meta["name"]: j for j in (await oban.list_jobs(limit=100)).jobs}
    assert "upstream job s0 was discarded" in jobs["s1"].errors[-1]["error"]
    assert "upstream job s4 was cancelled" in jobs["s5"].errors[-1]["error"]
    assert not [n for w, n, e, _ in LEDGER if n.startswith("s") and n != "s0"]


async def test_ignore_discarded_runs_the_dependents(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    wf = chain(Workflow(ignore_discarded=True), Fail.new({}), 2)
    await oban.enqueue_many(wf)
    status = await oban.wait_for_workflow(wf, timeout=20)
    assert status.counts == {"discarded": 1, "completed": 2}, status


@pytest.mark.parametrize("ignore", [False, True])
async def test_a_deleted_dependency(make: Callable[..., Oban], ignore: bool) -> None:
    oban = await node(make)
    wf = Workflow(ignore_deleted=ignore)
    wf.add("gone", Step.new({}, scheduled_in=3600)).add("next", Step.new({}), deps="gone")
    gone, following = await oban.enqueue_many(wf)
    await oban.delete_job(gone)
    # no ack announces a delete: the sweeper (leader) settles it
    outcome = await oban.wait_for(following, timeout=10, with_retries=True)
    assert outcome.state == ("completed" if ignore else "cancelled"), outcome
    if not ignore:
        assert "upstream job gone was deleted" in (outcome.error or "")


async def test_a_cancelled_dependency_cancels_and_ignore_cancelled_runs(
    make: Callable[..., Oban],
) -> None:
    oban = await node(make)
    strict = Workflow().add("p", Step.new({}, scheduled_in=3600)).add("c", Step.new({}), deps="p")
    lenient = Workflow(ignore_cancelled=True)
    lenient.add("p", Step.new({}, scheduled_in=3600)).add("c", Step.new({}), deps="p")
    (p1, c1), (p2, c2) = [await oban.enqueue_many(wf) for wf in (strict, lenient)]
    assert await oban.cancel_many_jobs([p1, p2]) == 2
    assert (await oban.wait_for(c1, timeout=10)).state == "cancelled"
    assert (await oban.wait_for(c2, timeout=10)).state == "completed"


async def test_cancel_workflow_midway(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    wf = (
        Workflow()
        .add("slow", Step.new({"sleep": 30}))
        .add("after", Step.new({}), deps="slow")
        .add("later", Step.new({}), deps="after")
    )
    await oban.enqueue_many(wf)
    await eventually(lambda: [1 for _w, n, e, _ in LEDGER if n == "slow"], message="slow starts")
    assert await oban.cancel_workflow(wf) == 3
    status = await oban.wait_for_workflow(wf, timeout=10)
    assert status.counts == {"cancelled": 3}, status
    await asyncio.sleep(0.3)
    assert [n for _w, n, e, _ in LEDGER if e == "start"] == ["slow"]


# --- safety nets ---------------------------------------------------------------------------------


async def test_the_sweeper_releases_what_a_missed_check_left(
    make: Callable[..., Oban], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node dies between its ack and its release check (here: the check is skipped): the
    leader's sweeper releases the child within about a second."""
    oban = await node(make)

    async def skipped(workflow_ids: Any) -> None:
        return None

    monkeypatch.setattr(oban, "_release_workflows", skipped)
    wf = Workflow().add("a", Step.new({})).add("b", Step.new({}), deps="a")
    await oban.enqueue_many(wf)
    status = await oban.wait_for_workflow(wf, timeout=10)
    assert status.counts == {"completed": 2}, status


async def test_the_sweeper_reaches_every_workflow_however_many_jobs_one_suspends(
    make: Callable[..., Oban], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One workflow has more suspended jobs than the sweeper looks at per tick (here 5, its
    parent never runs): another workflow's missed check is still swept up, on a later tick."""
    monkeypatch.setattr(_workflows, "SWEEP_LIMIT", 5)
    oban = make()
    big = Workflow("big").add("p", Step.new({}, queue="nowhere"))
    for i in range(12):
        big.add(f"c{i}", Step.new({}), deps="p")
    await oban.enqueue_many(big)
    small = Workflow("small").add("q", Step.new({})).add("r", Step.new({}), deps="q")
    q, r = await oban.enqueue_many(small)
    assert q.id is not None and r.id is not None
    await set_state_directly(database, q.id, "completed")  # as if its node died before its check
    engine = await oban._ready()
    sweeper = _workflows.Sweeper(engine=engine, is_leader=lambda: True, on_changed=lambda _: None)
    for _ in range(4):  # 14 suspended jobs, 5 a tick: r is reached within 3 ticks
        await sweeper.tick()
    job = await oban.get_job(r.id)
    assert job is not None and job.state == "available"
    assert {
        j.state
        for j in (await oban.list_jobs(limit=100)).jobs
        if j.meta.get("workflow_id") == big.id
    } == {"available", "suspended"}


async def test_a_workflow_inserted_twice_waits_for_every_copy(
    make: Callable[..., Oban], database: Database
) -> None:
    """The same workflow inserted again (a retry after an ambiguous commit, a reused id):
    its steps wait for every job of each dependency's name, never for the first copy
    alone (which had finished here)."""
    oban = make()
    wf = diamond()
    first = await oban.enqueue_many(wf)
    for job in first:
        assert job.id is not None
        await set_state_directly(database, job.id, "completed")
    a, b, c, d = await oban.enqueue_many(wf)
    engine = await oban._ready()

    async def states() -> list[str]:
        await _workflows.release(engine, [wf.id], lambda _: None)
        found = [await oban.get_job(job.id) for job in (a, b, c, d)]  # type: ignore[arg-type]
        return [str(job.state) for job in found if job is not None]

    assert await states() == ["available", "suspended", "suspended", "suspended"]
    assert a.id is not None
    await set_state_directly(database, a.id, "completed")
    assert await states() == ["completed", "available", "available", "suspended"]


async def test_inserted_twice_a_dependency_breaks_on_any_copy_not_ignored(
    make: Callable[..., Oban], database: Database
) -> None:
    """One copy of a dependency discarded, the other cancelled, with ignore_cancelled: the
    discard is not ignored, so the dependents of both inserts are cancelled, saying so."""
    oban = make()
    wf = Workflow(ignore_cancelled=True).add("a", Step.new({})).add("b", Step.new({}), deps="a")
    a1, b1 = [job.id for job in await oban.enqueue_many(wf)]
    a2, b2 = [job.id for job in await oban.enqueue_many(wf)]  # the same jobs, new ids
    await set_state_directly(database, a1, "discarded")
    await set_state_directly(database, a2, "cancelled")
    await _workflows.release(await oban._ready(), [wf.id], lambda _: None)
    for job_id in (b1, b2):
        found = await oban.get_job(job_id)  # type: ignore[arg-type]
        assert found is not None and found.state == "cancelled"
        assert found.errors[-1]["error"] == "cancelled: upstream job a was discarded"


async def test_a_refused_release_holds_back_no_other_workflow(
    make: Callable[..., Oban], database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A row the API would refuse (written by another program): a suspended step whose
    unique states leave out suspended, while a duplicate holds its key. Its release breaks
    the unique index; the other workflows of the same release statement are released
    anyway, and the refused one stays suspended, logged."""
    oban = make()
    holder = await oban.enqueue(Step.new({"k": 1}, unique=True, queue="nowhere"))
    key = holder.meta["uniq_key"]
    stuck = Workflow().add("a", Step.new({})).add("b", Step.new({}), deps="a")
    fine = Workflow().add("q", Step.new({})).add("r", Step.new({}), deps="q")
    a, b = await oban.enqueue_many(stuck)
    q, r = await oban.enqueue_many(fine)
    assert a.id and b.id and q.id and r.id
    await _sql(
        database,
        "UPDATE {t} SET meta = {merge} WHERE id = {b}",
        {"uniq": True, "uniq_key": key, "uniq_bmp": [0, 1, 2, 3, 4, 5, 6]},
        b.id,
    )
    for job_id in (a.id, q.id):
        await set_state_directly(database, job_id, "completed")
    engine = await oban._ready()
    with caplog.at_level("WARNING", logger="oban.workflows"):
        changed = await _workflows.release(engine, sorted([stuck.id, fine.id]), lambda _: None)
    assert [(row[0], row[1]) for row in changed] == [(r.id, "available")]
    assert (await oban.get_job(b.id)).state == "suspended"  # type: ignore[union-attr]
    assert f"release the jobs of workflow {stuck.id}" in caplog.text
    # Refused lately: tried on its own from now on, and not logged again within a minute.
    calls: list[list[str]] = []
    release_before = engine.release_workflows  # type: ignore[attr-defined]

    async def counted(ids: list[str]) -> Any:
        calls.append(list(ids))
        return await release_before(ids)

    engine.release_workflows = counted  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level("WARNING", logger="oban.workflows"):
        await _workflows.release(engine, sorted([stuck.id, fine.id]), lambda _: None)
    assert calls == [[stuck.id], [fine.id]], calls
    assert "release the jobs of workflow" not in caplog.text


async def _sql(database: Database, statement: str, meta: dict[str, Any], job_id: int) -> None:
    """``statement`` with {t} the jobs table, {merge} the row's meta with ``meta`` merged
    in, {b} the job id."""
    encoded = json.dumps(meta)
    if database.postgres:
        text = statement.format(t=f"{database.prefix}.oban_jobs", merge="meta || %s::jsonb", b="%s")
        async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as conn:
            await conn.execute(text, (encoded, job_id))
        return
    text = statement.format(t="oban_jobs", merge="json_patch(meta, ?)", b="?")
    lite = sqlite3.connect(database.dsn.removeprefix("sqlite:///"))
    with lite:
        lite.execute(text, (encoded, job_id))
    lite.close()


async def test_the_pruner_keeps_an_unfinished_workflow(
    make: Callable[..., Oban], database: Database
) -> None:
    oban = await node(make, pruner={"max_age": 0.01, "interval": 0.05})
    wf = Workflow().add("a", Step.new({})).add("b", Step.new({"sleep": 1.0}), deps="a")
    wf.add("c", Step.new({}), deps="b")
    plain = await Step.enqueue({}, meta={"workflow_id": "none", "name": "x"})
    await oban.enqueue_many(wf)
    await eventually(lambda: [1 for _w, n, e, _ in LEDGER if n == "b"], message="b runs")
    await asyncio.sleep(0.5)  # many pruner ticks with a as old enough
    names = {j.meta.get("name") for j in (await oban.list_jobs(limit=100)).jobs}
    assert {"a", "b", "c"} <= names
    assert (await oban.wait_for_workflow(wf, timeout=10)).state == "completed"

    async def pruned() -> bool:
        return (await oban.workflow_status(wf)).total == 0

    await eventually(pruned, timeout=10, message="the finished workflow to be pruned")
    assert await oban.get_job(plain) is None  # plain jobs are pruned as ever


async def test_a_rolled_back_insert_leaves_nothing(
    database: Database, make: Callable[..., Oban]
) -> None:
    oban = make()
    wf = diamond()
    if database.postgres:
        with psycopg.connect(database.dsn) as conn:
            await asyncio.to_thread(_insert_and_roll_back_pg, oban, wf, conn)
    else:
        path = database.dsn.removeprefix("sqlite:///")
        await oban.get_job(1)  # the file is installed
        await asyncio.to_thread(_insert_and_roll_back_sqlite, oban, wf, path)
    assert (await oban.workflow_status(wf)).state == "missing"


def _insert_and_roll_back_pg(oban: Oban, wf: Workflow, conn: psycopg.Connection[Any]) -> None:
    inserted = oban.sync.enqueue_many(wf, conn=conn)
    assert len(inserted) == 4
    conn.rollback()


def _insert_and_roll_back_sqlite(oban: Oban, wf: Workflow, path: str) -> None:
    conn = sqlite3.connect(path)
    try:
        inserted = oban.sync.enqueue_many(wf, conn=conn)
        assert len(inserted) == 4
        conn.rollback()
    finally:
        conn.close()
