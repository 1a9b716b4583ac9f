"""The SQLite engine, operation by operation, on real database files (no mocks)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
import pytest

from oban._engines.base import Ack
from oban._engines.sqlite import (
    SCHEMA_VERSION,
    SQLiteEngine,
    format_timestamp,
    parse_timestamp,
)
from oban._wire import encode_payload
from oban.errors import DatabaseUnavailableError, SchemaNotInstalledError
from oban.job import Job, JobState
from tests.helpers import eventually, reap

WORKER = "tests.engine.SQLiteEngineWorker"
OLD = "2000-01-01 00:00:00.000"

Query = Callable[..., list[Any]]


def job(**fields: Any) -> Job:
    return Job(WORKER, **fields)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "oban.db")


@pytest.fixture
async def engine(db_path: str) -> AsyncIterator[SQLiteEngine]:
    engine = SQLiteEngine(db_path)
    try:
        await engine.open()
        await engine.install()
        yield engine
    finally:
        await engine.close()


@pytest.fixture
def sql(db_path: str) -> Iterator[Query]:
    """Run SQL on a separate plain connection to the same file (autocommit)."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)

    def run(query: str, params: Any = ()) -> list[Any]:
        return conn.execute(query, params).fetchall()

    try:
        yield run
    finally:
        conn.close()


@pytest.fixture
def notified(engine: SQLiteEngine) -> list[tuple[str, dict[str, Any]]]:
    messages: list[tuple[str, dict[str, Any]]] = []
    engine.local_notify = lambda channel, message: messages.append((channel, message))
    return messages


async def trace(engine: SQLiteEngine) -> list[str]:
    """Record every statement the engine's connection runs from now on."""
    statements: list[str] = []
    assert engine._conn is not None
    await engine._conn.set_trace_callback(statements.append)
    return statements


def now() -> datetime:
    return datetime.now(UTC)


def close_to_now(value: datetime | None, seconds: float = 5.0) -> bool:
    return value is not None and abs((value - now()).total_seconds()) < seconds


async def claim(engine: SQLiteEngine, queue: str = "default", demand: int = 100) -> list[Job]:
    return await engine.fetch_jobs(queue, demand, "node-1", "producer-1")


# Timestamps


def test_timestamps_round_trip_exactly_in_one_sortable_format() -> None:
    aware = datetime(2024, 3, 5, 7, 8, 9, 123456, tzinfo=UTC)
    assert format_timestamp(aware) == "2024-03-05 07:08:09.123"
    assert format_timestamp(aware.replace(tzinfo=None)) == "2024-03-05 07:08:09.123"
    plus_two = aware.astimezone(timezone(timedelta(hours=2)))
    assert format_timestamp(plus_two) == "2024-03-05 07:08:09.123"
    parsed = parse_timestamp("2024-03-05 07:08:09.123")
    assert parsed == datetime(2024, 3, 5, 7, 8, 9, 123000, tzinfo=UTC)
    assert parsed is not None and format_timestamp(parsed) == "2024-03-05 07:08:09.123"
    assert parse_timestamp(None) is None
    assert format_timestamp(datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)) < format_timestamp(
        datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    )


async def test_database_clock_uses_the_same_format(engine: SQLiteEngine, sql: Query) -> None:
    [inserted] = await engine.insert_jobs([job()])
    [(text,)] = sql("SELECT inserted_at FROM oban_jobs")
    assert len(text) == len("2024-03-05 07:08:09.123") and text[10] == " "
    assert inserted.inserted_at is not None
    assert format_timestamp(inserted.inserted_at) == text
    assert close_to_now(inserted.inserted_at)


# Opening, installing, checking


async def test_open_sets_wal_and_connection_pragmas(db_path: str, sql: Query) -> None:
    engine = SQLiteEngine(db_path, busy_timeout=3.5)
    await engine.open()
    try:
        assert sql("PRAGMA journal_mode") == [("wal",)]
        assert engine._conn is not None
        pragmas = {}
        for name in ("synchronous", "busy_timeout", "foreign_keys"):
            [(value,)] = await engine._conn.execute_fetchall(f"PRAGMA {name}")
            pragmas[name] = value
        assert pragmas == {"synchronous": 1, "busy_timeout": 3500, "foreign_keys": 1}
        assert engine._conn.isolation_level is None
    finally:
        await engine.close()
    assert not engine.is_open


async def test_install_is_idempotent_and_records_the_schema_version(
    engine: SQLiteEngine, sql: Query
) -> None:
    [inserted] = await engine.insert_jobs([job()])
    await engine.install()
    await engine.install()
    tables = {row[0] for row in sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"oban_jobs", "oban_leaders", "oban_producers"} <= tables
    indexes = {row[0] for row in sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {
        "oban_jobs_state_queue_priority_scheduled_at_id_index",
        "oban_jobs_staging_index",
        "oban_jobs_completed_at_index",
        "oban_jobs_cancelled_at_index",
        "oban_jobs_discarded_at_index",
    } <= indexes
    assert sql("PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert [j.id for j in await engine.get_jobs([inserted.id or 0])] == [inserted.id]
    await engine.check_schema()


async def test_install_leaves_a_foreign_user_version_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "app.db")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 42")
    engine = SQLiteEngine(path)
    await engine.install()
    await engine.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (42,)


async def test_concurrent_installs_and_resets_on_one_engine_do_not_interleave(
    engine: SQLiteEngine,
) -> None:
    await engine.insert_jobs([job()])
    await asyncio.gather(
        *[engine.install() for _ in range(5)],
        *[engine.reset() for _ in range(5)],
        *[engine.uninstall() for _ in range(2)],
        *[engine.install() for _ in range(3)],
    )
    await engine.check_schema()
    assert await engine.all_enqueued() == []


async def test_install_from_several_engines_at_once(db_path: str, sql: Query) -> None:
    engines = [SQLiteEngine(db_path) for _ in range(4)]
    try:
        await asyncio.gather(*[e.install() for e in engines])
        for e in engines:
            await e.check_schema()
    finally:
        for e in engines:
            await e.close()


async def test_check_schema_reports_missing_tables(db_path: str) -> None:
    engine = SQLiteEngine(db_path)
    try:
        with pytest.raises(SchemaNotInstalledError, match="oban install"):
            await engine.check_schema()
        await engine.install()
        await engine.check_schema()
        await engine.uninstall()
        with pytest.raises(SchemaNotInstalledError):
            await engine.check_schema()
        await engine.uninstall()  # idempotent
    finally:
        await engine.close()


async def test_unreachable_files_raise_database_unavailable(tmp_path: Path) -> None:
    missing_dir = SQLiteEngine(str(tmp_path / "no" / "such" / "dir.db"))
    with pytest.raises(DatabaseUnavailableError):
        await missing_dir.open()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database file at all" * 200)
    not_a_db = SQLiteEngine(str(garbage))
    with pytest.raises(DatabaseUnavailableError):
        await not_a_db.check_schema()
    assert not not_a_db.is_open


async def test_operations_open_the_connection_on_first_use(db_path: str) -> None:
    engine = SQLiteEngine(db_path)
    await engine.install()
    assert engine.is_open
    await engine.close()
    assert not engine.is_open
    [inserted] = await engine.insert_jobs([job()])
    assert inserted.id == 1
    await engine.close()


def test_invalid_prefix_and_timeout_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteEngine(str(tmp_path / "x.db"), prefix="bad-prefix; DROP TABLE x")
    with pytest.raises(ValueError):
        SQLiteEngine(str(tmp_path / "x.db"), busy_timeout=-1)
    assert SQLiteEngine(tmp_path / "x.db").path == str(tmp_path / "x.db")


async def test_prefix_names_separate_tables(db_path: str, engine: SQLiteEngine, sql: Query) -> None:
    tenant = SQLiteEngine(db_path, prefix="tenant")
    try:
        with pytest.raises(SchemaNotInstalledError, match="--prefix tenant"):
            await tenant.check_schema()
        await tenant.install()
        await tenant.insert_jobs([job(queue="t")])
        await engine.insert_jobs([job(queue="p"), job(queue="p")])
        assert sql("SELECT queue FROM tenant_oban_jobs") == [("t",)]
        assert sql("SELECT count(*) FROM oban_jobs") == [(2,)]
        assert [j.queue for j in await tenant.all_enqueued()] == ["t"]
        assert "tenant_oban_jobs_staging_index" in {
            row[0] for row in sql("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        await tenant.uninstall()
        assert sql("SELECT count(*) FROM oban_jobs") == [(2,)]
    finally:
        await tenant.close()


async def test_table_constraints_match_postgres(engine: SQLiteEngine, sql: Query) -> None:
    bad_rows = [
        ("state", "'running'"),
        ("queue", "''"),
        ("queue", f"'{'q' * 128}'"),
        ("worker", "''"),
        ("max_attempts", "0"),
        ("priority", "-1"),
        ("attempt", "-1"),
        ("attempt", "21"),
    ]
    for column, value in bad_rows:
        columns = "worker" if column == "worker" else f"worker, {column}"
        values = value if column == "worker" else f"'w', {value}"
        with pytest.raises(sqlite3.IntegrityError):
            sql(f"INSERT INTO oban_jobs ({columns}) VALUES ({values})")
    sql(f"INSERT INTO oban_jobs (worker, queue) VALUES ('w', '{'q' * 127}')")
    [row] = sql(
        "SELECT state, queue, args, errors, attempt, max_attempts, priority, tags, meta "
        "FROM oban_jobs"
    )
    assert row == ("available", "q" * 127, "{}", "[]", 0, 20, 0, "[]", "{}")


# Inserting


async def test_insert_one_and_many_jobs_each_in_one_statement(engine: SQLiteEngine) -> None:
    statements = await trace(engine)
    [single] = await engine.insert_jobs([job(args={"n": 0})])
    assert len(statements) == 1 and statements[0].lstrip().startswith("-- :jobs")
    assert single.id == 1 and single.state is JobState.AVAILABLE

    statements.clear()
    later = now() + timedelta(hours=1)
    batch = [
        job(args={"n": i}, queue=f"q{i % 3}", scheduled_at=later if i % 4 == 0 else None)
        for i in range(1, 201)
    ]
    inserted = await engine.insert_jobs(batch)
    assert len(statements) == 1
    assert inserted == batch  # the same objects, filled in
    assert [j.id for j in inserted] == list(range(2, 202))
    for j in inserted:
        assert j.args["n"] == (j.id or 0) - 1
        expected = JobState.SCHEDULED if j.args["n"] % 4 == 0 else JobState.AVAILABLE
        assert j.state is expected
        assert close_to_now(j.inserted_at)
        assert j.inserted_at is not None and j.inserted_at.tzinfo is UTC
    assert inserted[3].scheduled_at == later.replace(microsecond=later.microsecond // 1000 * 1000)
    assert close_to_now(inserted[0].scheduled_at)


async def test_inserted_fields_round_trip(engine: SQLiteEngine) -> None:
    original = job(
        args={"nested": {"list": [1, 2.5, None, True]}, "text": "héllo ✓"},
        meta={"k": "v", "n": 1},
        tags=["b", "a"],
        queue="mail",
        priority=3,
        max_attempts=7,
    )
    [inserted] = await engine.insert_jobs([original])
    [loaded] = await engine.get_jobs([inserted.id or 0])
    assert loaded.worker == WORKER
    assert loaded.args == {"nested": {"list": [1, 2.5, None, True]}, "text": "héllo ✓"}
    assert loaded.meta == {"k": "v", "n": 1}
    assert loaded.tags == ["a", "b"]
    assert (loaded.queue, loaded.priority, loaded.max_attempts) == ("mail", 3, 7)
    assert loaded.attempt == 0 and loaded.errors == [] and loaded.attempted_by == []
    assert loaded.inserted_at == inserted.inserted_at
    assert loaded.scheduled_at == inserted.scheduled_at
    assert loaded.attempted_at is None and loaded.completed_at is None


async def test_insert_keeps_an_explicit_state_and_past_schedules_are_available(
    engine: SQLiteEngine,
) -> None:
    suspended, past, future_scheduled = await engine.insert_jobs(
        [
            job(state="suspended"),
            job(scheduled_at=now() - timedelta(minutes=5)),
            job(state="scheduled", scheduled_at=now() + timedelta(minutes=5)),
        ]
    )
    assert suspended.state is JobState.SUSPENDED
    assert past.state is JobState.AVAILABLE
    assert future_scheduled.state is JobState.SCHEDULED
    assert await engine.insert_jobs([]) == []


async def test_insert_wakes_local_producers_once_per_queue_with_available_jobs(
    engine: SQLiteEngine, notified: list[tuple[str, dict[str, Any]]]
) -> None:
    later = now() + timedelta(hours=1)
    await engine.insert_jobs(
        [
            job(queue="a"),
            job(queue="b"),
            job(queue="a"),
            job(queue="later", scheduled_at=later),
        ]
    )
    assert sorted(m["queue"] for _, m in notified) == ["a", "b"]
    assert {channel for channel, _ in notified} == {"insert"}


async def test_insert_joins_the_callers_aiosqlite_transaction(
    engine: SQLiteEngine, db_path: str, notified: list[tuple[str, dict[str, Any]]]
) -> None:
    async with aiosqlite.connect(db_path) as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TABLE app_orders (id INTEGER PRIMARY KEY)")
        [rolled_back] = await engine.insert_jobs([job(args={"n": 1})], conn=conn)
        assert rolled_back.id is not None
        assert await engine.get_jobs([rolled_back.id]) == []  # not visible before commit
        await conn.rollback()
        assert await engine.get_jobs([rolled_back.id]) == []

        await conn.execute("BEGIN")
        [committed] = await engine.insert_jobs([job(args={"n": 2})], conn=conn)
        await conn.commit()
    [loaded] = await engine.get_jobs([committed.id or 0])
    assert loaded.args == {"n": 2}
    assert [j.args for j in await engine.all_enqueued()] == [{"n": 2}]
    assert len(notified) == 2  # woken at once, whatever became of the transaction


async def test_insert_joins_a_plain_sqlite3_transaction(engine: SQLiteEngine, db_path: str) -> None:
    # check_same_thread=True (the default): the insert runs in this thread.
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("BEGIN")
        await engine.insert_jobs([job(args={"n": 1})], conn=conn)
        conn.rollback()
        cursor = conn.cursor()
        cursor.execute("BEGIN")
        await engine.insert_jobs([job(args={"n": 2})], conn=cursor)
        conn.commit()
    finally:
        conn.close()
    # check_same_thread=False: the insert runs in a worker thread.
    shared = sqlite3.connect(db_path, check_same_thread=False)
    try:
        shared.execute("BEGIN")
        await engine.insert_jobs([job(args={"n": 3})], conn=shared)
        shared.commit()
    finally:
        shared.close()
    assert sorted(j.args["n"] for j in await engine.all_enqueued()) == [2, 3]


async def test_insert_joins_a_sqlalchemy_aiosqlite_transaction(
    engine: SQLiteEngine, db_path: str
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    sa_engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}")
    try:

        class Abort(Exception):
            pass

        with pytest.raises(Abort):
            async with sa_engine.begin() as conn:
                await engine.insert_jobs([job(args={"n": 1})], conn=conn)
                raise Abort
        async with sa_engine.begin() as conn:
            await engine.insert_jobs([job(args={"n": 2})], conn=conn)
        async with AsyncSession(sa_engine) as session, session.begin():
            await engine.insert_jobs([job(args={"n": 3})], conn=session)
    finally:
        await sa_engine.dispose()
    assert sorted(j.args["n"] for j in await engine.all_enqueued()) == [2, 3]


async def test_insert_rejects_foreign_connection_types(engine: SQLiteEngine) -> None:
    with pytest.raises(TypeError, match="conn must be"):
        await engine.insert_jobs([job()], conn=object())


# Fetching


async def test_fetch_claims_available_jobs_in_order_and_marks_them_executing(
    engine: SQLiteEngine, sql: Query
) -> None:
    low, high, other_queue, later, exhausted, second_high = await engine.insert_jobs(
        [
            job(priority=5),
            job(priority=0),
            job(queue="other"),
            job(scheduled_at=now() + timedelta(hours=1)),
            job(max_attempts=1),
            job(priority=0),
        ]
    )
    sql("UPDATE oban_jobs SET attempt = 1 WHERE id = ?", (exhausted.id,))
    statements = await trace(engine)
    claimed = await engine.fetch_jobs("default", 2, "web.1", "uuid-a")
    assert len(statements) == 1
    assert [j.id for j in claimed] == [high.id, second_high.id]
    for j in claimed:
        assert j.state is JobState.EXECUTING
        assert j.attempt == 1
        assert j.attempted_by == ["web.1", "uuid-a"]
        assert close_to_now(j.attempted_at)
    assert await engine.fetch_jobs("default", 0, "web.1", "uuid-a") == []
    assert await engine.fetch_jobs("default", -1, "web.1", "uuid-a") == []
    rest = await engine.fetch_jobs("default", 10, "web.1", "uuid-a")
    assert [j.id for j in rest] == [low.id]
    assert await engine.fetch_jobs("default", 10, "web.1", "uuid-a") == []
    states = dict(sql("SELECT id, state FROM oban_jobs"))
    assert states[other_queue.id] == "available"
    assert states[later.id] == "scheduled"
    assert states[exhausted.id] == "available"
    [(stored,)] = sql("SELECT attempted_at FROM oban_jobs WHERE id = ?", (high.id,))
    assert claimed[0].attempted_at is not None
    assert format_timestamp(claimed[0].attempted_at) == stored


async def test_two_engines_on_one_file_never_claim_the_same_job(
    engine: SQLiteEngine, db_path: str
) -> None:
    await engine.insert_jobs([job(args={"n": i}) for i in range(500)])
    other = SQLiteEngine(db_path)

    async def drain(e: SQLiteEngine, uuid: str) -> list[int]:
        ids: list[int] = []
        while jobs := await e.fetch_jobs("default", 7, "node", uuid):
            ids.extend(j.id or 0 for j in jobs)
            await e.ack_jobs([Ack(j.id or 0, j.attempted_at, "completed") for j in jobs])
        return ids

    try:
        first, second = await asyncio.gather(drain(engine, "a"), drain(other, "b"))
    finally:
        await other.close()
    assert not set(first) & set(second)
    assert len(first) + len(second) == 500
    assert sorted(first + second) == list(range(1, 501))
    assert first and second


# Acking


async def test_ack_outcomes_for_every_state(engine: SQLiteEngine, sql: Query) -> None:
    await engine.insert_jobs([job(args={"n": i}, meta={"keep": 1}) for i in range(6)])
    done, cancel, discard, retry, snooze, record = await claim(engine)
    statements = await trace(engine)
    written = await engine.ack_jobs(
        [
            Ack(done.id or 0, done.attempted_at, "completed"),
            Ack(cancel.id or 0, cancel.attempted_at, "cancelled", error="no longer needed"),
            Ack(discard.id or 0, discard.attempted_at, "discarded", error="fatal"),
            Ack(retry.id or 0, retry.attempted_at, "retryable", schedule_in=30, error="boom"),
            Ack(
                snooze.id or 0,
                snooze.attempted_at,
                "scheduled",
                attempt_change=-1,
                schedule_in=60,
                snooze=True,
                meta={"reason": "busy"},
            ),
            Ack(record.id or 0, record.attempted_at, "completed", meta={"return": "g3QAAAAA"}),
        ]
    )
    assert len(statements) == 1
    assert written == {done.id, cancel.id, discard.id, retry.id, snooze.id, record.id}
    jobs = {j.id: j for j in await engine.get_jobs(sorted(written))}

    completed = jobs[done.id]
    assert completed.state is JobState.COMPLETED and close_to_now(completed.completed_at)
    assert completed.errors == [] and completed.meta == {"keep": 1}

    cancelled = jobs[cancel.id]
    assert cancelled.state is JobState.CANCELLED and close_to_now(cancelled.cancelled_at)
    assert [e["error"] for e in cancelled.errors] == ["no longer needed"]

    discarded = jobs[discard.id]
    assert discarded.state is JobState.DISCARDED and close_to_now(discarded.discarded_at)
    assert discarded.completed_at is None and discarded.cancelled_at is None

    retryable = jobs[retry.id]
    assert retryable.state is JobState.RETRYABLE and retryable.attempt == 1
    assert retryable.scheduled_at is not None
    assert 25 < (retryable.scheduled_at - now()).total_seconds() <= 30
    [error] = retryable.errors
    assert error["attempt"] == 1 and error["error"] == "boom"
    at = datetime.fromisoformat(error["at"].replace("Z", "+00:00"))
    assert error["at"].endswith("Z") and "T" in error["at"] and close_to_now(at)

    snoozed = jobs[snooze.id]
    assert snoozed.state is JobState.SCHEDULED and snoozed.attempt == 0
    assert snoozed.meta == {"keep": 1, "reason": "busy", "snoozed": 1}
    assert snoozed.errors == []
    assert snoozed.scheduled_at is not None
    assert 55 < (snoozed.scheduled_at - now()).total_seconds() <= 60

    recorded = jobs[record.id]
    assert recorded.meta == {"keep": 1, "return": "g3QAAAAA"}

    # A second snooze increments the counter.
    sql("UPDATE oban_jobs SET state = 'available' WHERE id = ?", (snooze.id,))
    [again] = await claim(engine)
    await engine.ack_jobs(
        [Ack(again.id or 0, again.attempted_at, "scheduled", -1, 60, snooze=True)]
    )
    [twice] = await engine.get_jobs([snooze.id or 0])
    assert twice.meta["snoozed"] == 2 and twice.attempt == 0


async def test_ack_errors_accumulate_and_meta_merges_shallowly(engine: SQLiteEngine) -> None:
    await engine.insert_jobs(
        [job(meta={"nested": {"a": 1, "b": 2}, "flag": True, "gone": 1, "list": [1]})]
    )
    [first] = await claim(engine)
    await engine.ack_jobs([Ack(first.id or 0, first.attempted_at, "available", error="one")])
    [second] = await claim(engine)
    assert second.attempt == 2
    await engine.ack_jobs(
        [
            Ack(
                second.id or 0,
                second.attempted_at,
                "retryable",
                schedule_in=1,
                error="two",
                meta={"nested": {"c": 3}, "gone": None, "new": False},
            )
        ]
    )
    [loaded] = await engine.get_jobs([first.id or 0])
    assert [(e["attempt"], e["error"]) for e in loaded.errors] == [(1, "one"), (2, "two")]
    # Like PostgreSQL's jsonb ||: top-level keys are replaced, nulls are kept, nothing
    # nested is merged.
    assert loaded.meta == {
        "nested": {"c": 3},
        "flag": True,
        "gone": None,
        "list": [1],
        "new": False,
    }


async def test_stale_acks_change_nothing(engine: SQLiteEngine, sql: Query) -> None:
    await engine.insert_jobs([job(), job()])
    first, second = await claim(engine)
    assert first.attempted_at is not None
    stale = first.attempted_at - timedelta(milliseconds=1)
    assert await engine.ack_jobs([Ack(first.id or 0, stale, "completed")]) == set()
    assert await engine.ack_jobs([Ack(first.id or 0, None, "completed")]) == set()
    # The job was rescued meanwhile and is no longer executing.
    sql("UPDATE oban_jobs SET state = 'available' WHERE id = ?", (second.id,))
    assert await engine.ack_jobs([Ack(second.id or 0, second.attempted_at, "completed")]) == set()
    states = dict(sql("SELECT id, state FROM oban_jobs"))
    assert states == {first.id: "executing", second.id: "available"}
    assert await engine.ack_jobs([]) == set()
    assert await engine.ack_jobs([Ack(first.id or 0, first.attempted_at, "completed")]) == {
        first.id
    }


async def test_ack_with_an_enormous_delay_still_writes(engine: SQLiteEngine) -> None:
    await engine.insert_jobs([job()])
    [claimed] = await claim(engine)
    written = await engine.ack_jobs(
        [Ack(claimed.id or 0, claimed.attempted_at, "retryable", schedule_in=1e15)]
    )
    assert written == {claimed.id}
    [loaded] = await engine.get_jobs([claimed.id or 0])
    assert loaded.scheduled_at is not None and loaded.scheduled_at.year > now().year + 100


# Staging


async def test_stage_jobs_makes_due_jobs_available(
    engine: SQLiteEngine, sql: Query, notified: list[tuple[str, dict[str, Any]]]
) -> None:
    future = now() + timedelta(hours=1)
    jobs = await engine.insert_jobs(
        [job(queue="a", scheduled_at=future) for _ in range(3)]
        + [job(queue="b", scheduled_at=future), job(queue="c", scheduled_at=future)]
        + [job(queue="a", scheduled_at=future)]
    )
    due = [j.id for j in jobs[:5]]
    sql(
        f"UPDATE oban_jobs SET scheduled_at = ? WHERE id IN ({','.join('?' * len(due))})",
        (OLD, *due),
    )
    sql("UPDATE oban_jobs SET state = 'retryable' WHERE id = ?", (jobs[1].id,))
    notified.clear()
    statements = await trace(engine)
    assert await engine.stage_jobs(["a", "b"], 2) == {"a": 2}
    assert len(statements) == 1
    assert await engine.stage_jobs(["a", "b"], 10) == {"a": 1, "b": 1}
    assert await engine.stage_jobs(["a", "b"], 10) == {}
    assert await engine.stage_jobs([], 10) == {}
    states = dict(sql("SELECT id, state FROM oban_jobs"))
    assert [states[j.id] for j in jobs] == [
        "available",
        "available",
        "available",
        "available",
        "scheduled",  # queue c was not asked for
        "scheduled",  # not due yet
    ]
    assert sorted(m["queue"] for _, m in notified) == ["a", "a", "b"]


async def test_stage_all_jobs_stages_a_whole_queue(engine: SQLiteEngine, sql: Query) -> None:
    future = now() + timedelta(days=1)
    jobs = await engine.insert_jobs(
        [job(scheduled_at=future), job(scheduled_at=future), job(queue="x", scheduled_at=future)]
    )
    sql("UPDATE oban_jobs SET state = 'retryable' WHERE id = ?", (jobs[1].id,))
    assert await engine.stage_all_jobs("default") == 2
    states = dict(sql("SELECT id, state FROM oban_jobs"))
    assert [states[j.id] for j in jobs] == ["available", "available", "scheduled"]


async def test_get_jobs_orders_by_id_and_skips_unknown_ids(engine: SQLiteEngine) -> None:
    a, _b, c = await engine.insert_jobs([job(), job(), job()])
    loaded = await engine.get_jobs([c.id or 0, 999, a.id or 0])
    assert [j.id for j in loaded] == [a.id, c.id]
    assert await engine.get_jobs([]) == []


# Producers and notifications


async def test_producers_insert_refresh_cleanup_expire_delete(
    engine: SQLiteEngine, sql: Query
) -> None:
    await engine.insert_producer("p-live", "Oban", "n1", "default", {"limit": 5})
    await engine.insert_producer("p-stale", "Oban", "n1", "default", {"limit": 5})
    await engine.insert_producer("p-busy", "Oban", "n2", "default", {})
    await engine.insert_producer("p-live", "Oban", "n1", "default", {"limit": 9})  # upsert
    assert sql("SELECT meta FROM oban_producers WHERE uuid = 'p-live'") == [('{"limit":9}',)]

    sql("UPDATE oban_producers SET updated_at = ?", (OLD,))
    present = await engine.refresh_producers(
        [("p-live", {"limit": 10, "paused": True}), ("p-missing", {})]
    )
    assert present == {"p-live"}
    [(meta, updated_at)] = sql("SELECT meta, updated_at FROM oban_producers WHERE uuid = 'p-live'")
    assert orjson.loads(meta) == {"limit": 10, "paused": True}
    assert close_to_now(parse_timestamp(updated_at))
    assert await engine.refresh_producers([]) == set()

    # p-busy is stale but still has an executing job: kept until the lifeline rescues it.
    await engine.insert_jobs([job()])
    await engine.fetch_jobs("default", 1, "n2", "p-busy")
    assert await engine.cleanup_producers(60) == 1
    remaining = {row[0] for row in sql("SELECT uuid FROM oban_producers")}
    assert remaining == {"p-live", "p-busy"}

    await engine.expire_producer("p-live")
    [(meta, updated_at)] = sql("SELECT meta, updated_at FROM oban_producers WHERE uuid = 'p-live'")
    assert orjson.loads(meta) == {"limit": 10, "paused": True, "shutdown": True}
    assert updated_at < OLD
    await engine.delete_producer("p-live")
    assert {row[0] for row in sql("SELECT uuid FROM oban_producers")} == {"p-busy"}


async def test_notify_delivers_decoded_payloads_in_process(
    engine: SQLiteEngine, notified: list[tuple[str, dict[str, Any]]]
) -> None:
    await engine.notify(
        "signal",
        [encode_payload({"action": "pause", "queue": "a"}), '{"action": "resume", "queue": "b"}'],
    )
    assert notified == [
        ("signal", {"action": "pause", "queue": "a"}),
        ("signal", {"action": "resume", "queue": "b"}),
    ]
    engine.local_notify = None
    await engine.notify("signal", ['{"action": "pause"}'])  # nobody listening: no error


# Cluster


async def test_leader_election_expiry_and_resignation(engine: SQLiteEngine, sql: Query) -> None:
    assert await engine.elect_leader("Oban", "n1", 30) is True
    [(elected_at, expires_at)] = sql("SELECT elected_at, expires_at FROM oban_leaders")
    expires = parse_timestamp(expires_at)
    assert expires is not None and 25 < (expires - now()).total_seconds() <= 30
    assert await engine.elect_leader("Oban", "n2", 30) is False
    assert await engine.elect_leader("Other", "n2", 30) is True  # another instance name
    assert await engine.elect_leader("Oban", "n1", 60) is True  # extends, keeps elected_at
    [(elected_again, extended)] = sql(
        "SELECT elected_at, expires_at FROM oban_leaders WHERE name = 'Oban'"
    )
    assert elected_again == elected_at and extended > expires_at

    sql("UPDATE oban_leaders SET expires_at = ? WHERE name = 'Oban'", (OLD,))
    assert await engine.elect_leader("Oban", "n2", 30) is True
    assert sql("SELECT node FROM oban_leaders WHERE name = 'Oban'") == [("n2",)]
    assert await engine.elect_leader("Oban", "n1", 30) is False

    await engine.resign_leader("Oban", "n1")  # not the holder: no effect
    assert await engine.elect_leader("Oban", "n1", 30) is False
    await engine.resign_leader("Oban", "n2")
    assert await engine.elect_leader("Oban", "n1", 30) is True


async def test_prune_deletes_old_finished_jobs_only(engine: SQLiteEngine, sql: Query) -> None:
    ids = [j.id for j in await engine.insert_jobs([job() for _ in range(8)])]
    finished = [
        ("completed", "completed_at"),
        ("cancelled", "cancelled_at"),
        ("discarded", "discarded_at"),
    ]
    for (state, column), id_ in zip(finished, ids[:3], strict=True):
        sql(f"UPDATE oban_jobs SET state = ?, {column} = ? WHERE id = ?", (state, OLD, id_))
    sql(  # recent: kept
        "UPDATE oban_jobs SET state = 'completed', "
        "completed_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = ?",
        (ids[3],),
    )
    sql("UPDATE oban_jobs SET completed_at = ? WHERE id = ?", (OLD, ids[4]))  # still available
    sql("UPDATE oban_jobs SET state = 'retryable', discarded_at = ? WHERE id = ?", (OLD, ids[5]))
    sql("UPDATE oban_jobs SET state = 'completed', completed_at = ? WHERE id = ?", (OLD, ids[6]))

    assert await engine.prune_jobs(60, 2) == 2
    assert await engine.prune_jobs(60, 100) == 2
    assert await engine.prune_jobs(60, 100) == 0
    remaining = {row[0] for row in sql("SELECT id FROM oban_jobs")}
    assert remaining == {ids[3], ids[4], ids[5], ids[7]}


async def test_rescue_rules(engine: SQLiteEngine, sql: Query) -> None:
    await engine.insert_producer("stale", "Oban", "n1", "default", {})
    await engine.insert_producer("live", "Oban", "n1", "default", {})
    sql("UPDATE oban_producers SET updated_at = ? WHERE uuid = 'stale'", (OLD,))
    jobs = await engine.insert_jobs([job(max_attempts=5) for _ in range(7)])
    ids = [j.id or 0 for j in jobs]

    def claim_as(id_: int | None, uuid: str, attempted_at: str, attempt: int = 1) -> None:
        sql(
            "UPDATE oban_jobs SET state = 'executing', attempt = ?, attempted_at = ?, "
            "attempted_by = json_array('n1', ?) WHERE id = ?",
            (attempt, attempted_at, uuid, id_),
        )

    recent = format_timestamp(now())
    claim_as(ids[0], "stale", recent)  # stale producer: rescued at once
    claim_as(ids[1], "gone", OLD)  # no producer row, started long ago: rescued
    claim_as(ids[2], "gone", recent)  # no producer row, recent: not yet
    claim_as(ids[3], "live", OLD)  # live producer: never, however long it runs
    claim_as(ids[4], "stale", recent, attempt=5)  # exhausted: discarded
    sql("UPDATE oban_jobs SET attempt = 5 WHERE id = ?", (ids[5],))  # available, exhausted
    sql("UPDATE oban_jobs SET meta = json('{\"rescued\": 2}') WHERE id = ?", (ids[1],))

    assert await engine.rescue_jobs(300, 60, 100) == {"available": 2, "discarded": 2}
    loaded = {j.id: j for j in await engine.get_jobs(ids)}
    assert loaded[ids[0]].state is JobState.AVAILABLE
    assert loaded[ids[0]].meta == {"rescued": 1}
    assert loaded[ids[1]].state is JobState.AVAILABLE
    assert loaded[ids[1]].meta == {"rescued": 3}
    assert loaded[ids[2]].state is JobState.EXECUTING
    assert loaded[ids[3]].state is JobState.EXECUTING
    assert loaded[ids[4]].state is JobState.DISCARDED
    assert close_to_now(loaded[ids[4]].discarded_at)
    assert loaded[ids[4]].meta == {}  # only rescued (made available) jobs count a rescue
    assert loaded[ids[5]].state is JobState.DISCARDED
    assert loaded[ids[5]].meta == {}
    assert loaded[ids[6]].state is JobState.AVAILABLE
    assert await engine.rescue_jobs(300, 60, 100) == {"available": 0, "discarded": 0}


async def test_rescue_respects_the_limit(engine: SQLiteEngine, sql: Query) -> None:
    await engine.insert_jobs([job() for _ in range(5)])
    sql(
        "UPDATE oban_jobs SET state = 'executing', attempt = 1, attempted_at = ?, "
        "attempted_by = json_array('n', 'gone')",
        (OLD,),
    )
    assert await engine.rescue_jobs(60, 60, 3) == {"available": 3, "discarded": 0}
    assert await engine.rescue_jobs(60, 60, 3) == {"available": 2, "discarded": 0}


async def test_insert_cron_jobs_once_per_entry_and_minute(
    engine: SQLiteEngine, notified: list[tuple[str, dict[str, Any]]]
) -> None:
    def entry(name: str, at: str, queue: str = "default") -> Job:
        return job(queue=queue, meta={"cron": True, "cron_name": name, "cron_at": at})

    minute = "2024-01-01T10:00:00Z"
    statements = await trace(engine)
    ids = await engine.insert_cron_jobs("Oban", [entry("a", minute), entry("b", minute, "q")])
    assert len(statements) == 1 and len(ids) == 2
    assert sorted(m["queue"] for _, m in notified) == ["default", "q"]
    assert await engine.insert_cron_jobs("Oban", [entry("a", minute), entry("b", minute)]) == []
    [next_minute] = await engine.insert_cron_jobs(
        "Oban", [entry("a", minute), entry("a", "2024-01-01T10:01:00Z")]
    )
    loaded = {j.id: j for j in await engine.get_jobs([*ids, next_minute])}
    assert loaded[next_minute].meta["cron_at"] == "2024-01-01T10:01:00Z"
    assert all(j.state is JobState.AVAILABLE for j in loaded.values())
    assert await engine.insert_cron_jobs("Oban", []) == []


async def test_cron_inserts_from_several_engines_at_once_insert_once(
    engine: SQLiteEngine, db_path: str, sql: Query
) -> None:
    others = [SQLiteEngine(db_path) for _ in range(3)]
    entry = job(meta={"cron": True, "cron_name": "tick", "cron_at": "2024-01-01T10:00:00Z"})
    try:
        results = await asyncio.gather(
            *[e.insert_cron_jobs("Oban", [entry]) for e in [engine, *others]]
        )
    finally:
        for e in others:
            await e.close()
    assert sum(len(r) for r in results) == 1
    assert sql("SELECT count(*) FROM oban_jobs") == [(1,)]


# Management


async def test_cancel_jobs_cancels_waiting_and_executing_jobs_and_reports_the_executing_ones(
    engine: SQLiteEngine, sql: Query
) -> None:
    jobs = await engine.insert_jobs([job() for _ in range(6)])
    ids = [j.id or 0 for j in jobs]
    sql("UPDATE oban_jobs SET state = 'scheduled' WHERE id = ?", (ids[1],))
    sql("UPDATE oban_jobs SET state = 'retryable' WHERE id = ?", (ids[2],))
    sql("UPDATE oban_jobs SET state = 'completed' WHERE id = ?", (ids[3],))
    earlier = {"attempt": 1, "at": "2024-01-01T00:00:00.000000Z", "error": "boom"}
    sql(
        "UPDATE oban_jobs SET state = 'executing', attempt = 2, attempted_at = ?, "
        "errors = json_array(json(?)) WHERE id = ?",
        (OLD, orjson.dumps(earlier).decode(), ids[4]),
    )
    cancelled, executing = await engine.cancel_jobs([*ids[:5], 999])
    assert cancelled == ids[:3]
    assert executing == [ids[4]]
    loaded = {j.id: j for j in await engine.get_jobs(ids)}
    for id_ in [*ids[:3], ids[4]]:
        assert loaded[id_].state is JobState.CANCELLED
        assert close_to_now(loaded[id_].cancelled_at)
        assert loaded[id_].meta["cancel_attempted_at"].endswith("Z")
    for id_ in ids[:3]:
        assert loaded[id_].errors == []  # not running: no error recorded
    assert loaded[ids[3]].state is JobState.COMPLETED
    assert loaded[ids[3]].cancelled_at is None and loaded[ids[3]].meta == {}
    # The running job keeps its attempt and gains the error after its earlier ones.
    running = loaded[ids[4]]
    assert running.attempt == 2
    assert running.errors[0] == earlier
    assert [(e["attempt"], e["error"]) for e in running.errors] == [
        (1, "boom"),
        (2, "cancelled while executing"),
    ]
    assert close_to_now(datetime.fromisoformat(running.errors[1]["at"]))
    assert loaded[ids[5]].state is JobState.AVAILABLE
    assert await engine.cancel_jobs(ids) == ([ids[5]], [])  # the rest are finished now


async def test_retry_jobs_makes_finished_and_waiting_jobs_available(
    engine: SQLiteEngine, sql: Query, notified: list[tuple[str, dict[str, Any]]]
) -> None:
    jobs = await engine.insert_jobs([job(max_attempts=3, queue=f"q{i}") for i in range(5)])
    ids = [j.id or 0 for j in jobs]
    sql(
        "UPDATE oban_jobs SET state = 'discarded', attempt = 3, discarded_at = ? WHERE id = ?",
        (OLD, ids[0]),
    )
    sql(
        "UPDATE oban_jobs SET state = 'completed', attempt = 1, completed_at = ?, "
        "scheduled_at = ? WHERE id = ?",
        (OLD, OLD, ids[1]),
    )
    sql("UPDATE oban_jobs SET state = 'executing', attempt = 1 WHERE id = ?", (ids[2],))
    sql(
        "UPDATE oban_jobs SET state = 'scheduled', scheduled_at = '2999-01-01 00:00:00.000' "
        "WHERE id = ?",
        (ids[3],),
    )
    notified.clear()
    assert await engine.retry_jobs(ids) == 3
    loaded = {j.id: j for j in await engine.get_jobs(ids)}
    exhausted = loaded[ids[0]]
    assert exhausted.state is JobState.AVAILABLE and exhausted.max_attempts == 4
    assert exhausted.discarded_at is None and exhausted.meta == {"uniq_bmp": []}
    assert loaded[ids[1]].completed_at is None and close_to_now(loaded[ids[1]].scheduled_at)
    assert loaded[ids[1]].max_attempts == 3
    assert loaded[ids[2]].state is JobState.EXECUTING
    assert loaded[ids[3]].state is JobState.AVAILABLE
    assert loaded[ids[4]].state is JobState.AVAILABLE and loaded[ids[4]].meta == {}
    assert sorted(m["queue"] for _, m in notified) == ["q0", "q1", "q3"]
    [claimed] = await engine.fetch_jobs("q0", 1, "n", "u")
    assert claimed.attempt == 4


async def test_delete_jobs_spares_running_jobs(engine: SQLiteEngine, sql: Query) -> None:
    jobs = await engine.insert_jobs([job(), job(), job()])
    ids = [j.id or 0 for j in jobs]
    sql("UPDATE oban_jobs SET state = 'executing', attempt = 1 WHERE id = ?", (ids[0],))
    sql("UPDATE oban_jobs SET state = 'completed' WHERE id = ?", (ids[1],))
    assert await engine.delete_jobs([*ids, 999]) == 2
    assert sql("SELECT id FROM oban_jobs") == [(ids[0],)]


async def test_update_jobs_writes_fields_and_follows_the_schedule(
    engine: SQLiteEngine, sql: Query
) -> None:
    jobs = await engine.insert_jobs([job() for _ in range(5)])
    waiting, to_future, running, changed, retryable = jobs
    sql("UPDATE oban_jobs SET state = 'executing', attempt = 1 WHERE id = ?", (running.id,))
    sql("UPDATE oban_jobs SET state = 'completed' WHERE id = ?", (changed.id,))
    sql("UPDATE oban_jobs SET state = 'retryable', attempt = 1 WHERE id = ?", (retryable.id,))
    retryable.state = JobState.RETRYABLE
    future = now() + timedelta(hours=2)
    for j in jobs:
        j.update({"args": {"new": j.id}, "priority": 4, "tags": ["x"], "meta": {"m": 1}})
    to_future.update({"scheduled_at": future, "queue": "elsewhere", "max_attempts": 9})
    waiting.update({"scheduled_at": now() - timedelta(minutes=1), "worker": "tests.Other"})

    updated = await engine.update_jobs(jobs)
    assert [j.id for j in updated] == sorted(j.id or 0 for j in (waiting, to_future, retryable))
    by_id = {j.id: j for j in updated}
    assert by_id[waiting.id].state is JobState.AVAILABLE
    assert by_id[waiting.id].worker == "tests.Other"
    moved = by_id[to_future.id]
    assert moved.state is JobState.SCHEDULED
    assert (moved.queue, moved.max_attempts, moved.priority) == ("elsewhere", 9, 4)
    assert moved.scheduled_at == future.replace(microsecond=future.microsecond // 1000 * 1000)
    assert moved.args == {"new": to_future.id} and moved.tags == ["x"] and moved.meta == {"m": 1}
    assert by_id[retryable.id].state is JobState.RETRYABLE
    untouched = {j.id: j for j in await engine.get_jobs([running.id or 0, changed.id or 0])}
    assert all(j.args == {} for j in untouched.values())
    assert await engine.update_jobs([]) == []


# Testing helpers


async def test_all_enqueued_and_reset(engine: SQLiteEngine, sql: Query) -> None:
    jobs = await engine.insert_jobs(
        [job(), job(scheduled_at=now() + timedelta(hours=1)), job(state="suspended"), job()]
    )
    sql("UPDATE oban_jobs SET state = 'completed' WHERE id = ?", (jobs[3].id,))
    await engine.elect_leader("Oban", "n1", 30)
    await engine.insert_producer("p", "Oban", "n1", "default", {})
    assert [j.id for j in await engine.all_enqueued()] == [jobs[2].id, jobs[1].id, jobs[0].id]

    await engine.reset()
    for table in ("oban_jobs", "oban_leaders", "oban_producers"):
        assert sql(f"SELECT count(*) FROM {table}") == [(0,)]
    [fresh] = await engine.insert_jobs([job()])
    assert fresh.id == 1  # ids restart


# Contention


async def test_a_busy_database_is_waited_for_not_reported(
    engine: SQLiteEngine, db_path: str
) -> None:
    blocker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        insert = asyncio.create_task(engine.insert_jobs([job()]))
        await asyncio.sleep(0.3)  # the write lock is held this long on purpose
        assert not insert.done()
        blocker.execute("COMMIT")
        [inserted] = await asyncio.wait_for(insert, 5)
        assert inserted.id == 1
    finally:
        blocker.close()


async def test_a_database_locked_longer_than_busy_timeout_raises(
    engine: SQLiteEngine, db_path: str
) -> None:
    impatient = SQLiteEngine(db_path, busy_timeout=0.2)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await impatient.insert_jobs([job()])
        assert time.monotonic() - started < 3
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await impatient.close()


WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys, time, uuid

    from oban._engines.base import Ack
    from oban._engines.sqlite import SQLiteEngine


    async def main(path, go, node):
        engine = SQLiteEngine(path)
        await engine.open()
        open(go + "." + node, "w").close()  # ready
        while not os.path.exists(go):
            time.sleep(0.005)
        producer = str(uuid.uuid4())
        acked = []
        while jobs := await engine.fetch_jobs("multi", 5, node, producer):
            acks = [Ack(j.id, j.attempted_at, "completed") for j in jobs]
            written = await engine.ack_jobs(acks)
            if written != {j.id for j in jobs}:
                raise SystemExit(f"acks not written: {written} for {[j.id for j in jobs]}")
            acked.extend(j.id for j in jobs)
        await engine.close()
        print(json.dumps(acked))


    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_three_processes_on_one_file_ack_every_job_exactly_once(
    engine: SQLiteEngine, tmp_path: Path, db_path: str, sql: Query
) -> None:
    await engine.insert_jobs([job(queue="multi", args={"n": i}) for i in range(1500)])
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    go = tmp_path / "go"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            db_path,
            str(go),
            f"node-{n}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(3)
    ]
    ready = [tmp_path / f"go.node-{n}" for n in range(3)]
    await eventually(
        lambda: all(path.exists() for path in ready), timeout=30, message="workers ready"
    )
    go.touch()  # all three start claiming together
    try:
        outputs = await asyncio.wait_for(asyncio.gather(*[p.communicate() for p in processes]), 90)
    finally:
        for process in processes:
            await reap(process)
    acked: list[list[int]] = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
        assert b"locked" not in stderr
        acked.append(orjson.loads(stdout))
    every = [id_ for ids in acked for id_ in ids]
    assert len(every) == 1500
    assert sorted(every) == list(range(1, 1501))
    assert sum(1 for ids in acked if ids) >= 2  # they really competed
    assert sql("SELECT state, attempt, count(*) FROM oban_jobs GROUP BY 1, 2") == [
        ("completed", 1, 1500)
    ]


async def test_an_engine_left_open_does_not_keep_the_process_alive(db_path: str) -> None:
    code = (
        "import asyncio\n"
        "from oban._engines.sqlite import SQLiteEngine\n"
        "async def main():\n"
        f"    await SQLiteEngine({db_path!r}).install()\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the process did not exit with an unclosed engine") from None
    assert process.returncode == 0, stderr.decode()
    assert Path(db_path).stat().st_size > 0  # noqa: ASYNC240
