"""The synchronous API (issue 17 item 1): ``oban.sync``, ``Worker.enqueue_sync`` and
``fn.enqueue_sync`` from code without a running event loop, on both engines; inside the
caller's psycopg, SQLAlchemy and sqlite3 transactions; from many threads; and routed to the
loop of an instance that runs in another thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
import pytest
from psycopg import sql as psql
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from oban import Job, Oban, job, schema, telemetry, worker
from oban._sync import THREAD_NAME
from oban.errors import SchemaNotInstalledError
from oban.oban import _instances
from tests.helpers import eventually

ENGINES = ["postgres", "sqlite"]

RAN: list[int] = []


@worker(queue="sync_api")
class SyncWorker:
    def process(self, job: Job) -> None:
        assert job.id is not None
        RAN.append(job.id)


@job(queue="sync_api")
def sync_add(a: int, b: int = 2) -> int:
    return a + b


@worker(queue="sync_api", unique=True)
class UniqueSyncWorker:
    def process(self, job: Job) -> None:
        return None


# Fixtures: instances built and used the way synchronous code does (no event loop here)


@pytest.fixture
def pg_schema(dsn: str) -> Iterator[str]:
    """A PostgreSQL schema of the test's own with oban installed, by ``install_sql()`` on a
    plain psycopg connection (as an Alembic or Django migration would)."""
    prefix = f"s_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute(schema.install_sql(prefix).encode())
        yield prefix
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(prefix))
            )


@pytest.fixture(params=ENGINES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(dsn, prefix)`` of a fresh database of the test's engine."""
    if request.param == "postgres":
        return str(request.getfixturevalue("dsn")), str(request.getfixturevalue("pg_schema"))
    return f"sqlite:///{tmp_path / 'jobs.db'}", "public"


@contextlib.contextmanager
def sync_instance(dsn: str, prefix: str, **options: Any) -> Iterator[Oban]:
    """An instance used only through ``oban.sync``; stopped (synchronously) afterwards."""
    oban = Oban(dsn=dsn, prefix=prefix, shutdown_grace_period=5.0, **options)
    try:
        yield oban
    finally:
        try:
            oban.sync.stop()
        finally:
            _instances.pop(oban.name, None)


def rows(dsn: str, prefix: str, query: str) -> list[tuple[Any, ...]]:
    """Rows of ``query`` (tables unqualified) read on a connection of our own."""
    if dsn.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(dsn.removeprefix("sqlite:///"))) as conn:
            return list(conn.execute(query).fetchall())
    with psycopg.connect(dsn) as conn:
        conn.execute(psql.SQL("SET search_path TO {}").format(psql.Identifier(prefix)))
        return list(conn.execute(query.encode()).fetchall())


def sqlalchemy_url(dsn: str) -> str:
    return "postgresql+psycopg://" + dsn.removeprefix("postgresql://")


def sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


# A plain script


SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import threading

    from oban import Oban, worker


    @worker(queue="script", name="sync.ScriptWorker")
    class ScriptWorker:
        def process(self, job):
            return None


    dsn, prefix = sys.argv[1], sys.argv[2]
    oban = Oban(dsn=dsn, prefix=prefix)
    first = ScriptWorker.enqueue_sync({"n": 0})
    rest = oban.sync.enqueue_many(ScriptWorker.new({"n": n}) for n in range(1, 4))
    read = [oban.sync.get_job(job.id) for job in [first, *rest]]
    print(json.dumps({
        "ids": [job.id for job in [first, *rest]],
        "read": [[job.id, job.state, job.args] for job in read],
        "threads": [[t.name, t.daemon] for t in threading.enumerate()],
    }))
    """
)


def test_a_plain_script_enqueues_and_reads_back(database: tuple[str, str], tmp_path: Path) -> None:
    assert "asyncio" not in SCRIPT and "await" not in SCRIPT
    dsn, prefix = database
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)

    done = subprocess.run(
        [sys.executable, str(path), dsn, prefix],
        capture_output=True,
        text=True,
        timeout=60,  # also: the interpreter exits by itself, nothing left running
        cwd=tmp_path,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no warning at exit (an unclosed pool, a leaked loop)
    out = json.loads(done.stdout)
    ids = out["ids"]
    assert len(set(ids)) == 4
    assert out["read"] == [[i, "available", {"n": n}] for n, i in enumerate(ids)]
    assert [THREAD_NAME, True] in out["threads"]  # the private loop's thread: a daemon
    found = rows(dsn, prefix, "SELECT id, worker FROM oban_jobs ORDER BY id")
    assert found == [(i, "sync.ScriptWorker") for i in ids]


# Many threads


def test_eight_threads_enqueue_at_once(database: tuple[str, str]) -> None:
    dsn, prefix = database
    barrier = threading.Barrier(8)

    def work(index: int) -> list[int]:
        barrier.wait(timeout=10)
        one = SyncWorker.enqueue_sync({"thread": index, "n": 0})
        two = sync_add.enqueue_sync(index, b=1)
        many = oban.sync.enqueue_many(SyncWorker.new({"thread": index, "n": n}) for n in range(5))
        found = [oban.sync.get_job(j) for j in [one, two, *many]]
        assert all(j is not None and j.state == "available" for j in found)
        return [j.id for j in [one, two, *many] if j.id is not None]

    with sync_instance(dsn, prefix, name="Oban") as oban, ThreadPoolExecutor(8) as threads:
        results = list(threads.map(work, range(8)))
        counts = oban.sync.count_jobs()

    ids = [i for result in results for i in result]
    assert len(ids) == 8 * 7 and len(set(ids)) == len(ids)
    assert counts == {("available",): len(ids)}
    assert sorted(i for (i,) in rows(dsn, prefix, "SELECT id FROM oban_jobs")) == sorted(ids)
    assert len(sync_threads()) == 1 and sync_threads()[0].daemon


def test_calls_leave_no_event_loop_in_the_calling_thread(database: tuple[str, str]) -> None:
    dsn, prefix = database
    seen: dict[str, Any] = {}

    def caller() -> None:
        policy = asyncio.get_event_loop_policy()
        job = SyncWorker.enqueue_sync({"hygiene": True})
        seen["read"] = oban.sync.get_job(job.id)  # type: ignore[arg-type]
        seen["listed"] = oban.sync.list_jobs(worker=SyncWorker).jobs
        seen["running"] = asyncio.events._get_running_loop()
        # The default policy keeps the loop set for a thread here, and whether one ever was
        # (asyncio.run() sets one, then None): neither happened.
        local = policy._local  # type: ignore[attr-defined]
        seen["set"] = (local._loop, local._set_called)

    with sync_instance(dsn, prefix, name="Oban") as oban:
        thread = threading.Thread(target=caller)
        thread.start()
        thread.join(30)

    assert seen["read"] is not None
    assert [j.id for j in seen["listed"]] == [seen["read"].id]
    assert seen["running"] is None
    assert seen["set"] == (None, False)
    assert all(t.daemon for t in sync_threads())
    assert len(sync_threads()) == 1


# Inside the caller's transaction: psycopg, SQLAlchemy


async def test_psycopg_sync_transaction_rolled_back_and_committed(
    make_oban: Callable[..., Oban], dsn: str, prefix: str
) -> None:
    node = make_oban(queues={"sync_api": 2})
    await node.start()

    def rolled_back() -> int | None:
        with psycopg.connect(dsn) as conn:
            job = SyncWorker.enqueue_sync({"tx": "rollback"}, conn=conn)
            assert rows_in(conn, prefix, job.id) == 1  # visible inside the transaction
            conn.rollback()
            return job.id

    def committed() -> int | None:
        with psycopg.connect(dsn) as conn:  # commits at the end of the block
            cur = conn.cursor()
            job = SyncWorker.enqueue_sync({"tx": "commit"}, conn=cur)
            assert job.state == "available"
            return job.id

    gone = await asyncio.to_thread(rolled_back)
    assert await node.get_job(gone) is None  # type: ignore[arg-type]

    kept = await asyncio.to_thread(committed)
    await eventually(lambda: kept in RAN, timeout=10, message="the committed job ran")

    async def completed() -> bool:
        found = await node.get_job(kept)  # type: ignore[arg-type]
        return found is not None and found.state == "completed"

    await eventually(completed, timeout=10, message="the committed job completed")


def rows_in(conn: psycopg.Connection[Any], prefix: str, job_id: int | None) -> int:
    query = psql.SQL("SELECT count(*) FROM {}.oban_jobs WHERE id = %s").format(
        psql.Identifier(prefix)
    )
    row = conn.execute(query, (job_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_sqlalchemy_sync_session_and_connection(dsn: str, pg_schema: str) -> None:
    engine = create_engine(sqlalchemy_url(dsn))
    try:
        with sync_instance(dsn, pg_schema, name="Oban") as oban:
            with Session(engine) as session:
                session.execute(text("SELECT 1"))
                rolled = SyncWorker.enqueue_sync({"sa": "session-rollback"}, conn=session)
                session.rollback()
            with Session(engine) as session, session.begin():
                kept = oban.sync.enqueue(SyncWorker.new({"sa": "session-commit"}), conn=session)
                assert oban.sync.get_job(kept) is None  # not committed yet
            # A Connection used in the 2.0 style: enqueue first, then commit(). (A ParamSpec
            # cannot type the extra keyword of a @job function; it works at run time.)
            with engine.connect() as conn:
                by_conn = sync_add.enqueue_sync(40, conn=conn)  # type: ignore[call-arg]
                conn.commit()
            with engine.connect() as conn:
                dropped = sync_add.enqueue_sync(41, conn=conn)  # type: ignore[call-arg]
            assert oban.sync.get_job(rolled) is None
            assert oban.sync.get_job(dropped) is None
            found = oban.sync.get_job(kept)
            assert found is not None and found.args == {"sa": "session-commit"}
            added = oban.sync.get_job(by_conn)
            assert added is not None and added.args == {"a": 40, "b": 2}
    finally:
        engine.dispose()

    found_ids = {i for (i,) in rows(dsn, pg_schema, "SELECT id FROM oban_jobs")}
    assert found_ids == {kept.id, by_conn.id}


def test_sqlalchemy_scoped_session_as_flask_sqlalchemy_uses(dsn: str, pg_schema: str) -> None:
    from sqlalchemy.orm import scoped_session, sessionmaker

    engine = create_engine(sqlalchemy_url(dsn))
    session = scoped_session(sessionmaker(engine))
    try:
        with sync_instance(dsn, pg_schema, name="Oban") as oban:
            job = SyncWorker.enqueue_sync({"scoped": 1}, conn=session)
            session.commit()
            found = oban.sync.get_job(job)
            assert found is not None and found.args == {"scoped": 1}
    finally:
        session.remove()
        engine.dispose()


# Inside the caller's transaction: sqlite3


async def test_sqlite3_transaction_rolled_back_and_committed(tmp_path: Path) -> None:
    """A node on this loop polls only every minute here: the jobs run at once because the sync
    inserts (from other threads) wake it: on the caller's connection, and through another
    instance's calls on the private loop."""
    path = tmp_path / "jobs.db"
    dsn = f"sqlite:///{path}"
    node = Oban(dsn=dsn, queues={"sync_api": 2}, notifier={"poll_interval": 60.0})
    client = Oban(dsn=dsn, name="sync-client")
    # Debug mode: waking the node from another thread other than through its loop would fail.
    asyncio.get_running_loop().set_debug(True)
    try:
        await node.start()

        def through_the_client() -> int | None:
            return client.sync.enqueue(SyncWorker.new({"from": "client"})).id

        first = await asyncio.to_thread(through_the_client)
        await eventually(lambda: first in RAN, timeout=10, message="the client's job ran")

        def in_transactions() -> int | None:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
                conn.commit()
                conn.execute("INSERT INTO orders DEFAULT VALUES")
                SyncWorker.enqueue_sync({"tx": "rollback"}, conn=conn)
                conn.rollback()
                with conn:  # commits
                    conn.execute("INSERT INTO orders DEFAULT VALUES")
                    kept = SyncWorker.enqueue_sync({"tx": "commit"}, conn=conn.cursor())
                return kept.id

        kept = await asyncio.to_thread(in_transactions)
        await eventually(lambda: kept in RAN, timeout=10, message="the committed job ran")
        page = await node.list_jobs(worker=SyncWorker)
        assert sorted((j.id, j.args) for j in page.jobs) == sorted(
            [(first, {"from": "client"}), (kept, {"tx": "commit"})]
        )
    finally:
        await asyncio.to_thread(client.sync.stop)
        await node.stop()
        _instances.pop(node.name, None)
        _instances.pop(client.name, None)


def test_sqlite3_first_statement_of_a_transaction_and_a_fresh_file(tmp_path: Path) -> None:
    """The insert opens the transaction as any INSERT does on a sqlite3 connection; on a file
    the instance never opened, the schema is installed in that transaction first."""
    path = tmp_path / "fresh.db"
    with sync_instance(f"sqlite:///{path}", "public", name="Oban") as oban:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            SyncWorker.enqueue_sync({"first": True}, conn=conn)
            assert conn.in_transaction
            conn.rollback()
            kept = oban.sync.enqueue(SyncWorker.new({"second": True}), conn=conn)
            conn.commit()
        page = oban.sync.list_jobs()
        assert [(j.id, j.args) for j in page.jobs] == [(kept.id, {"second": True})]


# Unique jobs


def test_a_unique_job_reports_its_conflict(database: tuple[str, str]) -> None:
    dsn, prefix = database
    with sync_instance(dsn, prefix, name="Oban") as oban:
        first = UniqueSyncWorker.enqueue_sync({"key": 1})
        again = UniqueSyncWorker.enqueue_sync({"key": 1})
        other = oban.sync.enqueue(UniqueSyncWorker.new({"key": 2}))
        assert not first.conflict and other.id != first.id
        assert again.conflict and again.id == first.id

        with caller_connection(dsn) as conn:
            inside = UniqueSyncWorker.enqueue_sync({"key": 1}, conn=conn)
            fresh = oban.sync.enqueue_many(UniqueSyncWorker.new({"key": 3}), conn=conn)[0]
        assert inside.conflict and inside.id == first.id
        assert not fresh.conflict and fresh.id is not None

    assert len(rows(dsn, prefix, "SELECT id FROM oban_jobs")) == 3


@contextlib.contextmanager
def caller_connection(dsn: str) -> Iterator[Any]:
    """A committed transaction on a synchronous connection of the engine's driver."""
    if dsn.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(dsn.removeprefix("sqlite:///"))) as lite:
            with lite:
                yield lite
        return
    with psycopg.connect(dsn) as conn:
        yield conn


# Where the calls run


async def test_a_sync_call_inside_a_running_loop_says_to_await(oban: Oban) -> None:
    with pytest.raises(RuntimeError, match=r"`await oban\.enqueue\(\.\.\.\)`"):
        oban.sync.enqueue(SyncWorker.new({}))
    with pytest.raises(RuntimeError, match=r"`await oban\.get_job\(\.\.\.\)`"):
        oban.sync.get_job(1)
    with pytest.raises(RuntimeError, match=r"await .*SyncWorker\.enqueue\(\.\.\.\)"):
        SyncWorker.enqueue_sync({})
    with pytest.raises(RuntimeError, match=r"await .*sync_add\.enqueue\(\.\.\.\)"):
        sync_add.enqueue_sync(1)

    assert await oban.count_jobs(()) == {}  # nothing was inserted


@pytest.mark.parametrize("engine", ENGINES)
def test_an_instance_running_in_another_thread_is_driven_there(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A node started on a loop in one thread; this thread (no loop) uses ``oban.sync``: every
    call runs on the node's loop, on its pool, and no loop or pool is made for it."""
    if engine == "postgres":
        dsn, prefix = str(request.getfixturevalue("dsn")), str(request.getfixturevalue("pg_schema"))
    else:
        dsn, prefix = f"sqlite:///{tmp_path / 'jobs.db'}", "public"
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        oban = Oban(dsn=dsn, prefix=prefix, queues={"sync_api": 2}, shutdown_grace_period=5.0)
        state["oban"], state["loop"] = oban, asyncio.get_running_loop()
        state["finish"] = finish = asyncio.Event()
        try:
            await oban.start()
            state["pool"] = oban.pool
            started.set()
            await finish.wait()
        finally:
            await oban.stop()

    loops: list[asyncio.AbstractEventLoop] = []
    telemetry.attach(
        "sync-loop", ["oban.enqueue.start"], lambda *_: loops.append(asyncio.get_running_loop())
    )
    before = len(sync_threads())
    server = threading.Thread(target=asyncio.run, args=(serve(),), name="node-thread")
    server.start()
    try:
        assert started.wait(30), "the node did not start"
        oban, loop = state["oban"], state["loop"]

        job = SyncWorker.enqueue_sync({"driven": True})
        more = oban.sync.enqueue_many([SyncWorker.new({"n": n}) for n in range(2)])
        for queued in (job, *more):
            wait_until(lambda: queued.id in RAN, "the node ran the job")
        assert oban.sync.get_job(job).state == "completed"

        oban.sync.pause_queue("sync_api")
        assert oban.check_queue("sync_api").paused
        paused = oban.sync.enqueue(SyncWorker.new({"while": "paused"}))
        oban.sync.scale_queue(queue="sync_api", limit=3)
        assert oban.check_queue("sync_api").limit == 3
        assert [q.queue for q in oban.sync.queues()] == ["sync_api"]
        assert [n.node for n in oban.sync.nodes()] == [oban.node]
        assert oban.sync.update_job(paused, {"priority": 3}).priority == 3
        assert oban.sync.list_jobs(state="available").jobs[0].id == paused.id
        assert oban.sync.count_jobs()[("available",)] == 1
        assert oban.sync.cancel_job(paused) == 1
        assert oban.sync.retry_job(paused) == 1
        assert oban.sync.delete_many_jobs([job]) == 1
        oban.sync.resume_queue("sync_api")
        wait_until(lambda: paused.id in RAN, "the resumed queue ran the retried job")

        assert set(loops) == {loop}  # every insert ran on the node's loop
        assert oban.pool is state["pool"]  # and on its pool
        assert oban._engine.bound_loop() is loop
        assert len(sync_threads()) == before  # no private loop was started for it
    finally:
        telemetry.detach("sync-loop")
        if "finish" in state:
            state["loop"].call_soon_threadsafe(state["finish"].set)
        server.join(30)
        _instances.pop("Oban", None)
    assert not server.is_alive()


def wait_until(check: Callable[[], bool], message: str, timeout: float = 10.0) -> None:
    """``eventually`` for a thread without an event loop."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}: not within {timeout}s")
        time.sleep(0.02)


# Errors


def test_errors_are_those_of_the_async_calls(database: tuple[str, str]) -> None:
    dsn, prefix = database
    with sync_instance(dsn, prefix, name="Oban") as oban:
        with pytest.raises(TypeError, match="a Job with an id or an integer id"):
            oban.sync.get_job("1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="do not exist"):
            oban.sync.update_job(10_000, {"priority": 1})
        with pytest.raises(TypeError, match="enqueue_many takes Job objects"):
            oban.sync.enqueue_many([{"not": "a job"}])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="did you mean"):
            SyncWorker.enqueue_sync({}, shedule_in=5)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="limit must be a positive"):
            oban.sync.scale_queue(queue="q", limit=0)


def test_wrong_connection_types_name_what_is_accepted(
    database: tuple[str, str], tmp_path: Path
) -> None:
    dsn, prefix = database
    with sync_instance(dsn, prefix, name="Oban") as oban:
        with pytest.raises(
            TypeError, match=r"conn must be .*Connection/Cursor.*got builtins\.object"
        ):
            oban.sync.enqueue(SyncWorker.new({}), conn=object())
        if dsn.startswith("sqlite:///"):

            async def aiosqlite_attempt() -> None:
                async with aiosqlite.connect(tmp_path / "other.db") as conn:
                    with pytest.raises(TypeError, match=r"asynchronous aiosqlite.*await oban"):
                        SyncWorker.enqueue_sync({}, conn=conn)

            asyncio.run(aiosqlite_attempt())
            return
        with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as lite:
            with pytest.raises(TypeError, match=r"psycopg Connection/Cursor.*got sqlite3"):
                SyncWorker.enqueue_sync({}, conn=lite)

        async def async_attempt() -> None:
            conn = await psycopg.AsyncConnection.connect(dsn)
            try:
                with pytest.raises(TypeError, match=r"asynchronous .*AsyncConnection"):
                    # Inside a loop: a conn= insert needs none, so only the type is wrong.
                    SyncWorker.enqueue_sync({}, conn=conn)
            finally:
                await conn.close()

        asyncio.run(async_attempt())
    assert rows(dsn, prefix, "SELECT id FROM oban_jobs") == []


def test_a_missing_schema_on_postgres_says_to_install(dsn: str) -> None:
    with sync_instance(dsn, "no_such_schema", name="Oban"):
        with (
            psycopg.connect(dsn) as conn,
            pytest.raises(SchemaNotInstalledError, match="oban install"),
        ):
            SyncWorker.enqueue_sync({}, conn=conn)


def test_telemetry_spans_the_insert_on_a_caller_connection(database: tuple[str, str]) -> None:
    dsn, prefix = database
    events: list[tuple[str, int]] = []
    telemetry.attach(
        "sync-span",
        ["oban.enqueue.start", "oban.enqueue.stop"],
        lambda name, meta: events.append((name, meta["count"])),
    )
    try:
        with sync_instance(dsn, prefix, name="Oban"), caller_connection(dsn) as conn:
            SyncWorker.enqueue_sync({}, conn=conn)
    finally:
        telemetry.detach("sync-span")
    assert events == [("oban.enqueue.start", 1), ("oban.enqueue.stop", 1)]


CLOSED_LOOP_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    from oban import Oban

    oban = Oban(dsn=sys.argv[1], prefix=sys.argv[2])
    asyncio.run(oban.get_job(1))  # opens the pool on a loop that ends without oban.stop()
    try:
        oban.sync.get_job(1)
    except RuntimeError as error:
        print(error)
    """
)


def test_connections_of_a_closed_loop_are_refused_with_the_remedy(
    dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    path = tmp_path / "closed.py"
    path.write_text(CLOSED_LOOP_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(path), dsn, pg_schema],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "belong to an event loop that has closed" in done.stdout, done.stdout
    assert "await oban.stop()" in done.stdout
