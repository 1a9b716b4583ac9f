"""A row cannot make a node run arbitrary module code (issue 16, item 3).

A job's ``worker`` column is a module path that a node may import. Anyone who can write
``oban_jobs`` (any role with table privileges, an Elixir node, another application) chooses
it. These tests replay hostile worker names against nodes in this process (both engines) and
against real ``oban start`` processes: the standard library, ``__main__`` modules at any depth
and oban itself are never imported; whatever an import raises, ``SystemExit`` and
``KeyboardInterrupt`` included, is the job's recorded error and the node goes on;
``worker_modules`` limits on-demand imports to the application's packages. ``oban start``
searches its working directory after the installed packages, cron discovery imports only
files whose code (not comments or strings) declares a cron worker, and ``--dry-run`` imports
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from oban import Job, Oban, schema, worker
from oban.errors import WorkerResolutionError
from oban.worker import resolve_worker, worker_name
from tests.helpers import eventually, oban_factory, reap

ENGINES = ["postgres", "sqlite"]
#: A password the test server (trust authentication on 127.0.0.1) ignores.
PASSWORD = "hunter2-hostile"
OBAN_MODULE = [sys.executable, "-m", "oban"]
OBAN_SCRIPT = [str(Path(sys.executable).parent / "oban")]
DONE: set[int] = set()


@worker(queue="default")
class HostileImportsOk:
    """A registered worker, outside any ``worker_modules`` prefix: it always resolves."""

    async def process(self, job: Job) -> None:
        assert job.id is not None
        DONE.add(job.id)


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


class Plant:
    """Modules written into a directory (on ``sys.path`` for in-process tests, or the working
    directory of an ``oban start`` process), with unique names and marker files that show
    whether a module body ran."""

    def __init__(self, root: Path, markers: Path) -> None:
        self.root = root
        self.markers = markers
        self.tag = uuid.uuid4().hex[:8]

    def module(self, relative: str, body: str = "") -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))

    def marker(self, name: str) -> Path:
        return self.markers / f"{name}.imported"

    def marks(self, name: str) -> str:
        """A line that creates ``name``'s marker when the module body runs."""
        return f"open({str(self.marker(name))!r}, 'w').close()\n"


@pytest.fixture
def plant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plant]:
    """A directory of planted modules at the front of ``sys.path`` (imported ones are
    forgotten afterwards)."""
    root, markers = tmp_path / "planted", tmp_path / "markers"
    root.mkdir()
    markers.mkdir()
    planted = Plant(root, markers)
    monkeypatch.syspath_prepend(str(root))
    try:
        yield planted
    finally:
        for name in [name for name in sys.modules if planted.tag in name]:
            del sys.modules[name]


async def _drop_schema(pool: AsyncConnectionPool[Any], prefix: str) -> None:
    with contextlib.suppress(PoolTimeout, psycopg.OperationalError):
        async with pool.connection(timeout=5) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')


@pytest.fixture(params=ENGINES)
async def make_node(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Oban]]:
    """Build ``Oban`` instances on a fresh database of the test's engine."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "postgres":
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                request.getfixturevalue("dsn"), min_size=1, max_size=4, open=False
            )
            stack.push_async_callback(pool.close)
            await pool.open(wait=True, timeout=10)
            prefix = f"h_{uuid.uuid4().hex[:12]}"
            stack.push_async_callback(_drop_schema, pool, prefix)
            await schema.install(pool, prefix)
            base: dict[str, Any] = {"pool": pool, "prefix": prefix}
        else:
            base = {"dsn": f"sqlite:///{tmp_path / 'jobs.db'}"}
        yield await stack.enter_async_context(oban_factory(**base))


async def _in_state(oban: Oban, job: Job, state: str) -> Job | None:
    assert job.id is not None
    found = await oban.get_job(job.id)
    return found if found is not None and found.state == state else None


async def _settled(oban: Oban, job: Job, state: str) -> Job:
    found: Job = await eventually(
        lambda: _in_state(oban, job, state), timeout=15, message=f"job {job.worker} {state}"
    )
    return found


def _error(job: Job) -> str:
    assert len(job.errors) == 1, job.errors
    text = job.errors[0]["error"]
    assert isinstance(text, str)
    return text


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    env.pop("PYTHONSAFEPATH", None)  # the tests show what happens without it
    env.update(extra)
    return env


def _with_password(dsn: str) -> str:
    """``dsn`` with a password (ignored by the test server, which trusts 127.0.0.1)."""
    scheme, rest = dsn.split("://", 1)
    userinfo, hosts = rest.split("@", 1) if "@" in rest else ("postgres", rest)
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{PASSWORD}@{hosts}"


class NodeProcess:
    """A real ``oban start`` process whose output is collected as it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(
        cls, command: list[str], *args: str, cwd: Path, env: dict[str, str] | None = None
    ) -> NodeProcess:
        proc = await asyncio.create_subprocess_exec(
            *command,
            *args,
            cwd=cwd,
            env=env or _env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def running(self, timeout: float = 30.0) -> None:
        """Wait until the node says it runs its queues (fails if it exits first)."""

        def ready() -> bool:
            if "running queues" in self.output:
                return True
            assert self.proc.returncode is None, f"the node exited:\n{self.output}"
            return False

        await eventually(ready, timeout=timeout, interval=0.05, message="node running")

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code once the output is read to its end."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self._reader, timeout)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def exited(self, timeout: float = 60.0) -> int:
        """The exit code of a node that exits by itself (a dry run)."""
        await asyncio.wait_for(self._reader, timeout)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def close(self) -> None:
        await reap(self.proc)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def node_process(
    command: list[str], *args: str, cwd: Path, env: dict[str, str] | None = None
) -> AsyncIterator[NodeProcess]:
    node = await NodeProcess.start(command, *args, cwd=cwd, env=env)
    try:
        yield node
    finally:
        await node.close()


# ---------------------------------------------------------------------------------------------
# Refused worker names, in this process, on both engines
# ---------------------------------------------------------------------------------------------


def _hostile(kind: str, plant: Plant) -> tuple[str, str, Path | None]:
    """A hostile worker name of ``kind``, the reason its error gives, and the marker its
    module body would create if it ran."""
    tag = plant.tag
    if kind == "stdlib":
        # `this` prints the Zen of Python when imported: nothing in the suite imports it.
        assert "this" not in sys.modules
        return "this.Worker", "standard library", None
    if kind == "main_at_depth":
        worker_class = "class X:\n    async def process(self, job):\n        return None\n"
        plant.module(f"pkg_{tag}/__init__.py")
        plant.module(f"pkg_{tag}/__main__.py", plant.marks("main") + worker_class)
        return f"pkg_{tag}.__main__.X", "__main__ module", plant.marker("main")
    if kind == "oban":
        return "oban.cli.main", "oban itself", None
    assert kind == "system_exit"
    plant.module(f"exits_{tag}.py", plant.marks("exits") + "raise SystemExit(3)\n")
    return f"exits_{tag}.W", "raised SystemExit(3)", plant.marker("exits")


@pytest.mark.parametrize("kind", ["stdlib", "main_at_depth", "oban", "system_exit"])
async def test_a_refused_worker_name_is_the_jobs_error_and_the_node_runs_on(
    kind: str, make_node: Callable[..., Oban], plant: Plant
) -> None:
    name, reason, marker = _hostile(kind, plant)
    oban = make_node(queues={"default": 2})
    async with oban:
        last_attempt = await oban.enqueue(Job(name, max_attempts=1))
        retried = await oban.enqueue(Job(name, max_attempts=2))
        discarded = await _settled(oban, last_attempt, "discarded")
        retryable = await _settled(oban, retried, "retryable")
        # The node goes on running other jobs.
        ok = await oban.enqueue(HostileImportsOk.new({}))
        await _settled(oban, ok, "completed")

    for failed in (discarded, retryable):
        error = _error(failed)
        assert "WorkerResolutionError" in error
        assert reason in error, error
    if kind == "stdlib":
        assert "this" not in sys.modules
    if kind == "main_at_depth":
        assert marker is not None and not marker.exists()
    if kind == "system_exit":  # the body ran (it is an application module) and was contained
        assert marker is not None and marker.exists()
    assert ok.id in DONE


def test_resolve_worker_contains_whatever_an_import_raises(plant: Plant) -> None:
    plant.module(f"interrupts_{plant.tag}.py", "raise KeyboardInterrupt\n")
    plant.module(f"exits_{plant.tag}.py", "raise SystemExit(0)\n")
    for name, raised in [
        (f"interrupts_{plant.tag}.W", "KeyboardInterrupt()"),
        (f"exits_{plant.tag}.W", "SystemExit(0)"),
    ]:
        try:
            with pytest.raises(WorkerResolutionError, match=re.escape(f"raised {raised}")):
                resolve_worker(name)
        except BaseException as escaped:  # pytest itself stops on a KeyboardInterrupt
            pytest.fail(f"resolve_worker({name!r}) let {escaped!r} escape")


def test_resolve_worker_refusals_never_import(plant: Plant) -> None:
    plant.module(f"app_{plant.tag}/__init__.py", plant.marks("app"))
    plant.module(f"app_{plant.tag}/__main__.py", plant.marks("main"))
    refused = {
        f"app_{plant.tag}.__main__.X": "__main__ module",
        "oban.worker.Worker": "oban itself",
        "json.decoder.JSONDecoder": "standard library",
        "../etc.passwd": "dotted path of Python identifiers",
    }
    for name, reason in refused.items():
        with pytest.raises(WorkerResolutionError, match=re.escape(reason)):
            resolve_worker(name)
    # An empty worker_modules allows registered workers only.
    with pytest.raises(WorkerResolutionError, match="outside worker_modules"):
        resolve_worker(f"app_{plant.tag}.jobs.W", modules=[])
    assert resolve_worker(worker_name(HostileImportsOk), modules=[]) is HostileImportsOk
    assert not plant.marker("app").exists()
    assert not plant.marker("main").exists()


def test_a_name_cannot_reach_a_module_through_another_ones_attributes(plant: Plant) -> None:
    app, gadget = f"app_{plant.tag}", f"gadget_{plant.tag}"
    plant.module(f"{gadget}.py", "class G:\n    def process(self, job):\n        return None\n")
    plant.module(f"{app}/__init__.py", f"import {gadget}\n")

    # gadget_* is outside worker_modules: reaching it as an attribute of app_* is refused too.
    with pytest.raises(WorkerResolutionError, match=f"'{gadget}' of '{app}' is a module"):
        resolve_worker(f"{app}.{gadget}.G", modules=[app])


def test_a_worker_of_the_running_program_is_looked_up_not_imported() -> None:
    main = sys.modules["__main__"]
    name = f"HostileMain_{uuid.uuid4().hex[:8]}"
    setattr(main, name, type(name, (), {"process": lambda self, job: None}))
    try:
        assert resolve_worker(f"__main__.{name}") is getattr(main, name)
        with pytest.raises(WorkerResolutionError, match="__main__ module"):
            resolve_worker(f"__main__.{name}", modules=["app"])
    finally:
        delattr(main, name)


# ---------------------------------------------------------------------------------------------
# A real `oban start` node given hostile worker names
# ---------------------------------------------------------------------------------------------


GOOD_WORKERS = """\
class Good:
    async def process(self, job):
        return None
"""


async def test_oban_start_survives_hostile_worker_names_and_prints_no_password(
    dsn: str, pool: AsyncConnectionPool[Any], prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "boom_exit.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "boom_interrupt.py").write_text("raise KeyboardInterrupt\n")
    (tmp_path / "good_workers.py").write_text(GOOD_WORKERS)
    hostile = {
        "venv.__main__.X": "__main__ module",
        "unittest.__main__.X": "__main__ module",
        "boom_exit.W": "raised SystemExit(3)",
        "boom_interrupt.W": "raised KeyboardInterrupt()",
    }
    client = Oban(pool=pool, prefix=prefix, name=f"client-{prefix}")
    command = ["start", "--dsn", _with_password(dsn), "--prefix", prefix, "--queues", "default:2"]
    async with node_process(OBAN_SCRIPT, *command, cwd=tmp_path) as node:
        await node.running()
        bad = [await client.enqueue(Job(name, max_attempts=1)) for name in hostile]
        failed = [await _settled(client, job, "discarded") for job in bad]
        assert node.proc.returncode is None, node.output
        good = await client.enqueue_many([Job("good_workers.Good") for _ in range(3)])
        for job in good:
            await _settled(client, job, "completed")
        assert node.proc.returncode is None, node.output
        code = await node.stop()
        output = node.output

    assert code == 0, output
    for job in failed:
        error = _error(job)
        assert "WorkerResolutionError" in error
        assert hostile[job.worker] in error, error
    assert PASSWORD not in output
    assert "cannot load" in output  # each one was logged, naming the worker


# ---------------------------------------------------------------------------------------------
# worker_modules: the strict mode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["kwarg", "env", "toml"])
async def test_worker_modules_limits_on_demand_imports_to_its_prefixes(
    source: str,
    make_node: Callable[..., Oban],
    plant: Plant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = f"app_{plant.tag}"
    worker_class = "class W:\n    async def process(self, job):\n        return None\n"
    plant.module(f"{app}/__init__.py")
    plant.module(f"{app}/jobs.py", plant.marks("app") + worker_class)
    plant.module(f"other_{plant.tag}.py", plant.marks("other") + worker_class)
    plant.module(f"{app}x.py", plant.marks("sibling") + worker_class)  # a prefix, not a package

    options: dict[str, Any] = {"queues": {"default": 2}}
    if source == "kwarg":
        options["worker_modules"] = [app]
    elif source == "env":
        monkeypatch.setenv("OBAN_WORKER_MODULES", f"{app}, unused.package")
    else:
        config_dir = tmp_path / "config"
        config_dir.mkdir()
        (config_dir / "oban.toml").write_text(f'worker_modules = ["{app}"]\n')
        monkeypatch.chdir(config_dir)
    oban = make_node(**options)
    assert oban.config.worker_modules is not None and app in oban.config.worker_modules

    async with oban:
        allowed = await oban.enqueue(Job(f"{app}.jobs.W"))
        registered = await oban.enqueue(HostileImportsOk.new({}))
        refused = [
            await oban.enqueue(Job(name, max_attempts=1))
            for name in (f"other_{plant.tag}.W", f"{app}x.W")
        ]
        await _settled(oban, allowed, "completed")
        await _settled(oban, registered, "completed")
        failed = [await _settled(oban, job, "discarded") for job in refused]

    for job in failed:
        assert "outside worker_modules" in _error(job), _error(job)
    assert plant.marker("app").exists()
    assert not plant.marker("other").exists()
    assert not plant.marker("sibling").exists()


# ---------------------------------------------------------------------------------------------
# oban start: the working directory and cron discovery
# ---------------------------------------------------------------------------------------------


def _start_sqlite(tmp_path: Path, *extra: str) -> list[str]:
    return ["start", "--dsn", f"sqlite:///{tmp_path / 'jobs.db'}", "--queues", "default:1", *extra]


@pytest.mark.parametrize("command", [OBAN_MODULE, OBAN_SCRIPT], ids=["python-m", "script"])
async def test_oban_start_does_not_import_a_planted_module_from_its_working_directory(
    command: list[str], tmp_path: Path
) -> None:
    marker = tmp_path / "uvloop.imported"
    (tmp_path / "uvloop.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    async with node_process(command, *_start_sqlite(tmp_path), cwd=tmp_path) as node:
        await node.running()
        code = await node.stop()

    assert code == 0, node.output
    assert not marker.exists(), node.output


CRON_APP = """\
from oban import worker

{marks}
@worker(queue="default", cron="@hourly")
class Hourly:
    async def process(self, job):
        return None
"""

#: Mentions `@worker` and `cron=` only in a comment and a string.
MENTIONS = """\
# Cron workers look like @worker(queue="default", cron="@hourly") on a class.
HELP = "declare them with @job(cron='* * * * *')"
{marks}
"""

#: A worker without cron= and a cron= keyword on another call.
NEAR_MISS = """\
from oban import worker

settings = dict(cron="@hourly")
{marks}
@worker(queue="default")
class NotCron:
    async def process(self, job):
        return None
"""


def _cron_project(root: Path) -> dict[str, Path]:
    markers = {name: root / f"{name}.imported" for name in ("app", "mentions", "near_miss")}
    marks = {name: f"open({str(path)!r}, 'w').close()" for name, path in markers.items()}
    (root / "app").mkdir()
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "jobs.py").write_text(CRON_APP.format(marks=marks["app"]))
    (root / "mentions.py").write_text(MENTIONS.format(marks=marks["mentions"]))
    (root / "near_miss.py").write_text(NEAR_MISS.format(marks=marks["near_miss"]))
    return markers


async def test_cron_discovery_imports_only_files_whose_code_declares_cron_workers(
    tmp_path: Path,
) -> None:
    markers = _cron_project(tmp_path)

    async with node_process(OBAN_SCRIPT, *_start_sqlite(tmp_path), cwd=tmp_path) as node:
        await node.running()
        code = await node.stop()

    assert code == 0, node.output
    assert "cron @hourly -> app.jobs.Hourly" in node.output
    assert markers["app"].exists()
    assert not markers["mentions"].exists(), node.output
    assert not markers["near_miss"].exists(), node.output


@pytest.mark.parametrize(
    "modules",
    [[], ["--cron-modules", "app.jobs"], ["--cron-paths", "app"]],
    ids=["discovery", "cron-modules", "cron-paths"],
)
async def test_dry_run_imports_nothing(modules: list[str], tmp_path: Path) -> None:
    markers = _cron_project(tmp_path)
    uvloop_marker = tmp_path / "uvloop.imported"
    (tmp_path / "uvloop.py").write_text(f"open({str(uvloop_marker)!r}, 'w').close()\n")

    async with node_process(
        OBAN_MODULE, *_start_sqlite(tmp_path, *modules, "--dry-run"), cwd=tmp_path
    ) as node:
        code = await node.exited()

    assert code == 0, node.output
    assert "configuration is valid (dry run)" in node.output
    # The cron workers are still listed, read from the source.
    assert "cron @hourly -> app.jobs.Hourly" in node.output
    assert not any(marker.exists() for marker in [*markers.values(), uvloop_marker])
