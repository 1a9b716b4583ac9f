"""Awaitable results (issue 18 item 1): ``Worker.relay``, ``fn.relay``, ``Oban.wait_for``
and ``await_many`` on both engines, in process and across processes, with the traps of
docs/results.md: a completion before the waiter subscribed, a lost notification, a result
at the timeout, a large result, nested waits, inline mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, JobOutcome, Oban, telemetry, testing
from oban._results import Waiter
from oban.errors import RelayCancelled, RelayDiscard, RelayError, RelayTimeout
from tests.helpers import eventually, oban_factory
from tests.integration.databases import (  # noqa: F401 (fixture)
    Database,
    database_fixture,
    set_state_directly,
)
from tests.integration.relay_workers import (
    Echo,
    Explode,
    FailTwice,
    Refuse,
    SyncEcho,
    Unrecordable,
    multiply,
)
from tests.processes import Launcher, until


@pytest.fixture
async def make(database: Database) -> AsyncIterator[Callable[..., Oban]]:
    """Instances on the test's database; all stopped afterwards."""
    async with oban_factory(dsn=database.dsn, prefix=database.prefix) as made:
        yield made


async def node(make: Callable[..., Oban], **options: Any) -> Oban:
    oban = make(queues={"relay": 5}, stager={"interval": 0.05}, **options)
    await oban.start()
    return oban


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [7, None, "text", [1, "two", 3.5], {"nested": {"big": 2**62 + 1, "ok": True}}]
)
async def test_relay_returns_what_process_returned(make: Callable[..., Oban], value: Any) -> None:
    await node(make)
    assert await Echo.relay({"value": value}, timeout=10) == value
    assert await SyncEcho.relay({"value": value}, timeout=10) == value


async def test_a_job_function_relays_with_its_own_parameters(make: Callable[..., Oban]) -> None:
    await node(make)
    assert await multiply.relay(6, 7) == 42
    assert await multiply.relay(6, 7, timeout=100) == 142  # the function's `timeout`


async def test_the_value_is_recorded_for_everyone(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    assert await Echo.relay({"value": {"a": 1}}) == {"a": 1}
    (job,) = (await oban.list_jobs(worker=Echo)).jobs
    assert job.meta["relay"] is True and job.meta["recorded"] is True
    assert job.recorded == {"a": 1}
    outcome = await oban.wait_for(job)
    assert (outcome.state, outcome.done, outcome.value) == ("completed", True, {"a": 1})


async def test_a_large_result_travels_through_the_row(
    make: Callable[..., Oban], database: Database
) -> None:
    await node(make)
    big = "x" * 2_000_000
    payloads: list[str] = []
    listener = None
    if database.postgres:  # what other nodes hear: ids only, never the value
        listener = await psycopg.AsyncConnection.connect(database.dsn, autocommit=True)
        await listener.execute(f'LISTEN "{database.prefix}.oban_relay"'.encode())

        async def hear() -> None:
            async for note in listener.notifies():
                payloads.append(note.payload)

        hearing = asyncio.create_task(hear())
    try:
        assert await Echo.relay({"value": big}, timeout=20) == big
        if listener is not None:
            await eventually(lambda: payloads, message="the relay notification")
            assert len(payloads) == 1 and len(payloads[0]) < 100, payloads
    finally:
        if listener is not None:
            hearing.cancel()
            await listener.close()


async def test_wait_for_a_job_enqueued_any_other_way(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    jobs = [await Echo.enqueue({"value": n, "sleep": 0.05 * n}) for n in range(5)]
    outcomes = await oban.await_many([*jobs, jobs[0].id])  # type: ignore[list-item]
    assert [o.state for o in outcomes] == ["completed"] * 6
    assert all(o.done and o.error is None for o in outcomes)
    # not enqueued for relay, and not recording: no value
    assert [o.value for o in outcomes] == [None] * 6
    assert [o.id for o in outcomes] == [*(j.id for j in jobs), jobs[0].id]


# --- failures ---------------------------------------------------------------------------------


async def test_a_failed_attempt_raises_unless_retries_are_awaited(
    make: Callable[..., Oban],
) -> None:
    await node(make)
    with pytest.raises(RelayError, match="attempt 1 fails") as failed:
        await FailTwice.relay({}, timeout=10)
    assert type(failed.value) is RelayError
    assert failed.value.job is not None and failed.value.job.state == "retryable"
    assert "ValueError: attempt 1 fails" in (failed.value.error or "")

    assert await FailTwice.relay({}, timeout=20, with_retries=True) == 3


async def test_discarded_cancelled_and_unrecordable(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    with pytest.raises(RelayDiscard, match="exploded") as discarded:
        await Explode.relay({}, timeout=10)
    assert "RuntimeError: exploded" in (discarded.value.error or "")

    with pytest.raises(RelayCancelled, match="not today"):
        await Refuse.relay({}, timeout=10)

    with pytest.raises(RelayError, match="cannot be recorded"):
        await Unrecordable.relay({}, timeout=10)
    (job,) = (await oban.list_jobs(worker=Unrecordable)).jobs
    assert job.state == "completed"  # the work was done: it is not run again


async def test_cancelling_a_running_relayed_job(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    waiting = asyncio.create_task(Echo.relay({"sleep": 30}, timeout=20))

    async def executing() -> list[Job]:
        return (await oban.list_jobs(worker=Echo, state="executing")).jobs

    running = await eventually(executing, message="the job to run")
    started = time.monotonic()
    await oban.cancel_job(running[0])
    with pytest.raises(RelayCancelled):
        await waiting
    assert time.monotonic() - started < 2


async def test_a_deleted_job_ends_the_wait(make: Callable[..., Oban]) -> None:
    oban = make()
    job = await Echo.enqueue({"value": 1}, scheduled_in=3600)
    waiting = asyncio.create_task(oban.wait_for(job, timeout=10))
    await asyncio.sleep(0.1)
    await oban.delete_job(job)
    outcome = await waiting
    assert (outcome.state, outcome.done, outcome.job) == ("deleted", True, None)
    with pytest.raises(RelayDiscard, match="deleted"):
        from oban.oban import relay_result

        relay_result("Echo", outcome, 10)


# --- timing traps -----------------------------------------------------------------------------


async def test_timeout_leaves_the_job_running(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    started = time.monotonic()
    with pytest.raises(RelayTimeout, match=r"did not finish within 0\.3s") as late:
        await Echo.relay({"value": "late", "sleep": 1.0}, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert late.value.job is not None and late.value.job.state == "executing"
    outcome = await oban.wait_for(late.value.job, timeout=10)
    assert (outcome.state, outcome.value) == ("completed", "late")

    # wait_for never raises for the job's fate: done=False and the state last seen
    job = await Echo.enqueue({"sleep": 0}, scheduled_in=3600)
    pending = await oban.wait_for(job, timeout=0.1)
    assert (pending.done, pending.state) == (False, "scheduled")


async def test_a_completion_before_the_wait_is_seen_at_once(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    job = await Echo.enqueue({"value": 1})
    await eventually(
        lambda: _state(oban, job, "completed"), message="the job to complete unobserved"
    )
    started = time.monotonic()
    outcome = await oban.wait_for(job, poll_interval=10)
    assert outcome.state == "completed" and time.monotonic() - started < 0.5


async def _state(oban: Oban, job: Job, state: str) -> bool:
    found = await oban.get_job(job)
    return found is not None and found.state == state


async def test_a_completion_during_the_last_poll_interval_is_not_a_timeout(
    make: Callable[..., Oban],
) -> None:
    """The row is read once more at the deadline: a job that completes just before it (here
    on a client instance that polls slowly and hears nothing) is reported completed."""
    await node(make)
    client = make(name="client", notifier={"type": "poll"})
    job = await client.enqueue(Echo.new({"value": 5, "sleep": 0.3}))
    outcome = await client.wait_for(job, timeout=0.8, poll_interval=5)
    assert (outcome.done, outcome.state, outcome.value) == (True, "completed", None)


def _count_reads(oban: Oban, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """Each row read of ``oban``'s waiters, in order: ("pool", ids) for its engine's
    ``get_jobs``, ("listener", ids) for a read on its relay listener's connection."""
    reads: list[tuple[str, list[int]]] = []
    engine: Any = oban._engine
    real = engine.get_jobs
    real_on = getattr(engine, "get_jobs_on", None)

    async def counted(ids: list[int]) -> Any:
        reads.append(("pool", list(ids)))
        return await real(ids)

    async def counted_on(conn: Any, ids: list[int]) -> Any:
        assert real_on is not None
        reads.append(("listener", list(ids)))
        return await real_on(conn, ids)

    monkeypatch.setattr(engine, "get_jobs", counted)
    if real_on is not None:
        monkeypatch.setattr(engine, "get_jobs_on", counted_on)
    return reads


async def test_a_relay_reads_its_row_only_when_it_must(
    make: Callable[..., Oban], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the node that ran the job takes the row its ack statement returned, so a
    relay from the node's own instance reads nothing. Another instance (a client) reads once,
    when the relay notification comes, on the connection that heard it; with its listener up
    from before the insert and no wake-up until the waiter registered, nothing about the new
    job can have been missed, so there is no first read. SQLite: a first read, then one
    after the ack."""
    await node(make)
    client = make(name="client")
    for waiter, on_postgres in ((Oban.get_instance(), []), (client, ["listener"])):
        await waiter.relay(Echo.new({"value": "warm"}), timeout=10)
        reads = _count_reads(waiter, monkeypatch)
        assert await waiter.relay(Echo.new({"value": [2]}), timeout=10, poll_interval=30) == [2]
        expected = on_postgres if database.postgres else ["pool", "pool"]
        assert [where for where, _ in reads] == expected, f"{waiter.name}: {reads}"
        monkeypatch.undo()


async def test_only_rows_waited_for_on_the_node_come_back_with_the_ack(
    make: Callable[..., Oban], database: Database
) -> None:
    """The ack statement returns a relayed job's row only when a waiter of the node's own
    instance waits for it: a relay from another instance, or a relayed job nobody waits for,
    costs the node nothing more than a plain ack."""
    oban = await node(make)
    client = make(name="client")
    handed: list[int] = []
    engine: Any = oban._engine
    if database.postgres:
        resolve = engine.on_relayed_rows
        assert resolve is not None

        def spy(jobs: list[Job]) -> None:
            handed.extend(job.id for job in jobs if job.id is not None)
            resolve(jobs)

        engine.on_relayed_rows = spy
    await client.relay(Echo.new({"value": 1}), timeout=10)
    unwaited = await oban.enqueue(Echo.new({"value": 2}, meta={"relay": True}))
    await eventually(lambda: _state(oban, unwaited, "completed"), message="completed")
    assert handed == []
    job = await oban.enqueue(Echo.new({"value": 3, "sleep": 0.2}, meta={"relay": True}))
    outcome = await oban.wait_for(job, timeout=10, poll_interval=30)
    assert (outcome.state, outcome.value) == ("completed", 3)
    assert handed == ([job.id] if database.postgres else [])


async def test_the_node_hearing_its_own_ack_first_still_reads_nothing(
    make: Callable[..., Oban], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL delivers the relay notification at the ack's commit, so the node that wrote
    the ack may hear it before the statement's answer (here the answer is held back 0.2 s).
    That wake-up is not acted on: the row comes with the answer. (SQLite: no notification;
    the waiter reads first and after the ack.)"""
    oban = await node(make)
    await oban.relay(Echo.new({"value": "warm"}), timeout=10)
    engine: Any = oban._engine
    real_execute = getattr(engine, "_execute_text", None)

    async def slow_answer(conn: Any, text: str, params: tuple[Any, ...]) -> Any:
        assert real_execute is not None
        rows = await real_execute(conn, text, params)
        if "oban_relay" in str(params):  # the ack statements (their relay channel)
            await asyncio.sleep(0.2)
        return rows

    if database.postgres:
        monkeypatch.setattr(engine, "_execute_text", slow_answer)
    reads = _count_reads(oban, monkeypatch)
    assert await oban.relay(Echo.new({"value": 4}), timeout=10, poll_interval=30) == 4
    assert len(reads) == (0 if database.postgres else 2), reads


async def test_a_failed_read_on_the_listener_falls_back_to_the_pool(
    make: Callable[..., Oban], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the read on the listening connection fails, the waiters' loop reads the row on a
    pool connection at once (not at the next poll), and the listener reconnects."""
    await node(make)
    client = make(name="client")
    await client.relay(Echo.new({"value": "warm"}), timeout=10)
    reads = _count_reads(client, monkeypatch)
    listener = client._relay_listener
    generation = 0 if listener is None else listener.generation
    if database.postgres:

        async def broken(conn: Any, ids: list[int]) -> Any:
            reads.append(("listener", list(ids)))
            raise psycopg.OperationalError("the listener's read failed")

        monkeypatch.setattr(client._engine, "get_jobs_on", broken)
    started = time.monotonic()
    assert await client.relay(Echo.new({"value": 6}), timeout=10, poll_interval=30) == 6
    assert time.monotonic() - started < 3.0
    if database.postgres:
        assert [where for where, _ in reads] == ["listener", "pool"], reads
        assert listener is not None
        await eventually(lambda: listener.generation > generation, message="a reconnect")
        monkeypatch.undo()
        assert await client.relay(Echo.new({"value": 7}), timeout=10) == 7


async def test_a_statement_error_on_the_listener_does_not_reconnect_the_node(
    dsn: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: on a node the relay listener is its notifier. A read there that the server
    refuses (the link is fine) falls back to the pool without dropping the notifier's link
    (insert and signal notifications go on)."""
    async with oban_factory(dsn=dsn, prefix=prefix) as made:
        waiter = made(name="waiter", queues={"elsewhere": 1})  # the job runs on the runner
        await waiter.start()
        await made(name="runner", queues={"relay": 5}).start()
        notifier = waiter._notifier
        assert notifier is not None
        await eventually(lambda: notifier.hears("relay"), message="the notifier listening")
        generation = notifier.generation
        refusals: list[list[int]] = []

        async def refused(conn: Any, ids: list[int]) -> Any:
            refusals.append(list(ids))
            raise psycopg.errors.UndefinedColumn("column does not exist")

        monkeypatch.setattr(waiter._engine, "get_jobs_on", refused)
        started = time.monotonic()
        assert await waiter.relay(Echo.new({"value": 4}), timeout=10, poll_interval=30) == 4
        assert time.monotonic() - started < 3.0
        assert refusals, "the read on the notifier's connection was not tried"
        await asyncio.sleep(0.2)
        assert notifier.generation == generation and notifier.connected


async def test_a_relay_listener_opened_before_start_gives_way_to_the_notifier(
    dsn: str, prefix: str
) -> None:
    """PostgreSQL: waits before ``start()`` open a relay listener; once the started node's
    notifier hears relay, that listener is closed (each relay notification is heard and read
    on one connection, not two), and relays are still woken at once (the poll is 30 s)."""
    async with oban_factory(dsn=dsn, prefix=prefix) as made:
        await made(name="runner", queues={"relay": 5}).start()
        oban = made(name="late-node", queues={"elsewhere": 1})
        assert await oban.relay(Echo.new({"value": 1}), timeout=10) == 1
        listener = oban._relay_listener
        assert listener is not None and listener.connected
        await oban.start()
        assert oban._relay_listener is None and not listener.connected
        started = time.monotonic()
        assert await oban.relay(Echo.new({"value": 2}), timeout=10, poll_interval=30) == 2
        assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("name", ["Oban", "client"])
async def test_a_wake_up_before_the_waiter_registered_makes_it_read_first(
    make: Callable[..., Oban], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the first read is there for: the job finishes, and its wake-up (this node's
    ack, or the node's relay notification to the client) is handled after the insert and
    before the waiter registers. The waiter reads at once instead of at its poll, 30 s on."""
    await node(make)
    make(name="client")
    waiter = Oban.get_instance(name)
    await waiter.relay(Echo.new({"value": "warm"}), timeout=10)
    real_enqueue = waiter.enqueue

    async def enqueue_then_finish(job: Job, **options: Any) -> Job:
        inserted = await real_enqueue(job, **options)
        await eventually(lambda: _state(waiter, inserted, "completed"), message="completed")
        if waiter._hearing() is not None:  # PostgreSQL: the wake-up was noted, so it came
            await eventually(lambda: waiter._waiters.seen([inserted.id or 0]), message="wake-up")
        return inserted

    monkeypatch.setattr(waiter, "enqueue", enqueue_then_finish)
    started = time.monotonic()
    assert await waiter.relay(Echo.new({"value": 8}), timeout=20, poll_interval=30) == 8
    assert time.monotonic() - started < 3.0


async def test_a_new_waiter_does_not_postpone_the_polls_of_others(
    make: Callable[..., Oban], database: Database
) -> None:
    """Each waiter is read at least every poll interval, however often new waiters that need
    no first read come: here a job finishes with no wake-up at all (the row written directly),
    while such waiters register every 50 ms, more often than the 0.3 s poll."""
    oban = await node(make)
    job = await oban.enqueue(Echo.new({"value": 1}, schedule_in=3600))
    watch = asyncio.create_task(oban.wait_for(job, timeout=10, poll_interval=0.3))
    await asyncio.sleep(0.2)
    assert job.id is not None
    await set_state_directly(database, job.id, "completed")
    finished_at = time.monotonic()
    extra: list[Waiter] = []
    while not watch.done() and time.monotonic() - finished_at < 5:
        waiter = Waiter([2**62 + len(extra)], False, 0.3)
        oban._waiters.add(waiter, read_first=False)
        extra.append(waiter)
        await asyncio.sleep(0.05)
    for waiter in extra:
        oban._waiters.remove(waiter)
    outcome = await watch
    assert outcome.state == "completed" and time.monotonic() - finished_at < 1.5


async def test_a_wake_up_reads_only_the_jobs_it_names(make: Callable[..., Oban]) -> None:
    """Jobs waited for that nothing woke and whose poll is not due are not read again when
    another job finishes: a wake-up costs the rows it names, not every row waited for."""
    oban = await node(make)
    idle = [await oban.enqueue(Echo.new({"value": i}, schedule_in=3600)) for i in range(3)]
    watches = [
        asyncio.create_task(oban.wait_for(job, timeout=30, poll_interval=30)) for job in idle
    ]
    idle_ids = {job.id for job in idle}
    read_before = oban._waiters._read
    reads: list[list[int]] = []

    async def counted(ids: list[int]) -> dict[int, Job]:
        reads.append(list(ids))
        return await read_before(ids)

    oban._waiters._read = counted
    await eventually(lambda: idle_ids <= _flat(reads), message="the waits' first reads")
    reads.clear()
    job = await oban.enqueue(Echo.new({"value": 9}))
    outcome = await oban.wait_for(job, timeout=20, poll_interval=30)
    assert outcome.state == "completed" and outcome.value is None
    assert job.id in _flat(reads)  # its first read, or the wake-up of its ack
    assert not idle_ids & _flat(reads), reads
    assert not any(watch.done() for watch in watches)
    for watch in watches:
        watch.cancel()
    await asyncio.gather(*watches, return_exceptions=True)


def _flat(reads: list[list[int]]) -> set[int]:
    return {job_id for ids in reads for job_id in ids}


# --- across processes -------------------------------------------------------------------------


async def test_relay_to_a_node_in_another_process(
    make: Callable[..., Oban], database: Database, tmp_path: Path
) -> None:
    """The waiter is a client-mode instance here; the job runs in an `oban start` process.
    On PostgreSQL the node's relay notification wakes the waiter (far sooner than the poll
    interval); on SQLite the waiter polls the row."""
    client = make()
    args = ["--dsn", database.dsn, "--prefix", database.prefix, "--queues", "relay:5"]
    launcher = Launcher(tmp_path)
    try:
        remote = await launcher.start(
            "node", *args, "--cron-modules", "tests.integration.relay_workers"
        )
        await until(lambda: client.nodes(), remote, timeout=30, message="the node to register")
        poll = 5.0 if database.postgres else 0.2
        assert await Echo.relay({"value": "warm"}, timeout=30, poll_interval=poll) == "warm"
        started = time.monotonic()
        values = await asyncio.gather(
            *(Echo.relay({"value": n}, timeout=30, poll_interval=poll) for n in range(20))
        )
        elapsed = time.monotonic() - started
        assert values == list(range(20))
        if database.postgres:
            assert elapsed < 2.0, "notifications, not the 5 s poll, woke the waiters"
    finally:
        await launcher.kill_all()


async def test_a_lost_notification_is_covered_by_polling(
    make: Callable[..., Oban], database: Database
) -> None:
    """The waiter's listener connection is killed (our own backend): the wait still ends,
    by polling, within about one poll interval."""
    await node(make)
    client = make(name="client")
    await client.wait_for(await client.enqueue(Echo.new({"value": 0})), timeout=10)
    if database.postgres:
        listener = client._relay_listener
        assert listener is not None and listener.connected
        async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as admin:
            cur = await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = %s AND pid <> pg_backend_pid()",
                (f'LISTEN "{database.prefix}.oban_relay"',),
            )
            assert [row[0] for row in await cur.fetchall()] == [True]
    job = await client.enqueue(Echo.new({"value": 9, "sleep": 0.2}, meta={"relay": True}))
    started = time.monotonic()
    outcome = await client.wait_for(job, timeout=10, poll_interval=0.5)
    assert (outcome.state, outcome.value) == ("completed", 9)
    assert time.monotonic() - started < 2.0


async def test_the_ack_statement_itself_announces_relayed_jobs(
    make: Callable[..., Oban], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the relay notification is sent by the statement that writes the acks
    (delivered at its commit): one ``{"ids": [...]}`` per batch on ``<prefix>.oban_relay``,
    and no NOTIFY statement of its own. On SQLite the node tells the other instances of the
    process on the same file."""
    oban = await node(make)
    notified: list[str] = []
    engine = await oban._ready()
    real_notify = engine.notify

    async def spy(channel: str, payloads: Any) -> None:
        notified.append(channel)
        await real_notify(channel, payloads)

    monkeypatch.setattr(engine, "notify", spy)
    if not database.postgres:
        peer = make(name="peer")
        job = await peer.enqueue(Echo.new({"value": 3}, meta={"relay": True}))
        outcome = await peer.wait_for(job, timeout=10, poll_interval=30)
        assert (outcome.state, outcome.value) == ("completed", 3)
        return
    async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{database.prefix}.oban_relay"')
        jobs = await oban.enqueue_many(
            [Echo.new({"value": n}, meta={"relay": True}) for n in range(3)]
        )
        plain = await oban.enqueue(Echo.new({"value": "plain"}))
        for job in [*jobs, plain]:
            await oban.wait_for(job, timeout=10)
        heard: set[int] = set()
        async for note in listener.notifies(timeout=2.0):
            heard |= set(json.loads(note.payload)["ids"])
            if heard >= {job.id for job in jobs}:
                break
    assert heard == {job.id for job in jobs}, "every relayed job announced, the plain one not"
    assert "relay" not in notified, "a NOTIFY statement of its own was sent"


# --- in-process use -----------------------------------------------------------------------------


async def test_waiting_inside_a_job_warns(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    from oban.job import _current_job

    token = _current_job.set(Job("tests.Fake", id=99))
    try:
        with pytest.warns(RuntimeWarning, match="inside job 99"):
            assert await Echo.relay({"value": 1}, timeout=10) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert await Echo.relay({"value": 2}, timeout=10, allow_nested=True) == 2
            await oban.wait_for(1, timeout=0.01, allow_nested=True)
    finally:
        _current_job.reset(token)


async def test_the_nested_warning_points_at_the_caller(make: Callable[..., Oban]) -> None:
    await node(make)
    from oban.job import _current_job

    token = _current_job.set(Job("tests.Fake", id=98))
    try:
        with pytest.warns(RuntimeWarning) as caught:
            await Echo.relay({"value": 1}, timeout=10)
    finally:
        _current_job.reset(token)
    assert [w.filename for w in caught] == [__file__]


async def test_relay_takes_no_conn_and_names_itself_in_errors(make: Callable[..., Oban]) -> None:
    make()
    with pytest.raises(TypeError, match=r"relay\(\) takes no conn="):
        await Echo.relay({}, conn=object())  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"Echo\.relay\(\)"):
        await Echo.relay({}, quue="x")  # type: ignore[call-arg]


async def test_a_cancel_before_the_job_ran_says_so_plainly(make: Callable[..., Oban]) -> None:
    oban = make()
    waiting = asyncio.create_task(Echo.relay({}, timeout=10, scheduled_in=3600))
    scheduled = await eventually(
        lambda: _listed(oban, "scheduled"), message="the relayed job to be inserted"
    )
    await oban.cancel_job(scheduled[0])
    with pytest.raises(RelayCancelled) as cancelled:
        await waiting
    assert str(cancelled.value).endswith("was cancelled"), str(cancelled.value)


async def _listed(oban: Oban, state: str) -> list[Job]:
    return (await oban.list_jobs(worker=Echo, state=state)).jobs


async def test_inline_mode_runs_the_job_here() -> None:
    with testing.mode("inline"):
        assert await Echo.relay({"value": {"x": 1}}) == {"x": 1}
        # what a real round trip gives back: tuples are lists, a datetime cannot travel
        assert await Echo.relay({"value": (1, 2)}) == [1, 2]
        with pytest.raises(RelayError, match="cannot be recorded"):
            await Unrecordable.relay({})
        assert await multiply.relay(2, 3) == 6
        with pytest.raises(RelayCancelled, match="not today"):
            await Refuse.relay({})
        with pytest.raises(RuntimeError, match="exploded"):
            await Explode.relay({})


async def test_bad_wait_settings_are_refused(make: Callable[..., Oban]) -> None:
    oban = make()
    for bad in ({"timeout": -1}, {"poll_interval": 0}, {"timeout": float("nan")}):
        with pytest.raises(ValueError, match="positive number of seconds"):
            await oban.wait_for(1, **bad)
    with pytest.raises(TypeError, match="number of seconds"):
        await oban.wait_for(1, timeout="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await oban.wait_for("1")  # type: ignore[arg-type]


async def test_hostile_relay_notifications_are_dropped(make: Callable[..., Oban]) -> None:
    oban = await node(make)
    dropped: list[dict[str, Any]] = []
    telemetry.attach("t", ["oban.notifier.dropped"], lambda _e, meta: dropped.append(meta))
    try:
        hostile: list[dict[str, Any]] = [
            {"ids": "1"},
            {"ids": [True]},
            {"ids": [-1]},
            {"ids": list(range(1, 999))},
        ]
        for message in hostile:
            oban._on_relay(message)
    finally:
        telemetry.detach("t")
    assert [m["channel"] for m in dropped] == ["relay"] * 4
    assert await Echo.relay({"value": 3}, timeout=10) == 3


def test_sync_relay_and_wait(tmp_path: Path) -> None:
    async def start() -> Oban:
        oban = Oban(dsn=f"sqlite:///{tmp_path / 'sync.db'}", queues={"relay": 2})
        await oban.start()
        return oban

    loop = asyncio.new_event_loop()
    import threading

    ready: list[Oban] = []

    def run() -> None:
        ready.append(loop.run_until_complete(start()))
        loop.run_forever()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        while not ready:
            time.sleep(0.01)
        oban = ready[0]
        assert oban.sync.relay(Echo.new({"value": "sync"}), timeout=10) == "sync"
        job = oban.sync.enqueue(Echo.new({"value": 1}))
        outcome = oban.sync.wait_for(job, timeout=10)
        assert isinstance(outcome, JobOutcome) and outcome.state == "completed"
        assert job.id is not None
        assert [o.state for o in oban.sync.await_many([job, job.id], timeout=10)] == [
            "completed",
            "completed",
        ]
    finally:
        asyncio.run_coroutine_threadsafe(oban.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        from oban.oban import _instances

        _instances.clear()


# --- edges: unique conflicts, nothing to wait for, stop, event loops, SQLite peers -----------


async def test_a_unique_relay_that_matches_a_finished_job_returns_at_once(
    make: Callable[..., Oban],
) -> None:
    """The existing job finished before this relay's window opened: its row is read first,
    not left for a wake-up that already happened (here the poll is 30 s)."""
    await node(make)
    assert await Echo.relay({"value": 5}, unique=True, timeout=10) == 5
    started = time.monotonic()
    assert await Echo.relay({"value": 5}, unique=True, timeout=10, poll_interval=30) == 5
    assert time.monotonic() - started < 2.0


async def test_a_unique_relay_that_matches_a_job_enqueued_without_relay_says_so(
    make: Callable[..., Oban],
) -> None:
    """That job's return value was never recorded: the relay raises rather than return None."""
    oban = await node(make)
    existing = await oban.enqueue(Echo.new({"value": 6}, unique=True))
    assert (await oban.wait_for(existing, timeout=10)).state == "completed"
    with pytest.raises(RelayError, match="without recording its return value") as raised:
        await Echo.relay({"value": 6}, unique=True, timeout=10)
    assert raised.value.job is not None and raised.value.job.id == existing.id


async def test_waiting_for_nothing_returns_at_once(make: Callable[..., Oban]) -> None:
    oban = make()
    async with asyncio.timeout(2):
        assert await oban.await_many([], timeout=None) == []
        assert await oban.await_many([], timeout=30) == []
        status = await oban.wait_for_workflow("no-such-workflow", timeout=None)
    assert status.state == "missing" and status.total == 0


async def test_stop_ends_the_waits_still_pending(make: Callable[..., Oban]) -> None:
    """Nobody runs queue relay here: at stop() a wait without a timeout returns unfinished
    with the state last seen, and a relay raises RelayTimeout saying why; nothing hangs."""
    oban = make()
    job = await oban.enqueue(Echo.new({"value": 1}))
    forever = asyncio.create_task(oban.wait_for(job, timeout=None, poll_interval=30))
    relay = asyncio.create_task(oban.relay(Echo.new({"value": 2}), timeout=30))
    await eventually(lambda: len(oban._waiters._waiters) == 2, message="both waits registered")
    await oban.stop()
    async with asyncio.timeout(5):
        outcome = await forever
        with pytest.raises(RelayTimeout, match="before the instance stopped"):
            await relay
    assert (outcome.state, outcome.done) == ("available", False)
    assert not oban._waiters._waiters


async def test_waits_work_on_a_new_event_loop_after_a_stop(make: Callable[..., Oban]) -> None:
    """An instance used (and stopped) on another event loop first, as sync calls then
    ``oban.sync.stop()`` do, serves its waits on the loop it is started on next: a wake-up
    still ends a wait at once (the poll here is 30 s)."""
    oban = await node(make)
    await oban.stop()

    async def elsewhere() -> None:
        await oban.start()
        try:
            done = await oban.relay(Echo.new({"value": "there"}), timeout=10, poll_interval=30)
            assert done == "there"
        finally:
            await oban.stop()

    await asyncio.to_thread(asyncio.run, elsewhere())
    await oban.start()
    job = await oban.enqueue(Echo.new({"value": "here", "sleep": 0.2}))
    started = time.monotonic()
    outcome = await oban.wait_for(job, timeout=10, poll_interval=30)
    assert outcome.value is None and outcome.state == "completed"
    assert time.monotonic() - started < 3.0


async def test_a_read_that_started_before_a_wait_is_not_handed_to_it(
    make: Callable[..., Oban], database: Database
) -> None:
    """A row read before a wait registered can be older than the registration: here the job
    was completed when read, then retried (available again) before the second wait began.
    That wait must not end on the old row."""
    oban = make()
    job = await oban.enqueue(Echo.new({"value": 1}, queue="nobody-runs-this"))
    assert job.id is not None
    await set_state_directly(database, job.id, "completed")
    held, release = asyncio.Event(), asyncio.Event()
    read_before = oban._waiters._read

    async def slow(ids: list[int]) -> dict[int, Job]:
        found = await read_before(ids)
        if job.id in ids and not held.is_set():
            held.set()
            await release.wait()  # answer late: the row has changed since
        return found

    oban._waiters._read = slow
    first = asyncio.create_task(oban.wait_for(job, timeout=10, poll_interval=30))
    await held.wait()
    await oban.retry_job(job.id)
    second = asyncio.create_task(oban.wait_for(job, timeout=1.0, poll_interval=30))
    await eventually(lambda: len(oban._waiters._waiters) == 2, message="the second wait")
    release.set()
    assert (await first).state == "completed"  # it registered before the read: its answer
    outcome = await second
    assert (outcome.state, outcome.done) == ("available", False)


async def test_a_large_sqlite_relay_batch_reaches_the_other_instances(tmp_path: Path) -> None:
    """A SQLite node announces its relayed acks to the other instances of its process in
    notifications of at most 400 ids (as every relay notification): a batch of 1,000 is not
    dropped as hostile, and their waits end at once (the poll here is 30 s)."""
    dsn = f"sqlite:///{tmp_path / 'peers.db'}"
    async with oban_factory(dsn=dsn) as made:
        node, client = made(queues={"relay": 5}), made()
        await node.start()
        jobs = await client.enqueue_many(
            [Echo.new({"value": n}, queue="parked", meta={"relay": True}) for n in range(1000)]
        )
        ids = [job.id for job in jobs if job.id is not None]
        waits = asyncio.create_task(client.await_many(ids, timeout=20, poll_interval=30))
        await eventually(lambda: client._waiters.waits_for(ids[-1]), message="registered")
        await asyncio.sleep(0.1)  # past the first read
        path = dsn.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as lite, lite:
            lite.execute("UPDATE oban_jobs SET state = 'completed', completed_at = datetime('now')")
        started = time.monotonic()
        node._announce_relayed(ids)
        outcomes = await waits
    assert {outcome.state for outcome in outcomes} == {"completed"}
    assert time.monotonic() - started < 5.0


async def test_a_sqlite_relay_from_a_sync_call_is_woken_across_threads(tmp_path: Path) -> None:
    """The node runs on this loop; the client's sync calls run on the oban-sync loop in
    another thread: the node's announcement reaches it there (the poll here is 5 s)."""
    dsn = f"sqlite:///{tmp_path / 'threads.db'}"
    client = Oban(dsn=dsn, name="sync-client")
    try:
        async with oban_factory(dsn=dsn) as made:
            node = made(queues={"relay": 2})
            await node.start()

            def relay_twice() -> list[float]:
                took = []
                for value in (1, 2):
                    started = time.monotonic()
                    job = Echo.new({"value": value})
                    assert client.sync.relay(job, timeout=20, poll_interval=5) == value
                    took.append(time.monotonic() - started)
                return took

            took = await asyncio.to_thread(relay_twice)
    finally:
        await asyncio.to_thread(client.sync.stop)
    assert max(took) < 2.5, took


@contextlib.asynccontextmanager
async def _pool_whose_other_connections_hang(dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool of one connection whose connection settings resolve at once for it and take
    30 s for any later connection (the relay listener's), as a hung DNS lookup or TCP
    connect would."""
    resolved = 0

    async def settings() -> dict[str, Any]:
        nonlocal resolved
        resolved += 1
        if resolved > 1:
            await asyncio.sleep(30)
        return {}

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, kwargs=settings, min_size=1, max_size=1, open=False
    )
    await pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


async def test_stop_ends_a_wait_still_opening_its_relay_listener(dsn: str, prefix: str) -> None:
    """PostgreSQL: stop() while a wait without a timeout is still opening its relay listener
    (whose connection hangs here): the wait ends then, unfinished, rather than register
    after the stop and wait for ever."""
    async with _pool_whose_other_connections_hang(dsn) as pool:
        oban = Oban(pool=pool, prefix=prefix, name="stopped-while-opening")
        job = await oban.enqueue(Echo.new({"value": 1}))  # nobody runs it
        wait = asyncio.create_task(oban.wait_for(job, timeout=None))
        await eventually(lambda: oban._relay_listener is not None, message="the listener")
        await asyncio.sleep(0.2)
        await oban.stop()
        async with asyncio.timeout(3):
            outcome = await wait
        # It had not registered when stop() made its last read: its row was never read.
        assert (outcome.state, outcome.done) == ("unknown", False)
        assert oban._relay_listener is None and not oban._waiters._waiters


async def test_a_wait_keeps_its_timeout_while_its_relay_listener_connects(
    dsn: str, prefix: str
) -> None:
    """PostgreSQL: the first wait of an instance that only enqueues opens a relay listener.
    When that connection hangs (here its connection settings take 30 s to resolve, as a
    hung DNS lookup or TCP connect would), the wait polls meanwhile and still ends at its
    timeout: the listener's start counts in it."""
    async with _pool_whose_other_connections_hang(dsn) as pool:
        async with Oban(pool=pool, prefix=prefix, name="hung-listener") as oban:
            job = await oban.enqueue(Echo.new({"value": 1}))  # nobody runs it
            started = time.monotonic()
            outcome = await oban.wait_for(job, timeout=0.5)
            took = time.monotonic() - started
            assert (outcome.state, outcome.done) == ("available", False)
            assert took < 1.5, took
