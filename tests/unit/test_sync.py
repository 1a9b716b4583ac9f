"""The sync API without a database: ``oban.sync`` mirrors the async facade, inline testing mode,
the coroutine driver the sync inserts share with the async path, and what type checkers see."""

from __future__ import annotations

import asyncio
import inspect
import textwrap
from pathlib import Path

import pytest

from oban import Job, Oban, job, testing, worker
from oban._engines._sync import awaitable, drive
from oban._sync import SyncOban
from tests.unit.test_typing import _mypy, _pyright

RAN: list[object] = []


@worker(queue="unit_sync")
class InlineWorker:
    def process(self, job: Job) -> None:
        RAN.append(job.args)


@job(queue="unit_sync")
def inline_add(a: int, b: int = 2) -> None:
    RAN.append(a + b)


def _public(cls: type) -> list[str]:
    return sorted(n for n, v in vars(cls).items() if not n.startswith("_") and callable(v))


def test_every_sync_method_mirrors_a_coroutine_of_the_facade() -> None:
    names = _public(SyncOban)
    assert {"enqueue", "enqueue_many", "get_job", "list_jobs", "count_jobs", "nodes"} <= set(names)
    for name in names:
        original = getattr(Oban, name)
        assert inspect.iscoroutinefunction(original), name
        assert inspect.signature(getattr(SyncOban, name)) == inspect.signature(original), name


def test_the_view_is_one_per_instance(tmp_path: Path) -> None:
    oban = Oban(dsn=f"sqlite:///{tmp_path / 'unused.db'}", name="unit-sync-view")
    try:
        assert oban.sync is oban.sync
        assert isinstance(oban.sync, SyncOban)
    finally:
        Oban._instances.pop("unit-sync-view", None)


def test_inline_mode_runs_the_job_here_without_an_instance() -> None:
    RAN.clear()
    with testing.mode("inline"):
        done = InlineWorker.enqueue_sync({"n": 1})
        inline_add.enqueue_sync(40)

    assert RAN == [{"n": 1}, 42]
    assert done.args == {"n": 1}


def test_inline_mode_through_the_view_runs_jobs_with_or_without_conn(tmp_path: Path) -> None:
    RAN.clear()
    oban = Oban(dsn=f"sqlite:///{tmp_path / 'never-opened.db'}", name="unit-sync-inline")
    try:
        with testing.mode("inline"):
            oban.sync.enqueue(InlineWorker.new({"n": 2}))
            oban.sync.enqueue_many([InlineWorker.new({"n": 3})], conn=object())
    finally:
        Oban._instances.pop("unit-sync-inline", None)

    assert RAN == [{"n": 2}, {"n": 3}]
    assert not (tmp_path / "never-opened.db").exists()


async def test_inline_mode_inside_a_running_loop_says_to_await() -> None:
    with testing.mode("inline"), pytest.raises(RuntimeError, match=r"await .*enqueue\(\.\.\.\)"):
        InlineWorker.enqueue_sync({})


def test_drive_runs_a_coroutine_that_never_suspends() -> None:
    def plus(a: int, b: int) -> int:
        return a + b

    add = awaitable(plus)

    async def twice() -> int:
        return await add(1, 2) + await add(3, 4)

    assert drive(twice()) == 10


def test_drive_refuses_a_coroutine_that_suspends() -> None:
    async def sleeps() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited asynchronous work"):
        drive(sleeps())


APP = textwrap.dedent(
    """
    from oban import Job, JobPage, Oban, job, worker


    @worker(queue="x")
    class Mailer:
        def process(self, job: Job) -> None: ...


    @job()
    def add(a: int, b: int = 2) -> int:
        return a + b


    def use(oban: Oban) -> None:
        one: Job = Mailer.enqueue_sync({"to": "ada"}, scheduled_in=5, conn=None)
        two: Job = add.enqueue_sync(1, b=3)
        found: Job | None = oban.sync.get_job(one)
        many: list[Job] = oban.sync.enqueue_many([Mailer.new({})], conn=None)
        cancelled: int = oban.sync.cancel_job(two)
        page: JobPage = oban.sync.list_jobs(state="available", limit=10)
        oban.sync.pause_queue("x")
    """
)

MISTAKES = textwrap.dedent(
    """
    from oban import Job, Oban, job, worker


    @worker(queue="x")
    class Mailer:
        def process(self, job: Job) -> None: ...


    @job()
    def add(a: int, b: int = 2) -> int:
        return a + b


    def use(oban: Oban) -> None:
        add.enqueue_sync("one")
        Mailer.enqueue_sync({}, shedule_in=5)
        count: int = oban.sync.get_job(1)
    """
)


def test_type_checkers_see_plain_return_types(tmp_path: Path) -> None:
    app = tmp_path / "sync_app.py"
    app.write_text(APP)
    by_mypy = _mypy(app, tmp_path)
    assert by_mypy.returncode == 0, by_mypy.stdout + by_mypy.stderr
    by_pyright = _pyright(app)
    assert by_pyright.returncode == 0, by_pyright.stdout + by_pyright.stderr


def test_type_checkers_report_mistakes_in_sync_calls(tmp_path: Path) -> None:
    app = tmp_path / "sync_mistakes.py"
    app.write_text(MISTAKES)
    by_mypy = _mypy(app, tmp_path).stdout
    assert 'incompatible type "str"; expected "int"' in by_mypy, by_mypy
    assert 'Unexpected keyword argument "shedule_in" for "enqueue_sync"' in by_mypy, by_mypy
    assert 'has type "Job | None", variable has type "int"' in by_mypy, by_mypy
    by_pyright = _pyright(app).stdout
    assert "3 errors" in by_pyright, by_pyright
