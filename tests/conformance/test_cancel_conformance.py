"""Cancelling running jobs on both engines: cancel means stop (issue 13).

``cancel_job(s)`` writes every incomplete job ``cancelled`` at once, running ones included
(an executing row's ``errors`` gain ``"cancelled while executing"``), and signals the node
that runs them. There an async job's task is cancelled at once (its ``finally`` blocks run);
a sync job, whose thread cannot be interrupted, sees ``job.cancelled()`` turn true, ends
``cancelled`` whatever it returns, and holds its queue slot until its thread returns.

Workers note what they did in ``NOTES`` (thread-safe appends), keyed by ``job.id``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from oban import Cancel, Job, Oban, Record, Snooze, telemetry, worker
from tests.helpers import eventually

REASON = "cancelled while executing"
#: ``events(name)``: the metadata of each ``name`` telemetry event so far.
Events = Callable[[str], list[dict[str, Any]]]
#: How long "nothing happens" checks watch (the producer fetches at once when a slot frees).
QUIET = 0.3

# (what, job id, time.monotonic()), appended by the workers.
NOTES: list[tuple[str, int, float]] = []
#: Opens the sync workers that wait for it (set again after every test).
RELEASE = threading.Event()


def _note(what: str, job: Job) -> None:
    assert job.id is not None
    NOTES.append((what, job.id, time.monotonic()))


def _seen(what: str, job_id: int | None) -> bool:
    return any(w == what and i == job_id for w, i, _ in NOTES)


def _when(what: str, job_id: int | None) -> float:
    times = [t for w, i, t in NOTES if w == what and i == job_id]
    assert len(times) == 1, f"{what!r} noted {len(times)} times for job {job_id}: {NOTES}"
    return times[0]


@worker(queue="confc")
class ConfCAsyncSleeper:
    """Sleeps 5 s, then notes a completion; its ``finally`` notes whether it was cancelled."""

    async def process(self, job: Job) -> None:
        _note("started", job)
        try:
            await asyncio.sleep(5)
            _note("completed", job)
        finally:
            _note(f"finally cancelled={job.cancelled()}", job)


@worker(queue="confc_one")
class ConfCSyncIgnoring:
    """A sync job that never checks ``job.cancelled()``: runs until ``RELEASE`` (5 s at most),
    then returns normally."""

    def process(self, job: Job) -> None:
        _note("started", job)
        RELEASE.wait(5)
        _note(f"returned cancelled={job.cancelled()}", job)


def _outcome(name: str) -> Any:
    if name == "raise":
        raise RuntimeError("confc worker failed after noticing the cancel")
    return {
        "none": None,
        "value": {"confc": 1},
        "record": Record({"confc": 1}),
        "cancel": Cancel("confc worker gave up"),
        "snooze": Snooze(60),
    }[name]


@worker(queue="confc")
class ConfCSyncPolling:
    """A sync job that polls ``job.cancelled()`` and then returns ``args["outcome"]``."""

    def process(self, job: Job) -> Any:
        _note("started", job)
        deadline = time.monotonic() + 5
        while not job.cancelled():
            if time.monotonic() > deadline:
                _note("gave up waiting", job)
                return None  # completes the job: the test then fails on its state
            time.sleep(0.005)
        _note("noticed", job)
        return _outcome(job.args["outcome"])


@worker(queue="confc")
class ConfCSleepsOnFirstAttempt:
    """Sleeps 5 s on its first attempt; later attempts complete at once."""

    async def process(self, job: Job) -> None:
        _note(f"started attempt {job.attempt}", job)
        if job.attempt == 1:
            await asyncio.sleep(5)
        _note(f"completed attempt {job.attempt}", job)


@worker(queue="confc")
class ConfCQuick:
    async def process(self, job: Job) -> None:
        _note("ran", job)


@pytest.fixture(autouse=True)
def _clean_state(make_oban: Callable[..., Oban]) -> Iterator[None]:
    # Depends on make_oban so that this teardown (which lets blocked sync workers return)
    # runs before the instances are stopped.
    NOTES.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


@pytest.fixture
def events() -> Iterator[Events]:
    """``events(name)``: the metadata of each ``name`` event emitted so far."""
    seen: list[tuple[str, dict[str, Any]]] = []
    names = ["oban.job.stop", "oban.job.exception", "oban.job.cancel"]
    telemetry.attach("test-confc-cancel", names, lambda name, meta: seen.append((name, meta)))
    try:
        yield lambda name: [meta for event, meta in seen if event == name]
    finally:
        telemetry.detach("test-confc-cancel")


def _job_events(events: Events, name: str, job_id: int | None) -> list[dict[str, Any]]:
    return [e for e in events(name) if e["job"].id == job_id]


def _assert_stopped_as_cancelled(events: Events, job_id: int | None) -> None:
    """The job's one ``oban.job.stop`` event reports it ``cancelled``; no exception event."""
    assert [e["state"] for e in _job_events(events, "oban.job.stop", job_id)] == ["cancelled"]
    assert _job_events(events, "oban.job.exception", job_id) == []


async def _runner(make_oban: Callable[..., Oban], **options: Any) -> Oban:
    options.setdefault("queues", {"confc": 3, "confc_one": 1})
    options.setdefault("notifier", {"poll_interval": 0.1})
    oban = make_oban(**options)
    await oban.start()
    return oban


async def _paused_runner(make_oban: Callable[..., Oban]) -> Oban:
    """A runner whose ``confc_one`` queue is paused, so that it has no fetch in flight when a
    test wraps ``fetch_jobs``; the test resumes it."""
    queues = {"confc": 3, "confc_one": {"limit": 1, "paused": True}}
    return await _runner(make_oban, queues=queues, shutdown_grace_period=0.2)


async def _sleeper_claimed_with(
    oban: Oban, on_claim: Callable[[list[Job]], Awaitable[None]]
) -> Job:
    """Enqueue a ``ConfCAsyncSleeper`` in ``oban``'s paused ``confc_one`` queue and resume it,
    with ``oban``'s fetch wrapped: once a fetch has claimed ``ConfCAsyncSleeper`` jobs,
    ``on_claim(claimed)`` runs before the fetch returns them. Returns the enqueued job."""
    engine = oban._engine
    real_fetch = engine.fetch_jobs

    async def fetch_then(*args: Any, **kwargs: Any) -> Any:
        jobs = await real_fetch(*args, **kwargs)
        claimed = [job for job in jobs if job.worker.endswith("ConfCAsyncSleeper")]
        if claimed:
            await on_claim(claimed)
        return jobs

    engine.fetch_jobs = fetch_then  # type: ignore[method-assign]
    job = await oban.enqueue(ConfCAsyncSleeper.new({}, queue="confc_one"))
    await oban.resume_queue("confc_one")
    return job


async def _job(oban: Oban, job_id: int | None) -> Job:
    assert job_id is not None, "the job was never inserted"
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing"
    return found


async def _state_is(oban: Oban, job_id: int | None, state: str) -> Job | None:
    found = await _job(oban, job_id)
    return found if found.state == state else None


def _id(job: Job) -> int:
    assert job.id is not None, "the job was never inserted"
    return job.id


def _running(oban: Oban, queue: str) -> list[int]:
    info = oban.check_queue(queue)
    assert info is not None, f"queue {queue!r} does not run here"
    return info.running


async def _settled(oban: Oban, queue: str) -> None:
    """Wait until ``queue`` runs nothing and every ack has been written (or refused)."""

    def idle() -> bool:
        acker = oban._acker
        return _running(oban, queue) == [] and (acker is None or acker.pending == 0)

    await eventually(idle, timeout=2, message=f"queue {queue} idle with its acks written")


def _near_now(value: datetime | None) -> bool:
    return value is not None and abs(value - datetime.now(UTC)) < timedelta(seconds=5)


def _assert_cancelled_while_executing(job: Job, attempt: int = 1) -> None:
    """``job`` was cancelled while it ran, and nothing it did afterwards was recorded."""
    assert job.state == "cancelled"
    assert _near_now(job.cancelled_at)
    assert job.completed_at is None and job.discarded_at is None
    assert "cancel_attempted_at" in job.meta
    assert "recorded" not in job.meta and "snoozed" not in job.meta
    assert job.attempt == attempt
    assert [e["error"] for e in job.errors] == [REASON], job.errors
    assert job.errors[-1]["attempt"] == attempt
    assert _near_now(datetime.fromisoformat(job.errors[-1]["at"]))


def _no_stale_ack_warning(caplog: pytest.LogCaptureFixture) -> None:
    stale = [r.getMessage() for r in caplog.records if "stale ack" in r.getMessage()]
    assert stale == []


# ---------------------------------------------------------------------------------------------
# Async jobs: stopped at once
# ---------------------------------------------------------------------------------------------


async def test_cancel_stops_a_running_async_job_at_once_running_its_finally(
    make_oban: Callable[..., Oban],
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    oban = await _runner(make_oban)
    job = await oban.enqueue(ConfCAsyncSleeper.new({}))
    await eventually(lambda: _seen("started", job.id), message="job started")

    assert await oban.cancel_job(job) == 1

    # The row is cancelled before the worker even stops.
    _assert_cancelled_while_executing(await _job(oban, job.id))
    # Stopped at once: its 5 s sleep is cut short, well within a second.
    await eventually(
        lambda: _seen("finally cancelled=True", job.id), timeout=2, message="finally ran"
    )
    await _settled(oban, "confc")
    assert not _seen("completed", job.id)
    _assert_cancelled_while_executing(await _job(oban, job.id))
    _assert_stopped_as_cancelled(events, job.id)
    _no_stale_ack_warning(caplog)


async def test_the_cancel_error_records_the_attempt_it_cancelled_after_earlier_errors(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    oban = make_oban(queues={"confc": 1}, notifier={"poll_interval": 0.1})
    job = await oban.enqueue(ConfCAsyncSleeper.new({}, max_attempts=5))
    # Two earlier attempts, the last of which failed: this run is attempt 3.
    earlier = {"attempt": 2, "at": "2024-01-01T00:00:00.000000Z", "error": "confc earlier"}
    errors = "ARRAY[%s::jsonb]" if engine == "postgres" else "json_array(json(%s))"
    await sql(
        oban,
        f"UPDATE oban_jobs SET attempt = 2, errors = {errors} WHERE id = %s",
        (orjson.dumps(earlier).decode(), job.id),
    )
    await oban.start()
    await eventually(lambda: _seen("started", job.id), message="job started")

    assert await oban.cancel_job(job) == 1

    await _settled(oban, "confc")
    after = await _job(oban, job.id)
    assert after.state == "cancelled"
    assert after.attempt == 3
    assert after.errors[0] == earlier
    assert [(e["attempt"], e["error"]) for e in after.errors] == [(2, "confc earlier"), (3, REASON)]
    assert _near_now(datetime.fromisoformat(after.errors[1]["at"]))


# ---------------------------------------------------------------------------------------------
# Sync jobs: flagged, end cancelled whatever they return
# ---------------------------------------------------------------------------------------------


async def test_sync_job_ignoring_the_cancel_ends_cancelled_and_holds_its_slot_until_it_returns(
    make_oban: Callable[..., Oban],
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    oban = await _runner(make_oban)
    first = await oban.enqueue(ConfCSyncIgnoring.new({}))
    await eventually(lambda: _seen("started", first.id), message="sync job started")
    second = await oban.enqueue(ConfCQuick.new({}, queue="confc_one"))

    assert await oban.cancel_job(first) == 1

    _assert_cancelled_while_executing(await _job(oban, first.id))
    # The thread runs on and keeps the queue's only slot: the second job waits.
    await asyncio.sleep(QUIET)
    assert _running(oban, "confc_one") == [first.id]
    assert not _seen("ran", second.id)
    assert (await _job(oban, second.id)).state == "available"
    assert _job_events(events, "oban.job.stop", first.id) == []

    RELEASE.set()
    await eventually(
        lambda: _state_is(oban, second.id, "completed"), timeout=2, message="second job ran"
    )
    assert _seen("returned cancelled=True", first.id)  # the flag reached the thread
    assert _when("ran", second.id) > _when("returned cancelled=True", first.id)
    await _settled(oban, "confc_one")
    _assert_cancelled_while_executing(await _job(oban, first.id))
    _assert_stopped_as_cancelled(events, first.id)
    _no_stale_ack_warning(caplog)


@pytest.mark.parametrize("outcome", ["none", "value", "record", "raise", "cancel", "snooze"])
async def test_sync_job_polling_cancelled_returns_early_and_ends_cancelled_whatever_it_returns(
    make_oban: Callable[..., Oban],
    events: Events,
    caplog: pytest.LogCaptureFixture,
    outcome: str,
) -> None:
    caplog.set_level(logging.INFO)
    oban = await _runner(make_oban)
    job = await oban.enqueue(ConfCSyncPolling.new({"outcome": outcome}))
    await eventually(lambda: _seen("started", job.id), message="sync job started")

    assert await oban.cancel_job(job) == 1

    await eventually(lambda: _seen("noticed", job.id), timeout=2, message="worker noticed")
    await _settled(oban, "confc")
    # Whatever it returned (a Cancel reason included), the canceller's record stands.
    _assert_cancelled_while_executing(await _job(oban, job.id))
    assert not _seen("gave up waiting", job.id)
    _assert_stopped_as_cancelled(events, job.id)
    _no_stale_ack_warning(caplog)


async def test_cancel_from_another_instance_flags_a_sync_job_running_there(
    make_oban: Callable[..., Oban], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runner = await _runner(make_oban, name="ConfCRunner", node="confc-runner")
    client = make_oban(name="ConfCClient", node="confc-client")
    job = await client.enqueue(ConfCSyncPolling.new({"outcome": "none"}))
    await eventually(lambda: _seen("started", job.id), message="sync job started on the runner")

    assert await client.cancel_job(job) == 1

    _assert_cancelled_while_executing(await _job(client, job.id))
    await eventually(lambda: _seen("noticed", job.id), timeout=2, message="runner flagged it")
    await _settled(runner, "confc")
    _assert_cancelled_while_executing(await _job(client, job.id))
    _no_stale_ack_warning(caplog)


async def test_a_job_cancelled_while_running_and_retried_at_once_runs_again(
    make_oban: Callable[..., Oban],
) -> None:
    # The pkill that stopped it (and its echo: NOTIFY on PostgreSQL, the local broadcast on
    # SQLite) must not keep this node from running the job's next attempt.
    oban = await _runner(make_oban)
    job = await oban.enqueue(ConfCSleepsOnFirstAttempt.new({}))
    await eventually(lambda: _seen("started attempt 1", job.id), message="job started")
    assert await oban.cancel_job(job) == 1
    await _settled(oban, "confc")
    await asyncio.sleep(0.2)  # every pkill of the cancel has arrived (NOTIFY, broadcast)

    assert await oban.retry_job(job) == 1

    done = await eventually(
        lambda: _state_is(oban, job.id, "completed"), timeout=2, message="the retry completed"
    )
    assert _seen("completed attempt 2", job.id)
    assert not _seen("completed attempt 1", job.id)
    assert done.attempt == 2
    assert [(e["attempt"], e["error"]) for e in done.errors] == [(1, REASON)]


# ---------------------------------------------------------------------------------------------
# What cancel reports
# ---------------------------------------------------------------------------------------------


async def test_cancel_counts_and_reports_running_jobs_and_leaves_finished_ones_alone(
    make_oban: Callable[..., Oban],
    events: Events,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    oban = await _runner(make_oban)
    done = await oban.enqueue(ConfCQuick.new({}))
    finished = await eventually(
        lambda: _state_is(oban, done.id, "completed"), message="first job completed"
    )
    running = await oban.enqueue(ConfCAsyncSleeper.new({}))
    await eventually(lambda: _seen("started", running.id), message="job started")
    waiting = await oban.enqueue(ConfCQuick.new({}, queue="confc_idle"))  # nobody runs it

    assert await oban.cancel_many_jobs([done, running, waiting, 987654321]) == 2

    assert events("oban.job.cancel") == [
        {"ids": sorted([_id(running), _id(waiting)]), "running": [running.id]}
    ]
    stopping = [
        r for r in caplog.records if r.name == "oban" and f"[{running.id}]" in r.getMessage()
    ]
    assert [r.levelno for r in stopping] == [logging.INFO], caplog.text
    await _settled(oban, "confc")
    assert [e["state"] for e in _job_events(events, "oban.job.stop", running.id)] == ["cancelled"]
    assert not _seen("completed", running.id)
    _assert_cancelled_while_executing(await _job(oban, running.id))
    # A job that was not running is cancelled without an error.
    not_run = await _job(oban, waiting.id)
    assert not_run.state == "cancelled" and not_run.errors == [] and not_run.attempt == 0
    # The job that completed before the cancel is untouched.
    after = await _job(oban, done.id)
    assert after.state == "completed"
    assert after.completed_at == finished.completed_at
    assert after.cancelled_at is None and after.errors == []
    assert "cancel_attempted_at" not in after.meta
    _no_stale_ack_warning(caplog)


async def test_cancel_of_only_finished_jobs_counts_none_and_reports_no_running_job(
    make_oban: Callable[..., Oban], events: Events
) -> None:
    oban = await _runner(make_oban)
    done = await oban.enqueue(ConfCQuick.new({}))
    finished = await eventually(
        lambda: _state_is(oban, done.id, "completed"), message="job completed"
    )

    assert await oban.cancel_job(done) == 0

    assert all(e == {"ids": [], "running": []} for e in events("oban.job.cancel"))
    after = await _job(oban, done.id)
    assert after.state == "completed" and after.completed_at == finished.completed_at
    assert after.cancelled_at is None and after.errors == []


# ---------------------------------------------------------------------------------------------
# Races between a pkill and the fetch that claims the job
# ---------------------------------------------------------------------------------------------


async def test_pkill_handled_before_the_job_task_first_runs_still_frees_its_queue_slot(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    oban = await _paused_runner(make_oban)
    loop = asyncio.get_running_loop()

    async def cancel(claimed: list[Job]) -> None:
        for job in claimed:
            # What Elixir's cancel_job does (row cancelled, then pkill), landing just as this
            # node claimed the job: the pkill is handled before the job's task first runs (it
            # is already queued when the producer creates that task).
            await sql(
                oban,
                "UPDATE oban_jobs SET state = 'cancelled', cancelled_at = %s WHERE id = %s",
                (datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], job.id),
            )
            message = {"action": "pkill", "job_id": job.id, "ident": "any"}
            loop.call_soon(oban._on_signal, message)

    job = await _sleeper_claimed_with(oban, cancel)
    await eventually(lambda: _state_is(oban, job.id, "cancelled"), message="job cancelled")

    await eventually(
        lambda: _running(oban, "confc_one") == [], timeout=2, message="the slot is free again"
    )
    after = await oban.enqueue(ConfCQuick.new({}, queue="confc_one"))
    await eventually(lambda: _state_is(oban, after.id, "completed"), timeout=2, message="next ran")
    assert not _seen("completed", job.id)
    assert (await _job(oban, job.id)).state == "cancelled"


async def test_bare_pkill_handled_before_the_job_task_first_runs_still_records_the_cancel(
    make_oban: Callable[..., Oban],
) -> None:
    # As above, but no canceller wrote the row: the node's ack must record the cancel, as it
    # does for a bare pkill to a job already running (test_execution_conformance).
    oban = await _paused_runner(make_oban)
    loop = asyncio.get_running_loop()

    async def pkill(claimed: list[Job]) -> None:
        for job in claimed:
            message = {"action": "pkill", "job_id": job.id, "ident": "any"}
            loop.call_soon(oban._on_signal, message)

    job = await _sleeper_claimed_with(oban, pkill)

    done = await eventually(
        lambda: _state_is(oban, job.id, "cancelled"), timeout=2, message="the cancel recorded"
    )
    assert not _seen("completed", job.id)
    assert done.completed_at is None and done.cancelled_at is not None
    assert [(e["attempt"], e["error"]) for e in done.errors] == [(1, REASON)]
    await _settled(oban, "confc_one")


async def test_cancel_landing_while_the_claiming_fetch_returns_still_stops_the_job(
    make_oban: Callable[..., Oban], caplog: pytest.LogCaptureFixture
) -> None:
    # A cancel that commits after this node's fetch claimed the job, while the fetch's result
    # is still on its way (on PostgreSQL another node's UPDATE and NOTIFY may well arrive
    # before it): every pkill for the job is handled before the producer registered the jobs
    # of that fetch and finds no running job here. The job must not run on regardless.
    caplog.set_level(logging.INFO)
    oban = await _paused_runner(make_oban)

    async def cancel(claimed: list[Job]) -> None:
        assert await oban.cancel_many_jobs(claimed) == len(claimed)
        await asyncio.sleep(0.1)  # the fetch result is slower than the pkill (NOTIFY)

    job = await _sleeper_claimed_with(oban, cancel)
    await eventually(lambda: _state_is(oban, job.id, "cancelled"), message="job cancelled")

    # Stopped, or never started: it does not sleep on for 5 s holding its slot.
    await _settled(oban, "confc_one")
    assert not _seen("completed", job.id)
    assert _seen("finally cancelled=True", job.id) or not _seen("started", job.id)
    _assert_cancelled_while_executing(await _job(oban, job.id))
    _no_stale_ack_warning(caplog)
