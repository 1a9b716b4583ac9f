"""Poison acks (issue 16, items 1 and 7): one outcome the database refuses never blocks the
acks of other jobs.

Before, the acker retried a refused batch as a whole, forever, ahead of newer acks: one job
whose error text or ``Cancel`` reason held a NUL byte (PostgreSQL refuses ``\\u0000``) or a
lone surrogate (the JSON encoder refuses it), a snooze of a job whose ``meta.snoozed`` is not
a number, six near-limit ``Record`` results in one batch (past PostgreSQL's 255 MB jsonb
limit) or ``Snooze(10**400)`` left every later job of the node ``executing``.

Each scenario runs a poison job among others on a running node (both engines unless the
scenario exists on one only) and asserts that the poison job ends in a final, recorded state,
that every other job completed exactly once, and that the node keeps acking later jobs.
The acker's splitting is also exercised directly against an engine that refuses chosen acks.
The last test replays a poison ack and a poison row against a real ``oban start`` process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Cancel, Job, Oban, Record, Snooze, worker
from oban._acker import Acker
from oban._engines import _payloads
from oban._engines.base import Ack
from oban.oban import _instances
from tests.acceptance import nodes_harness
from tests.acceptance.nodes_harness import LaunchNode, _until
from tests.conformance import conftest as conformance
from tests.helpers import eventually

# Both engines, through the conformance fixtures (assigned: an import would read as unused).
engine = conformance.engine
make_oban = conformance.make_oban
sql = conformance.sql
project = nodes_harness.project
launch_node = nodes_harness.launch_node

RUNS: Counter[int] = Counter()


@pytest.fixture(autouse=True)
def _clean_runs() -> None:
    RUNS.clear()


def _count(job: Job) -> None:
    assert job.id is not None
    RUNS[job.id] += 1


@worker(queue="default")
class HostileAckOk:
    async def process(self, job: Job) -> None:
        _count(job)


@worker(queue="default")
class HostileAckRaise:
    """Raises ``args["message"]`` (NUL bytes, lone surrogates or megabytes of it)."""

    async def process(self, job: Job) -> None:
        _count(job)
        message = job.args["message"]
        if job.args.get("repeat"):
            message *= job.args["repeat"]
        raise ValueError(message.replace("<NUL>", "\x00").replace("<SURROGATE>", "\ud800"))


@worker(queue="default")
class HostileAckCancel:
    async def process(self, job: Job) -> Cancel:
        _count(job)
        return Cancel("stop\x00now")


@worker(queue="default")
class HostileAckSnooze:
    async def process(self, job: Job) -> Snooze:
        _count(job)
        if job.args.get("forever"):
            return Snooze(10**400)
        meta = job.args.get("meta")
        if meta is not None:
            meta = {key: value.replace("<NUL>", "\x00") for key, value in meta.items()}
        return Snooze(60, meta=meta)


@worker(queue="default")
class HostileAckRecord:
    async def process(self, job: Job) -> Record:
        _count(job)
        return Record(b"\x00" * job.args["size"])


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


async def _settled(oban: Oban, job_id: int, states: Sequence[str]) -> Job | None:
    found = await oban.get_job(job_id)
    return found if found is not None and found.state in states else None


async def _all_completed(oban: Oban, ids: Sequence[int]) -> bool:
    for job_id in ids:
        if await _settled(oban, job_id, ("completed",)) is None:
            return False
    return True


async def _among_others(
    oban: Oban,
    poison: Job,
    settles_in: Sequence[str],
    *,
    others: int = 30,
    timeout: float = 15.0,
) -> Job:
    """Run ``poison`` amid ``others`` jobs on the started ``oban``; then more jobs after it.

    Returns the poison job once it reached one of ``settles_in``; asserts that every other
    job completed exactly once and that jobs inserted afterwards are acked too."""
    half = others // 2
    jobs = await oban.enqueue_many(
        [HostileAckOk.new({"n": n}) for n in range(half)]
        + [poison]
        + [HostileAckOk.new({"n": n}) for n in range(half, others)]
    )
    poison_id = jobs[half].id
    assert poison_id is not None
    ok_ids = [job.id for job in jobs if job.id != poison_id and job.id is not None]

    await eventually(
        lambda: _all_completed(oban, ok_ids),
        timeout=timeout,
        interval=0.1,
        message="every other job of the batch completed",
    )
    settled: Job = await eventually(
        lambda: _settled(oban, poison_id, settles_in),
        timeout=timeout,
        interval=0.1,
        message=f"the poison job reached {'/'.join(settles_in)}",
    )

    later = await oban.enqueue_many([HostileAckOk.new({"later": n}) for n in range(10)])
    later_ids = [job.id for job in later if job.id is not None]
    await eventually(
        lambda: _all_completed(oban, later_ids),
        timeout=timeout,
        interval=0.1,
        message="jobs inserted after the poison completed",
    )
    for job_id in ok_ids + later_ids:
        assert RUNS[job_id] == 1, f"job {job_id} ran {RUNS[job_id]} times"
    return settled


def _node(make_oban: Callable[..., Oban]) -> Oban:
    return make_oban(queues={"default": 10})


# ---------------------------------------------------------------------------------------------
# Error texts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("poison<NUL>byte", "poison\\x00byte"),
        ("lone <SURROGATE> surrogate", "lone \\ud800 surrogate"),
    ],
    ids=["nul", "surrogate"],
)
async def test_an_error_text_the_database_refuses_is_stored_escaped(
    make_oban: Callable[..., Oban], message: str, shown: str
) -> None:
    oban = _node(make_oban)
    async with oban:
        poison = HostileAckRaise.new({"message": message}, max_attempts=1)
        failed = await _among_others(oban, poison, ("discarded",))

    assert failed.id is not None and RUNS[failed.id] == 1
    (entry,) = failed.errors
    assert shown in entry["error"]
    assert "\x00" not in entry["error"]


async def test_a_huge_error_text_is_capped_with_a_note(make_oban: Callable[..., Oban]) -> None:
    oban = _node(make_oban)
    async with oban:
        poison = HostileAckRaise.new({"message": "0123456789", "repeat": 500_000}, max_attempts=1)
        failed = await _among_others(oban, poison, ("discarded",))

    (entry,) = failed.errors
    text = entry["error"]
    assert len(text) <= _payloads.MAX_ERROR_CHARS + 200
    assert "characters truncated" in text
    assert text.startswith("Traceback")
    assert text.rstrip().endswith("0123456789"), "the end of the message is kept"


async def test_a_cancel_reason_with_a_nul_byte_is_stored_escaped(
    make_oban: Callable[..., Oban],
) -> None:
    oban = _node(make_oban)
    async with oban:
        cancelled = await _among_others(oban, HostileAckCancel.new({}), ("cancelled",))

    (entry,) = cancelled.errors
    assert entry["error"] == "stop\\x00now"


# ---------------------------------------------------------------------------------------------
# Snoozes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "snoozed",
    ["x", [1], {"n": 1}, 1.5, -3, 2**62, None],
    ids=["text", "list", "object", "fraction", "negative", "huge", "null"],
)
async def test_a_snooze_counts_from_zero_when_meta_snoozed_is_not_a_count(
    make_oban: Callable[..., Oban], snoozed: Any
) -> None:
    oban = _node(make_oban)
    async with oban:
        poison = HostileAckSnooze.new({}, meta={"snoozed": snoozed, "keep": "me"})
        snoozing = await _among_others(oban, poison, ("scheduled",))

    assert snoozing.meta == {"snoozed": 1, "keep": "me"}
    assert snoozing.attempt == 0
    assert snoozing.errors == []


async def test_a_snooze_counts_on_from_a_whole_number(make_oban: Callable[..., Oban]) -> None:
    oban = _node(make_oban)
    async with oban:
        poison = HostileAckSnooze.new({}, meta={"snoozed": 4.0})
        snoozing = await _among_others(oban, poison, ("scheduled",))

    assert snoozing.meta == {"snoozed": 5}


async def test_snooze_of_10_to_the_400_seconds_is_bounded(
    make_oban: Callable[..., Oban],
) -> None:
    oban = _node(make_oban)
    async with oban:
        started = datetime.now(UTC)
        snoozing = await _among_others(
            oban, HostileAckSnooze.new({"forever": True}), ("scheduled",)
        )

    assert snoozing.scheduled_at is not None
    assert snoozing.scheduled_at > started + timedelta(days=365 * 300)
    assert snoozing.meta == {"snoozed": 1}


async def test_snooze_meta_the_database_refuses_is_left_out_and_noted(
    make_oban: Callable[..., Oban], engine: str
) -> None:
    oban = _node(make_oban)
    async with oban:
        poison = HostileAckSnooze.new({"meta": {"note": "a<NUL>b"}})
        snoozing = await _among_others(oban, poison, ("scheduled",))

    assert snoozing.attempt == 0
    if engine == "postgres":
        # PostgreSQL cannot store a NUL in jsonb: the snooze is kept, without its meta.
        assert snoozing.meta.get("note") is None
        (entry,) = snoozing.errors
        assert "could not store" in entry["error"]
        assert "meta" in entry["error"]
    else:
        assert snoozing.meta == {"note": "a\x00b", "snoozed": 1}
        assert snoozing.errors == []


# ---------------------------------------------------------------------------------------------
# Recorded values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
async def test_six_near_limit_records_are_written_in_batches_under_the_jsonb_limit(
    make_oban: Callable[..., Oban],
) -> None:
    # Six 47 MB binaries, about 63 MB each once encoded: 376 MB as one batch, past the 255 MB
    # a jsonb value may hold. The results are written in smaller batches.
    size = 47_000_000
    oban = make_oban(queues={"default": 6})
    async with oban:
        big = await oban.enqueue_many([HostileAckRecord.new({"size": size}) for _ in range(6)])
        ids = [job.id for job in big if job.id is not None]
        await eventually(
            lambda: _all_completed(oban, ids),
            timeout=90,
            interval=0.5,
            message="six big recorded results written",
        )
        later = await oban.enqueue_many([HostileAckOk.new({"n": n}) for n in range(5)])
        later_ids = [job.id for job in later if job.id is not None]
        await eventually(
            lambda: _all_completed(oban, later_ids), timeout=15, message="later jobs completed"
        )
        done = await oban.get_job(ids[0])

    assert done is not None
    assert len(done.meta["return"]) > 60_000_000
    for job_id in ids + later_ids:
        assert RUNS[job_id] == 1


# ---------------------------------------------------------------------------------------------
# The acker's splitting, against an engine that refuses chosen acks
# ---------------------------------------------------------------------------------------------


class RefusedError(Exception):
    """What a database raises for a value it cannot store (SQLSTATE class 22)."""

    sqlstate = "22P05"


class UnreachableError(Exception):
    """A lost connection: no SQLSTATE of the data classes."""

    sqlstate = "08006"


class RefusingEngine:
    """Writes acks into ``written`` unless the batch holds one that ``refuses`` rejects."""

    def __init__(self, refuses: Callable[[Ack], bool]) -> None:
        self.refuses = refuses
        self.calls: list[list[int]] = []
        self.written: Counter[int] = Counter()
        self.stored: dict[int, Ack] = {}
        self.outages = 0

    async def ack_jobs(self, acks: Sequence[Ack]) -> set[int]:
        self.calls.append([ack.id for ack in acks])
        if self.outages:
            self.outages -= 1
            raise UnreachableError("connection lost")
        if any(self.refuses(ack) for ack in acks):
            raise RefusedError("unsupported Unicode escape sequence")
        for ack in acks:
            self.written[ack.id] += 1
            self.stored[ack.id] = ack
        return {ack.id for ack in acks}


def _acks(count: int) -> list[Ack]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return [Ack(n, at, "completed", queue="default") for n in range(1, count + 1)]


async def _drain(engine: RefusingEngine, acks: list[Ack]) -> Acker:
    acker = Acker(engine, delay=0, max_backoff=0.01)  # type: ignore[arg-type]
    acker.start()
    for ack in acks:
        acker.push(ack)
    try:
        assert await acker.flush(timeout=5.0), "the acks were not all written"
    finally:
        await acker.stop(timeout=1.0)
    return acker


async def test_the_acker_splits_a_refused_batch_until_the_bad_ack_is_alone() -> None:
    acks = _acks(1000)
    acks[636].error = "poison"
    acks[636].state = "retryable"
    acks[636].meta = {"poison": True}
    engine = RefusingEngine(lambda ack: bool(ack.meta and ack.meta.get("poison")))

    acker = await _drain(engine, acks)

    assert acker.pending == 0
    assert all(engine.written[n] == 1 for n in range(1, 1001)), "every ack written once"
    # The bad ack alone, made storable: its state kept, its meta left out, the reason noted.
    stored = engine.stored[637]
    assert stored.state == "retryable"
    assert stored.meta is None
    assert stored.error is not None and "poison" in stored.error
    assert "could not store" in stored.error
    # Splitting in halves: about two statements per level, not one per ack.
    assert len(engine.calls) <= 2 * 10 + 4, len(engine.calls)


async def test_an_ack_refused_in_every_form_ends_discarded_or_is_dropped_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    acks = _acks(50)
    # Refused with its error, then discarded with a note is refused too: discarded bare.
    acks[10].error = "bad"
    acks[10].state = "retryable"

    # Refused in any form: dropped with an error in the log, never retried.
    def refuses(ack: Ack) -> bool:
        return (ack.id == 11 and ack.error is not None) or ack.id == 31

    engine = RefusingEngine(refuses)

    with caplog.at_level(logging.ERROR, logger="oban.acker"):
        acker = await _drain(engine, acks)

    assert acker.pending == 0
    assert engine.stored[11].state == "discarded"
    assert engine.stored[11].error is None
    assert 31 not in engine.written
    assert all(engine.written[n] == 1 for n in range(1, 51) if n != 31)
    assert any("31" in record.getMessage() for record in caplog.records)
    calls = len(engine.calls)
    await asyncio.sleep(0.2)
    assert len(engine.calls) == calls, "the dropped ack was retried"


async def test_a_lost_connection_retries_the_whole_batch_without_splitting() -> None:
    engine = RefusingEngine(lambda ack: False)
    engine.outages = 2

    await _drain(engine, _acks(64))

    assert engine.calls[:3] == [list(range(1, 65))] * 3
    assert all(engine.written[n] == 1 for n in range(1, 65))


async def test_an_outage_while_splitting_keeps_the_acks_not_yet_written() -> None:
    acks = _acks(16)
    acks[3].meta = {"poison": True}
    engine = RefusingEngine(lambda ack: bool(ack.meta and ack.meta.get("poison")))
    original = engine.ack_jobs
    failed_once: list[bool] = []

    async def flaky(batch: Sequence[Ack]) -> set[int]:
        if len(engine.calls) == 2 and not failed_once:  # the second half, after a split
            failed_once.append(True)
            engine.calls.append([ack.id for ack in batch])
            raise UnreachableError("connection lost")
        return await original(batch)

    engine.ack_jobs = flaky  # type: ignore[method-assign,assignment]
    await _drain(engine, acks)

    assert failed_once
    assert all(engine.written[n] == 1 for n in range(1, 17))
    assert engine.stored[4].meta is None


def test_acker_batches_are_bounded_in_size() -> None:
    acker = Acker(RefusingEngine(lambda ack: False))  # type: ignore[arg-type]
    big = 20_000_000
    acks = _acks(10)
    for ack in acks[:6]:
        ack.meta = {"recorded": True, "return": "A" * big}
    for ack in acks:
        acker.push(ack)

    sizes = []
    while acker.pending - acker._inflight:
        batch = acker.take()
        sizes.append(len(batch))
        assert sum(_payloads.ack_weight(ack) for ack in batch) <= max(
            _payloads.MAX_BATCH_WEIGHT, max(_payloads.ack_weight(ack) for ack in batch)
        )
    assert sum(sizes) == 10
    assert len(sizes) >= 4, sizes


# ---------------------------------------------------------------------------------------------
# A real node: a poison ack and a poison row while other jobs flow
# ---------------------------------------------------------------------------------------------

POISON_WORKERS = textwrap.dedent(
    """
    import os

    from oban import worker


    def _log(path, line):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\\n")


    @worker(queue="default")
    class FlowOk:
        async def process(self, job):
            _log(job.args["log"], f"done {job.id} {os.getpid()} {job.attempt}")


    @worker(queue="default")
    class FlowPoison:
        async def process(self, job):
            _log(job.args["log"], f"poison {job.id} {os.getpid()} {job.attempt}")
            raise ValueError("refused\\x00by PostgreSQL")
    """
)


async def _pg(pool: AsyncConnectionPool[Any], prefix: str, query: str, params: Any = None) -> Any:
    async with pool.connection() as conn:
        await conn.execute(f'SET search_path TO "{prefix}"')
        try:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []
        finally:
            await conn.execute("RESET search_path")


async def test_a_real_node_survives_a_poison_ack_and_a_poison_row(
    dsn: str,
    prefix: str,
    pool: AsyncConnectionPool[Any],
    project: Path,
    launch_node: LaunchNode,
) -> None:
    (project / "poison_workers.py").write_text(POISON_WORKERS)
    log = project / "flow.log"
    client = Oban(name="hostile_client", pool=pool, prefix=prefix)
    node = await launch_node("hostile-1", dsn=dsn, prefix=prefix, queues="default:5")
    try:
        await _until(
            lambda: _pg(pool, prefix, "SELECT 1 FROM oban_producers WHERE node = 'hostile-1'"),
            node,
            timeout=20,
            message="the node registered its producer",
        )
        ok_ids: list[int] = []

        async def flow(count: int) -> None:
            jobs = await client.enqueue_many(
                [Job("poison_workers.FlowOk", args={"log": str(log)}) for _ in range(count)]
            )
            ok_ids.extend(job.id for job in jobs if job.id is not None)

        await flow(20)
        poison_ack = await client.enqueue(
            Job("poison_workers.FlowPoison", args={"log": str(log)}, max_attempts=1)
        )
        # A row the decoder cannot read: a 400-digit integer in args, as Elixir writes it.
        rows = await _pg(
            pool,
            prefix,
            "INSERT INTO oban_jobs (state, queue, worker, args) VALUES ('available', 'default', "
            "'poison_workers.FlowOk', ('{\"n\": ' || repeat('9', 400) || '}')::jsonb) "
            "RETURNING id",
        )
        poison_row = rows[0][0]
        for _ in range(4):
            await flow(20)
            await asyncio.sleep(0.2)

        async def finished() -> bool:
            found = await _pg(
                pool,
                prefix,
                "SELECT count(*) FROM oban_jobs WHERE id = ANY(%s) AND state = 'completed'",
                (ok_ids,),
            )
            return bool(found[0][0] == len(ok_ids))

        await _until(finished, node, timeout=30, message="every other job completed")

        ack_state, ack_errors = (
            await _pg(
                pool, prefix, "SELECT state, errors FROM oban_jobs WHERE id = %s", (poison_ack.id,)
            )
        )[0]
        assert ack_state == "discarded", node.tail()
        assert "refused\\x00by PostgreSQL" in ack_errors[0]["error"]
        row_state, row_errors = (
            await _pg(
                pool, prefix, "SELECT state, errors FROM oban_jobs WHERE id = %s", (poison_row,)
            )
        )[0]
        assert row_state == "discarded", node.tail()
        assert "args" in row_errors[0]["error"]

        lines = [line.split() for line in log.read_text().splitlines()]
        done = Counter(int(parts[1]) for parts in lines if parts[0] == "done")
        assert all(done[job_id] == 1 for job_id in ok_ids), "a job ran twice or never"
        assert poison_row not in done, "the unreadable row ran"

        # The node still heartbeats: its producer row is refreshed within two intervals.
        async def heartbeat() -> Any:
            return await _pg(
                pool,
                prefix,
                "SELECT updated_at FROM oban_producers WHERE node = 'hostile-1'",
            )

        (before,) = (await heartbeat())[0]
        await asyncio.sleep(1.2)  # two refresher intervals (oban.toml: 0.5 s)
        (after,) = (await heartbeat())[0]
        assert after > before, "the node stopped heartbeating"

        started = time.monotonic()
        node.signal(signal.SIGTERM)
        code = await node.exit_code(timeout=15)
        assert code == 0, node.tail()
        assert time.monotonic() - started < 10 + 2, "not stopped within its grace period"
    finally:
        await client.stop()
        _instances.pop(client.name, None)
