"""Fixtures: a real PostgreSQL (OBAN_TEST_DSN), one freshly installed schema per test."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema
from oban._config import CONFIG_FILE_NAME
from tests.helpers import oban_factory
from tests.pgserver import PrivateServer

DSN = os.environ.get("OBAN_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")

# tests/interop runs real Elixir nodes and needs the Elixir kit and Erlang: `make interop` runs
# it by naming it (pytest tests/interop); the default collection (`make test`) leaves it out.
collect_ignore = ["interop"]
# tests/django_project runs in sessions of its own, with pytest-django configured for it
# (`make test` runs them: see the Makefile and tests/django_project/conftest.py).
if not os.environ.get("DJANGO_SETTINGS_MODULE"):
    collect_ignore.append("django_project")

#: How long, after the last test, threads a test left running get to finish on their own.
LEAKED_THREAD_GRACE = 10.0
_exit_status: list[int] = [0]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status[0] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Never hang at exit: Python joins every non-daemon thread before it exits, so one that a
    test leaked blocked forever (a sync job's thread, an executor's worker) would hang the
    run after its summary, beyond pytest-timeout's reach. Give such threads a grace period,
    then print where each one is stuck and exit with a failure status."""
    deadline = time.monotonic() + LEAKED_THREAD_GRACE
    for thread in _leaked_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = _leaked_threads()
    if not stuck:
        return
    frames = sys._current_frames()
    report = [f"\n{len(stuck)} thread(s) left running by the tests would hang the exit:"]
    for thread in stuck:
        stack = "".join(traceback.format_stack(frames[thread.ident])) if thread.ident else ""
        report.append(f"--- thread {thread.name!r} ---\n{stack}")
    sys.stdout.flush()
    sys.stderr.write("\n".join(report) + "\n")
    sys.stderr.flush()
    os._exit(_exit_status[0] or 1)


def _leaked_threads() -> list[threading.Thread]:
    frames = sys._current_frames()
    return [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread()
        and not thread.daemon
        and thread.is_alive()
        and not _idle_executor_worker(frames.get(thread.ident or -1))
    ]


def _idle_executor_worker(frame: types.FrameType | None) -> bool:
    """A ``ThreadPoolExecutor`` worker waiting for work: the interpreter's exit wakes and joins
    those (``concurrent.futures`` registers that), so they cannot hang it; a busy one can.
    An idle worker's innermost Python frame is ``_worker`` itself, blocked in the C-level
    ``work_queue.get()``; a busy one is deeper, in the work item."""
    return (
        frame is not None
        and frame.f_code.co_name == "_worker"
        and frame.f_code.co_filename.endswith(os.path.join("concurrent", "futures", "thread.py"))
    )


@pytest.fixture(scope="session", autouse=True)
def _no_ambient_oban_config() -> Iterator[None]:
    """``Oban(...)`` reads ``OBAN_*`` variables and ``./oban.toml`` as ``oban start`` does.

    The suite's instances get every setting from their fixtures, so none may come from the
    shell that runs the tests: the ``OBAN_*`` settings (not ``OBAN_TEST_*``) are removed for
    the session, and a ``./oban.toml`` in the directory pytest runs from stops the run (a test
    that needs a file makes its own in a temporary directory and changes into it).
    """
    if Path(CONFIG_FILE_NAME).is_file():
        pytest.exit(
            f"{Path(CONFIG_FILE_NAME).resolve()} exists: Oban(...) would read it in every test. "
            "Run the tests from a directory without oban.toml.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    ambient = [k for k in os.environ if k.startswith("OBAN_") and not k.startswith("OBAN_TEST_")]
    with pytest.MonkeyPatch.context() as patch:
        for name in ambient:
            patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def dsn() -> str:
    """The test database; fails (never skips) when it cannot be reached."""
    try:
        with psycopg.connect(DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        pytest.fail(
            f"cannot reach the test PostgreSQL at {DSN!r} ({error}). Start PostgreSQL or "
            "point OBAN_TEST_DSN at a server.",
            pytrace=False,
        )
    return DSN


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, max_size=10, open=False)
    await pool.open(wait=True, timeout=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def prefix(pool: AsyncConnectionPool[Any]) -> AsyncIterator[str]:
    """A schema of its own for each test, with oban installed in it (dropped afterwards, also
    when the install fails halfway)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        await schema.install(pool, name)
        yield name
    finally:
        async with pool.connection(timeout=10) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def make_oban(
    pool: AsyncConnectionPool[Any], prefix: str
) -> AsyncIterator[Callable[..., Oban]]:
    """Build ``Oban`` instances on the test schema; all are stopped after the test."""
    async with oban_factory(pool=pool, prefix=prefix) as make:
        yield make


@pytest.fixture
async def oban(make_oban: Callable[..., Oban]) -> Oban:
    """A client-mode instance named "Oban" (enqueue only, no queues)."""
    return make_oban()


@pytest.fixture
async def sql(pool: AsyncConnectionPool[Any], prefix: str) -> Callable[..., Any]:
    """Run SQL against the test schema: ``await sql("SELECT ... FROM oban_jobs", params)``.

    The search_path is set to the test schema, so table names need no prefix.
    """

    async def run(query: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        async with pool.connection() as conn:
            await conn.execute(f'SET search_path TO "{prefix}"')
            try:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []
            finally:
                await conn.execute("RESET search_path")

    return run


@pytest.fixture
def private_pg() -> Iterator[PrivateServer]:
    """A started PostgreSQL server of the test's own, for tests that restart or crash it.

    Never restart the shared OBAN_TEST_DSN server; see tests/pgserver.py.
    """
    server = PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


def _shared_server_started_at() -> Any:
    """``pg_postmaster_start_time()`` of the OBAN_TEST_DSN server, or None if unreachable."""
    try:
        with psycopg.connect(DSN, connect_timeout=3) as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else None


@pytest.fixture(scope="session", autouse=True)
def _shared_server_never_restarted() -> Iterator[None]:
    """Fail the session if the shared server was restarted or stopped while it ran."""
    before = _shared_server_started_at()
    yield
    if before is None:  # no server at the start (unit tests only): nothing to guard
        return
    after = _shared_server_started_at()
    if after != before:
        now = "is unreachable" if after is None else f"has been up only since {after}"
        pytest.fail(
            f"the shared PostgreSQL at {DSN!r} was up since {before} and at the end of the "
            f"test session {now}: a test restarted or stopped it. Tests that need to restart or "
            "crash PostgreSQL must use the private_pg fixture (tests/pgserver.py).",
            pytrace=False,
        )
