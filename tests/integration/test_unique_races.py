"""Unique jobs under concurrency: the database, not the client, decides who holds a key.

Every inserter below runs on a connection of its own, most inside a transaction of their own
(``oban.enqueue(job, conn=conn)``), so that the races are the server's: 50 inserters of one
key; an insert that waits for an uncommitted holder which then rolls back or commits (Elixir
Oban issues 1087 and 1093); batches of overlapping keys in opposite orders (a deadlock unless
every insert takes its keys in one order); OS processes on PostgreSQL and on one SQLite file;
a REPEATABLE READ caller whose snapshot cannot see the holder. Whatever the interleaving, a
key ends with exactly one row, its inserter is told ``conflict is False`` and every other
caller ``conflict is True`` with that row's id.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import textwrap
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import psycopg
import pytest
from psycopg import sql as psql

from oban import Job, Oban, worker
from oban.oban import _instances
from tests.helpers import eventually, oban_factory, reap
from tests.processes import subprocess_env

T = TypeVar("T")

QUEUE = "uniq_races"


@worker(queue=QUEUE, unique=True)
class UniqRace:
    async def process(self, job: Job) -> None:
        return None


# Helpers


async def connect(
    dsn: str, n: int = 1, *, autocommit: bool = False
) -> list[psycopg.AsyncConnection[Any]]:
    """``n`` connections of their own (not from the pool): each is its own backend."""
    conns: list[psycopg.AsyncConnection[Any]] = []
    try:
        for _ in range(n):
            conns.append(await psycopg.AsyncConnection.connect(dsn, autocommit=autocommit))
    except BaseException:
        await close(conns)
        raise
    return conns


async def close(conns: Iterable[psycopg.AsyncConnection[Any]]) -> None:
    for conn in conns:
        await conn.close()


async def all_at_once(calls: Sequence[Callable[[], Awaitable[T]]], timeout: float = 60) -> list[T]:
    """Run ``calls`` as tasks released together by one gate; the first error cancels the rest
    and is raised."""
    gate = asyncio.Event()

    async def gated(call: Callable[[], Awaitable[T]]) -> T:
        await gate.wait()
        return await call()

    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            tasks = [group.create_task(gated(call)) for call in calls]
            await asyncio.sleep(0)  # every task waits at the gate
            gate.set()
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0]  # the first error as itself, not wrapped in a group
    return [task.result() for task in tasks]


async def rows_of(sql: Callable[..., Any], race: str) -> list[tuple[int, str, str]]:
    """``(id, uniq_key, state)`` of every row of one race, by id."""
    rows: list[tuple[int, str, str]] = await sql(
        "SELECT id, meta->>'uniq_key', state::text FROM oban_jobs WHERE args->>'race' = %s "
        "ORDER BY id",
        (race,),
    )
    return rows


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE of ``error`` or of an error it was raised from."""
    seen: BaseException | None = error
    while seen is not None:
        state = getattr(seen, "sqlstate", None)
        if state:
            return str(state)
        seen = seen.__cause__ or seen.__context__
    return None


# The index behind it all


async def test_the_database_refuses_a_second_holder_of_a_key(
    oban: Oban, sql: Callable[..., Any], dsn: str, prefix: str
) -> None:
    """The races below are only safe if PostgreSQL itself enforces the key: a partial unique
    index on ``meta->>'uniq_key'``. A raw copy of a holder's row (what a client without the
    check, or an Elixir node, would write) is refused."""
    rows = await sql(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = %s",
        (prefix, "oban_jobs_unique_index"),
    )
    assert len(rows) == 1, f"no oban_jobs_unique_index in schema {prefix!r}"
    definition = rows[0][0]
    assert definition.startswith("CREATE UNIQUE INDEX"), definition
    assert "uniq_key" in definition and " WHERE " in definition, definition

    job = await oban.enqueue(UniqRace.new({"race": "raw-copy"}))
    assert job.conflict is False
    copy = psql.SQL(
        "INSERT INTO {table} (state, queue, worker, args, meta) "
        "SELECT state, queue, worker, args, meta FROM {table} WHERE id = %s"
    ).format(table=psql.Identifier(prefix, "oban_jobs"))
    [conn] = await connect(dsn, autocommit=True)
    try:
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute(copy, (job.id,))
    finally:
        await conn.close()
    assert [row[0] for row in await rows_of(sql, "raw-copy")] == [job.id]


# 1. Many inserters of one key at once


INSERTERS = 50


@pytest.mark.parametrize("build", ["worker", "job"])
async def test_fifty_concurrent_inserters_leave_one_row_and_name_it(
    oban: Oban, sql: Callable[..., Any], dsn: str, build: str
) -> None:
    """50 backends insert one key at the same moment, each in its own transaction that
    commits right after the insert: one row; its inserter alone sees ``conflict is False``;
    the 49 others get their own ``Job`` back describing that row (its id, ``conflict``)."""
    conns = await connect(dsn, INSERTERS)
    try:
        for round_ in range(3):
            race = f"fifty-{build}-{round_}"

            def new() -> Job:
                if build == "worker":
                    return UniqRace.new({"race": race})
                return Job(UniqRace._worker_name, queue=QUEUE, args={"race": race}, unique=True)

            def inserter(conn: psycopg.AsyncConnection[Any]) -> Callable[[], Awaitable[Any]]:
                async def insert() -> tuple[Job, Job]:
                    job = new()
                    async with conn.transaction():
                        inserted = await oban.enqueue(job, conn=conn)
                    return job, inserted

                return insert

            results = await all_at_once([inserter(conn) for conn in conns])

            rows = await rows_of(sql, race)
            assert len(rows) == 1, f"round {round_}: {len(rows)} rows for one key: {rows}"
            [(row_id, row_key, row_state)] = rows
            assert row_state == "available"
            assert all(given is returned for given, returned in results)
            jobs = [returned for _, returned in results]
            winners = [job for job in jobs if job.conflict is False]
            losers = [job for job in jobs if job.conflict is True]
            assert [job.id for job in winners] == [row_id], (round_, rows, winners)
            assert len(losers) == INSERTERS - 1
            assert Counter(job.id for job in losers) == {row_id: INSERTERS - 1}
            assert {job.meta.get("uniq_key") for job in jobs} == {row_key}
    finally:
        await close(conns)


# 2. The holder's transaction is still open: wait for it, then decide


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
@pytest.mark.parametrize("second", ["transaction", "pool"])
async def test_an_insert_waits_for_an_uncommitted_holder_then_follows_its_outcome(
    oban: Oban, sql: Callable[..., Any], dsn: str, outcome: str, second: str
) -> None:
    """Elixir Oban 1087/1093: A inserts a key in a transaction and holds it open; B inserts
    the same key (in a transaction of its own, or through the pool) and must wait, neither
    answering "duplicate of a job that may never exist" nor inserting a second row. When A
    rolls back, B inserts (``conflict is False``, a new id, the only row); when A commits, B
    is a conflict naming A's job."""
    race = f"holder-{outcome}-{second}"
    conn_a, conn_b = await connect(dsn, 2)
    try:
        first = await oban.enqueue(UniqRace.new({"race": race}), conn=conn_a)
        assert first.conflict is False and first.id is not None
        first_id = first.id

        async def insert_b() -> Job:
            job = UniqRace.new({"race": race})
            if second == "transaction":
                inserted = await oban.enqueue(job, conn=conn_b)
                await conn_b.commit()
                return inserted
            return await oban.enqueue(job)

        waiting = asyncio.create_task(insert_b())
        try:
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            assert not done, (
                "B's insert of a key held by A's uncommitted transaction returned before A "
                f"ended: {waiting.result() if not waiting.exception() else waiting.exception()!r}"
            )
            if second == "transaction":
                pid = conn_b.info.backend_pid
                await eventually(
                    lambda: sql(
                        "SELECT 1 FROM pg_stat_activity WHERE pid = %s "
                        "AND wait_event_type = 'Lock'",
                        (pid,),
                    ),
                    message="B waiting on a lock in PostgreSQL",
                )
            assert await rows_of(sql, race) == []  # A's row is not committed
            if outcome == "rollback":
                await conn_a.rollback()
            else:
                await conn_a.commit()
            answer = await asyncio.wait_for(waiting, 10)
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
    finally:
        await close([conn_a, conn_b])

    rows = await rows_of(sql, race)
    assert len(rows) == 1, rows
    [(row_id, _, _)] = rows
    if outcome == "rollback":
        assert answer.conflict is False, "B was told of a duplicate that was rolled back"
        assert answer.id is not None and answer.id != first_id
        assert row_id == answer.id
    else:
        assert answer.conflict is True
        assert answer.id == first_id
        assert row_id == first_id


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
async def test_sqlite_insert_waits_for_a_caller_transaction_holding_the_key(
    tmp_path: Path, outcome: str
) -> None:
    """The same race on one SQLite file: A's caller transaction (``BEGIN IMMEDIATE``, the
    file's write lock) holds the key; B, another instance on its own connection, waits for
    the lock rather than answer from a stale read, then inserts (A rolled back) or answers
    with A's job (A committed)."""
    path = tmp_path / "holder.db"
    dsn = f"sqlite:///{path}"
    async with oban_factory() as make:
        oban_a, oban_b = make(dsn=dsn, name="holder-a"), make(dsn=dsn, name="holder-b")
        assert await oban_a.get_job(1) is None  # both open (and install) before the race
        assert await oban_b.get_job(1) is None
        conn = await aiosqlite.connect(path, isolation_level=None)
        waiting: asyncio.Task[Job] | None = None
        try:
            await conn.execute("BEGIN IMMEDIATE")
            first = await oban_a.enqueue(UniqRace.new({"race": "sqlite-holder"}), conn=conn)
            assert first.conflict is False and first.id is not None
            first_id = first.id
            waiting = asyncio.create_task(oban_b.enqueue(UniqRace.new({"race": "sqlite-holder"})))
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            assert not done, f"B returned while A held the key uncommitted: {waiting!r}"
            await conn.execute(outcome.upper())
            answer = await asyncio.wait_for(waiting, 10)
        finally:
            if waiting is not None and not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
            await conn.close()

    with sqlite3.connect(path) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM oban_jobs ORDER BY id")]
    assert len(ids) == 1, ids
    if outcome == "rollback":
        assert answer.conflict is False
        assert answer.id is not None and ids == [answer.id]
    else:
        assert answer.conflict is True
        assert answer.id == first_id and ids == [first_id]


# 3. Overlapping batches in opposite orders


ITERATIONS = 120


@pytest.mark.parametrize("mode", ["transaction", "autocommit"])
async def test_overlapping_batches_in_opposite_orders_never_deadlock(
    oban: Oban, sql: Callable[..., Any], dsn: str, mode: str
) -> None:
    """Two ``enqueue_many`` batches, keys 0-29 ascending and keys 39-10 descending (20 keys in
    common), on two backends at once, 120 times. Were each batch to take its keys in its own
    order, each would wait for a key the other holds: PostgreSQL's deadlock error (40P01).
    None may occur; each key ends with one row, named by both answers, exactly one of which
    inserted it."""
    race = f"batches-{mode}"
    conns = await connect(dsn, 2, autocommit=mode == "autocommit")
    answers: dict[tuple[int, int], list[tuple[int | None, bool]]] = defaultdict(list)
    try:
        for i in range(ITERATIONS):

            def batch(
                conn: psycopg.AsyncConnection[Any], keys: list[int], i: int = i
            ) -> Callable[[], Awaitable[list[tuple[int, Job]]]]:
                async def insert() -> list[tuple[int, Job]]:
                    jobs = [UniqRace.new({"race": race, "i": i, "k": k}) for k in keys]
                    try:
                        inserted = await oban.enqueue_many(jobs, conn=conn)
                        if mode == "transaction":
                            await conn.commit()
                    except psycopg.Error as error:
                        if sqlstate_of(error) == "40P01":
                            pytest.fail(f"iteration {i}: deadlock between two batches: {error}")
                        raise
                    return list(zip(keys, inserted, strict=True))

                return insert

            ascending = list(range(30))
            descending = list(range(39, 9, -1))
            results = await all_at_once([batch(conns[0], ascending), batch(conns[1], descending)])
            for pairs in results:
                for k, job in pairs:
                    answers[i, k].append((job.id, job.conflict))
    finally:
        await close(conns)

    rows = await sql(
        "SELECT (args->>'i')::int, (args->>'k')::int, array_agg(id) FROM oban_jobs "
        "WHERE args->>'race' = %s GROUP BY 1, 2",
        (race,),
    )
    holders = {(i, k): ids for i, k, ids in rows}
    assert len(holders) == ITERATIONS * 40
    duplicated = {key: ids for key, ids in holders.items() if len(ids) != 1}
    assert not duplicated, f"keys with more than one row: {duplicated}"
    for key, given in answers.items():
        [row_id] = holders[key]
        assert {job_id for job_id, _ in given} == {row_id}, (key, given, row_id)
        assert sorted(conflict for _, conflict in given) == (
            [False, True] if len(given) == 2 else [False]
        ), (key, given)


async def test_a_batch_holding_one_key_twice_inserts_it_once(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    """Within one statement the second copy of a key meets the first: one row, the first
    copy inserted it, the second is a conflict naming it; the jobs around them are kept."""
    jobs = [
        UniqRace.new({"race": "twice", "k": 1}),
        UniqRace.new({"race": "twice", "k": 2}),
        UniqRace.new({"race": "twice", "k": 1}),
        UniqRace.new({"race": "twice", "k": 3}),
    ]
    inserted = await oban.enqueue_many(jobs)
    rows = await sql(
        "SELECT (args->>'k')::int, id FROM oban_jobs WHERE args->>'race' = 'twice' ORDER BY 1"
    )
    ids = dict(rows)
    assert len(rows) == 3 and sorted(ids) == [1, 2, 3], rows
    assert [job.conflict for job in inserted] == [False, False, True, False]
    assert [job.id for job in inserted] == [ids[1], ids[2], ids[1], ids[3]]


# 4. Separate OS processes


PROCESSES = 4
KEYS = 40
SINGLES = 20  # keys 0..19 one enqueue each, 20..39 in batches of five

RACER = textwrap.dedent(
    """
    import asyncio
    import json
    import random
    import sys

    from oban import Job, Oban

    WORKER = "races.UniqueRacer"


    def new(k):
        return Job(WORKER, queue="races", args={"k": k}, unique=True)


    async def main(dsn, prefix, seed, keys, singles):
        options = {"prefix": prefix} if prefix else {}
        oban = Oban(dsn=dsn, name=f"racer-{seed}", **options)
        try:
            assert await oban.get_job(1) is None  # the database is open before the start
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            order = list(range(keys))
            random.Random(seed).shuffle(order)
            answers = []
            for k in [k for k in order if k < singles]:
                job = await oban.enqueue(new(k))
                answers.append([k, job.id, job.conflict])
            batched = [k for k in order if k >= singles]
            for start in range(0, len(batched), 5):
                chunk = batched[start : start + 5]
                jobs = await oban.enqueue_many([new(k) for k in chunk])
                answers.extend([k, job.id, job.conflict] for k, job in zip(chunk, jobs))
            print(json.dumps(answers), flush=True)
        finally:
            await oban.stop()


    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                     int(sys.argv[5])))
    """
)


async def _race_processes(script: Path, dsn: str, prefix: str) -> list[list[list[Any]]]:
    """Start the racers, let them all open the database, release them together, and return
    each one's answers ``[key, id, conflict]``."""
    procs: list[asyncio.subprocess.Process] = []
    try:
        for seed in range(PROCESSES):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(script),
                    dsn,
                    prefix,
                    str(seed),
                    str(KEYS),
                    str(SINGLES),
                    cwd=script.parent,
                    env=subprocess_env(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if line.strip() != b"ready":
                assert proc.stderr is not None
                err = await asyncio.wait_for(proc.stderr.read(), 10)
                raise AssertionError(f"racer not ready: {line!r} {err.decode()}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        await asyncio.gather(*(proc.stdin.drain() for proc in procs if proc.stdin))
        outputs = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate() for proc in procs)), 60
        )
    finally:
        for proc in procs:
            await reap(proc)
    answers: list[list[list[Any]]] = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        answers.append(json.loads(out.decode().strip().splitlines()[-1]))
    return answers


def _check_answers(answers: list[list[list[Any]]], holders: dict[int, list[int]]) -> None:
    assert sorted(holders) == list(range(KEYS)), holders
    duplicated = {k: ids for k, ids in holders.items() if len(ids) != 1}
    assert not duplicated, f"keys with more than one row: {duplicated}"
    by_key: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for process in answers:
        assert sorted(k for k, _, _ in process) == list(range(KEYS))
        for k, job_id, conflict in process:
            by_key[k].append((job_id, conflict))
    for k, given in by_key.items():
        [row_id] = holders[k]
        assert [job_id for job_id, _ in given] == [row_id] * PROCESSES, (k, given, row_id)
        assert sorted(conflict for _, conflict in given) == [False] + [True] * (PROCESSES - 1), (
            k,
            given,
        )


async def test_processes_on_postgres_insert_each_key_once(
    tmp_path: Path, dsn: str, prefix: str, sql: Callable[..., Any]
) -> None:
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    answers = await _race_processes(script, dsn, prefix)
    rows = await sql(
        "SELECT (args->>'k')::int, array_agg(id) FROM oban_jobs "
        "WHERE worker = 'races.UniqueRacer' GROUP BY 1"
    )
    _check_answers(answers, dict(rows))


async def test_processes_on_one_sqlite_file_insert_each_key_once(tmp_path: Path) -> None:
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    db = tmp_path / "races.db"
    installer = Oban(dsn=f"sqlite:///{db}", name="races-installer")
    try:
        assert await installer.get_job(1) is None  # first use creates the schema
    finally:
        await installer.stop()
        _instances.pop(installer.name, None)

    answers = await _race_processes(script, f"sqlite:///{db}", "")

    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT json_extract(args, '$.k'), id FROM oban_jobs WHERE worker = ?",
            ("races.UniqueRacer",),
        ).fetchall()
    holders: dict[int, list[int]] = defaultdict(list)
    for k, job_id in found:
        holders[int(k)].append(job_id)
    _check_answers(answers, dict(holders))


# 5. A REPEATABLE READ caller whose snapshot cannot see the holder


@pytest.mark.parametrize("holder", ["committed-before-insert", "committed-while-waiting"])
async def test_repeatable_read_caller_never_makes_a_duplicate(
    oban: Oban, sql: Callable[..., Any], dsn: str, prefix: str, holder: str
) -> None:
    """The caller's REPEATABLE READ snapshot is taken before another client commits the key
    (before the caller's insert, or while the insert waits for it). The holder is then
    invisible to every statement of the caller's transaction: PostgreSQL's ``ON CONFLICT DO
    NOTHING`` raises a serialization failure (SQLSTATE 40001) rather than skip a row the
    snapshot cannot see, so the caller retries its transaction; an implementation that
    answered instead must say ``conflict`` with ``id is None`` (the holder cannot be read
    there). Never a second row, never ``conflict is False``."""
    race = f"repeatable-{holder}"
    [caller] = await connect(dsn)
    [other] = await connect(dsn)
    outcome: str
    try:
        await caller.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        snapshot = psql.SQL("SELECT count(*) FROM {}.oban_jobs").format(psql.Identifier(prefix))
        await caller.execute(snapshot)  # the transaction's snapshot is taken here
        held = await oban.enqueue(UniqRace.new({"race": race}), conn=other)
        assert held.conflict is False
        if holder == "committed-before-insert":
            await other.commit()
        duplicate = asyncio.create_task(oban.enqueue(UniqRace.new({"race": race}), conn=caller))
        try:
            if holder == "committed-while-waiting":
                done, _ = await asyncio.wait({duplicate}, timeout=0.3)
                assert not done, "the insert did not wait for the uncommitted holder"
                await other.commit()
            try:
                answer = await asyncio.wait_for(duplicate, 10)
            except psycopg.Error as error:
                assert sqlstate_of(error) == "40001", f"not a serialization failure: {error!r}"
                outcome = "serialization failure"
                await caller.rollback()
            else:
                assert answer.conflict is True, (
                    "a REPEATABLE READ insert of a key committed after its snapshot was told "
                    f"it inserted (id {answer.id})"
                )
                assert answer.id is None, (
                    f"the holder is invisible to this snapshot, yet the answer names id {answer.id}"
                )
                outcome = "conflict without id"
                await caller.commit()
        finally:
            if not duplicate.done():
                duplicate.cancel()
                await asyncio.gather(duplicate, return_exceptions=True)
    finally:
        await close([caller, other])

    assert outcome in ("serialization failure", "conflict without id")
    rows = await rows_of(sql, race)
    assert [row[0] for row in rows] == [held.id], f"{outcome}: {rows}"


async def test_replacing_batches_in_opposite_orders_never_deadlock(oban: Oban, dsn: str) -> None:
    """Duplicates with ``replace=`` update the jobs holding their keys: two batches naming the
    same 40 holders in opposite orders, on two connections at once, 200 times. Each locks the
    holders in id order, so neither waits for a row the other holds while holding one it
    wants: no deadlock (40P01), and every answer names its holder."""
    keys = list(range(40))
    options: dict[str, Any] = {"replace": {"available": ["meta", "priority"]}}
    originals = await oban.enqueue_many(
        [UniqRace.new({"race": "replace", "k": k}, **options) for k in keys]
    )
    holder_of = {k: job.id for k, job in zip(keys, originals, strict=True)}
    conns = await connect(dsn, 2, autocommit=True)
    try:
        for i in range(200):

            def batch(
                conn: psycopg.AsyncConnection[Any], order: list[int], i: int = i
            ) -> Callable[[], Awaitable[list[tuple[int, Job]]]]:
                async def replace() -> list[tuple[int, Job]]:
                    jobs = [
                        UniqRace.new(
                            {"race": "replace", "k": k},
                            meta={"round": i},
                            priority=i % 10,
                            **options,
                        )
                        for k in order
                    ]
                    try:
                        answered = await oban.enqueue_many(jobs, conn=conn)
                    except psycopg.Error as error:
                        if sqlstate_of(error) == "40P01":
                            pytest.fail(f"round {i}: deadlock between two replacements: {error}")
                        raise
                    return list(zip(order, answered, strict=True))

                return replace

            results = await all_at_once(
                [batch(conns[0], keys), batch(conns[1], list(reversed(keys)))]
            )
            for pairs in results:
                for k, job in pairs:
                    assert job.conflict and job.id == holder_of[k], (i, k, job)
    finally:
        await close(conns)
