"""The ``oban`` command: install/uninstall the schema and run queues."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import functools
import importlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import __version__, schema
from ._config import Config, parse_queues
from ._engines._dsn import describe, is_postgres, sqlite_path
from ._supervisor import SUPERVISOR_ENV, Supervisor, is_signal_copy, supervisor_pid
from .errors import ObanError, SchemaNotInstalledError
from .worker import worker_name

logger = logging.getLogger("oban.cli")
T = TypeVar("T")

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Path to oban.toml (default: ./oban.toml when present).",
)
_dsn_option = click.option(
    "--dsn",
    default=None,
    help="postgresql://... or sqlite:///path.db (default: ./oban.db) [env OBAN_DSN].",
)
_prefix_option = click.option("--prefix", default=None, help="Schema name [env OBAN_PREFIX].")


@dataclasses.dataclass(frozen=True)
class Host:
    """A program that runs the ``oban`` commands as its own (``manage.py oban``): give it as
    ``main.main(..., obj=Host(...))``.

    Attributes:
        load: resolves the options a command was given (``dsn``, ``prefix``, ``queues``...)
            into the settings, in place of ``Config.load`` (and ``oban.toml``).
        argv: the command line that runs the commands there (``python manage.py oban``), for
            the node processes of ``start --processes N``.
        worker_modules: the modules holding the workers, already imported: ``start`` imports
            these rather than discovering cron modules in the working directory.
    """

    load: Callable[..., Config]
    argv: list[str]
    worker_modules: list[str]


def _host() -> Host | None:
    context = click.get_current_context(silent=True)
    return context.find_object(Host) if context is not None else None


def _load(**options: Any) -> Config:
    host = _host()
    try:
        if host is None:
            return Config.load(**options)
        if options.pop("config_path", None) is not None:
            raise ValueError("--config: oban.toml is not read here; the settings take its place")
        return host.load(**options)
    except (TypeError, ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error


def _database(config: Config) -> str:
    """Where ``config`` points, for output: the SQLite file or the masked DSN and schema."""
    if is_postgres(config.dsn):
        return f"schema {config.prefix!r} of {describe(config.dsn)}"
    return describe(config.dsn)


async def _sqlite(config: Config, action: str) -> None:
    from ._engines.sqlite import SQLiteEngine

    try:
        engine = SQLiteEngine(sqlite_path(config.dsn), prefix=config.prefix)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    await engine.open()
    try:
        await getattr(engine, action)()
    finally:
        await engine.close()


async def _with_pool(config: Config, action: Any) -> None:
    from ._engines.postgres import new_pool, open_pool

    assert config.dsn is not None
    pool = new_pool(config.dsn, {**config.pool_kwargs(), "min_size": 1, "max_size": 2})
    await open_pool(pool, timeout=config.pool_timeout)
    try:
        await action(pool)
    finally:
        await pool.close()


#: uvloop (or None when it is not installed), once looked up; see _uvloop.
_uvloop_found: list[Any] = []


def _uvloop() -> Any:
    """The uvloop module, or ``None`` when it is not installed. Looked up once, before
    ``start`` adds the working directory to ``sys.path``: a ``uvloop.py`` there is never
    taken for it."""
    if not _uvloop_found:
        try:
            module: Any = importlib.import_module("uvloop")
        except ImportError:
            module = None
        _uvloop_found.append(module)
    return _uvloop_found[0]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # Looked up in a function of its own: every traceback would read "during handling of
    # ModuleNotFoundError: uvloop" otherwise.
    uvloop = _uvloop()
    try:
        if uvloop is None:
            return asyncio.run(coro)
        result: T = uvloop.run(coro)
        return result
    except ObanError as error:
        raise click.ClickException(str(error)) from error


@click.group(invoke_without_command=False)
@click.version_option(__version__, prog_name="oban")
def main() -> None:
    """oban: background jobs on PostgreSQL."""
    if _host() is None:  # a host program (manage.py) has its own path set up
        _working_directory_off_the_front()


def _working_directory_off_the_front() -> None:
    """``python -m oban`` starts with the working directory first on ``sys.path`` (Python
    puts it there for ``-m``), ahead of the installed packages: take it off, so that nothing
    oban imports from here on (uvloop, the engines' dependencies) comes from a file planted
    there; ``start`` appends it for the application's own modules. The ``oban`` script and
    ``python -P -m oban`` never put it there and are the ones to deploy: with plain ``-m``,
    oban and its dependencies were imported before this runs (docs/security.md)."""
    if sys.flags.safe_path or not sys.path:
        return
    first = sys.path[0]
    if first == "" or os.path.abspath(first) == os.getcwd():
        del sys.path[0]


def _working_directory_last() -> None:
    """Let jobs and cron discovery import the application's modules from the working
    directory, searched after the installed packages: a module there cannot stand in for one
    of them (a planted ``uvloop.py`` ran when the directory came first)."""
    _uvloop()  # oban's own optional import, decided before the directory is searched
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)


@main.command()
def version() -> None:
    """Print the package name and version, e.g. ``oban 0.1.0``."""
    click.echo(f"oban {__version__}")


@main.command()
@_config_option
@_dsn_option
@_prefix_option
def install(config_path: str | None, dsn: str | None, prefix: str | None) -> None:
    """Install or upgrade the schema (Elixir Oban v14 plus the Python tables)."""
    config = _load(config_path=config_path, dsn=dsn, prefix=prefix)
    if not is_postgres(config.dsn):
        _run(_sqlite(config, "install"))
        click.echo(f"oban schema installed in {_database(config)}")
        return

    async def act(pool: Any) -> None:
        await schema.install(pool, config.prefix)

    _run(_with_pool(config, act))
    click.echo(f"oban schema installed in {_database(config)} (version {schema.SCHEMA_VERSION})")


@main.command()
@_config_option
@_dsn_option
@_prefix_option
@click.option("--yes", is_flag=True, help="Drop without asking (required without a terminal).")
def uninstall(config_path: str | None, dsn: str | None, prefix: str | None, yes: bool) -> None:
    """Drop the oban tables (and every job in them).

    On PostgreSQL: oban_jobs, oban_peers, oban_leaders and oban_producers (with the
    oban_job_state type and oban_count_estimate function). oban_jobs and oban_peers (leader
    election) are Elixir Oban's tables too: Elixir Oban nodes and Oban Web using the schema
    stop working. On SQLite: the prefix's oban_* tables.
    """
    config = _load(config_path=config_path, dsn=dsn, prefix=prefix)
    tables, note = _uninstall_tables(config)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(
                f"not dropping {tables} in {_database(config)}{note}: there is no terminal "
                "to confirm on; pass --yes to drop them"
            )
        click.confirm(f"Drop {tables} and all jobs in {_database(config)}{note}?", abort=True)
    if not is_postgres(config.dsn):
        _run(_sqlite(config, "uninstall"))
        click.echo(f"oban schema removed from {_database(config)}: dropped {tables}")
        return

    async def act(pool: Any) -> None:
        await schema.uninstall(pool, config.prefix)

    _run(_with_pool(config, act))
    click.echo(f"oban schema removed from {_database(config)}: dropped {tables}{note}")


def _uninstall_tables(config: Config) -> tuple[str, str]:
    """The tables ``uninstall`` drops, for its prompt and output, and a note on Elixir's."""
    try:
        if is_postgres(config.dsn):
            names = schema.dropped_tables(config.prefix)
        else:
            from ._engines.sqlite import _load as sqlite_sql

            names = re.findall(
                r"DROP TABLE IF EXISTS (\w+)", sqlite_sql("uninstall", config.prefix)
            )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    note = (
        " (oban_jobs and oban_peers, its leader election, are Elixir Oban's tables too: "
        "Elixir Oban nodes and Oban Web using this schema stop working)"
        if "oban_peers" in names
        else ""
    )
    return ", ".join(names), note


def _import_modules(modules: list[str]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:
            raise click.UsageError(f"cannot import worker module {module!r}: {error}") from error


def _path_modules(paths: list[str]) -> Iterator[tuple[str, Path]]:
    """The module name and file of every ``.py`` file under ``paths`` (files or directories
    under the working directory)."""
    for raw in paths:
        path = Path(raw).resolve()
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(Path.cwd()) if file.is_relative_to(Path.cwd()) else None
            if relative is None:
                raise click.UsageError(f"{file} is outside the working directory")
            yield ".".join(relative.with_suffix("").parts).removesuffix(".__init__"), file


def _import_paths(paths: list[str]) -> None:
    for module, _file in _path_modules(paths):
        _import_modules([module])


_SKIPPED_DIRS = frozenset({".venv", "venv", ".tox", "node_modules", "__pycache__", "site-packages"})
#: Decorators that declare a worker: ``@worker(...)``, ``@job(...)`` and the same through
#: the package, ``@oban.worker(...)``.
_WORKER_DECORATORS = frozenset({"worker", "job"})

CronDeclaration = tuple[str, str]
"""A cron worker read from source: its expression (as written) and its worker name."""


def _cron_call(decorator: ast.expr) -> ast.Call | None:
    """``decorator`` if it is ``worker(..., cron=...)``, ``job(..., cron=...)`` or the same
    as ``oban.worker``/``oban.job``."""
    if not isinstance(decorator, ast.Call):
        return None
    func = decorator.func
    named = (isinstance(func, ast.Name) and func.id in _WORKER_DECORATORS) or (
        isinstance(func, ast.Attribute)
        and func.attr in _WORKER_DECORATORS
        and isinstance(func.value, ast.Name)
        and func.value.id == "oban"
    )
    if named and any(keyword.arg == "cron" for keyword in decorator.keywords):
        return decorator
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


class _CronFinder(ast.NodeVisitor):
    """Collects the cron workers a module declares, with their qualified names."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.scope: list[str] = []
        self.found: list[CronDeclaration] = []

    def _declaration(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        qualname = ".".join([*self.scope, node.name])
        for decorator in node.decorator_list:
            call = _cron_call(decorator)
            if call is not None:
                self.found.append((_cron_text(call), _worker_text(call, self.module, qualname)))
        self.scope.append(node.name if isinstance(node, ast.ClassDef) else f"{node.name}.<locals>")
        self.generic_visit(node)
        self.scope.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._declaration(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._declaration(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._declaration(node)


def _cron_text(call: ast.Call) -> str:
    value = _keyword(call, "cron")
    assert value is not None
    if isinstance(value, ast.Dict):  # {"expr": ..., "timezone": ...}
        for key, item in zip(value.keys, value.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "expr":
                value = item
                break
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    return ast.unparse(value)


def _worker_text(call: ast.Call, module: str, qualname: str) -> str:
    name = _keyword(call, "name")
    if isinstance(name, ast.Constant) and isinstance(name.value, str):
        return name.value
    return f"{module}.{qualname}"


def _cron_declarations(file: Path, module: str) -> list[CronDeclaration] | None:
    """The cron workers ``file`` declares, read from its source without running any of it
    (``[]`` when there are none), or ``None`` when it cannot be read or parsed."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if "cron" not in text:  # no parse needed: no cron= keyword anywhere
        return []
    finder = _CronFinder(module)
    try:
        finder.visit(ast.parse(text, str(file)))
    except (SyntaxError, ValueError, RecursionError):
        return None
    return finder.found


def _discover(root: Path) -> Iterator[tuple[str, list[CronDeclaration]]]:
    """Each module under ``root`` whose code declares cron workers, with its declarations.
    Files are parsed, never imported: a mention of ``@worker`` and ``cron=`` in a comment or a
    string, or a ``cron=`` on another call, does not count."""
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root)
        if any(part in _SKIPPED_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        found = _cron_declarations(file, module)
        if found is None:
            logger.warning("skipping %s in cron discovery: it cannot be read or parsed", file)
        elif found:
            yield module, found


def _discover_cron_modules(root: Path) -> list[str]:
    """Modules under ``root`` that declare cron workers (``@worker``/``@job`` with ``cron=``)."""
    return [module for module, _found in _discover(root)]


def _module_file(module: str) -> Path | None:
    """The source file of ``module``, found on ``sys.path`` without importing it or its
    packages (``None``: not found, or not a Python source file)."""
    search: list[str] | None = None
    parts = module.split(".")
    for depth in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: depth + 1]), search)
        if spec is None:
            return None
        if depth < len(parts) - 1:
            if spec.submodule_search_locations is None:
                return None
            search = list(spec.submodule_search_locations)
        elif spec.origin is not None and spec.origin.endswith(".py"):
            return Path(spec.origin)
    return None


def _declared_cron(modules: list[str], paths: list[str]) -> list[CronDeclaration]:
    """For ``--dry-run``: the cron workers the modules that ``start`` would import declare,
    read from their source; nothing is imported."""
    if not modules and not paths:
        return [entry for _module, found in _discover(Path.cwd()) for entry in found]
    sources: list[tuple[str, Path]] = []
    for module in modules:
        file = _module_file(module)
        if file is None:
            raise click.UsageError(
                f"cannot find worker module {module!r} (a dry run imports nothing)"
            )
        sources.append((module, file))
    sources += _path_modules(paths)
    declared: list[CronDeclaration] = []
    for module, file in sources:
        found = _cron_declarations(file, module)
        if found is None:
            raise click.UsageError(f"cannot read worker module {module!r} from {file}")
        declared += found
    return declared


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@main.command()
@_config_option
@_dsn_option
@_prefix_option
@click.option(
    "--queues",
    default=None,
    help='Queues and limits, "default:10,mail:5"; replaces the queues of oban.toml '
    "[env OBAN_QUEUES].",
)
@click.option("--node", default=None, help="Node name [env OBAN_NODE].")
@click.option("--pool-min-size", type=int, default=None, help="[env OBAN_POOL_MIN_SIZE]")
@click.option("--pool-max-size", type=int, default=None, help="[env OBAN_POOL_MAX_SIZE]")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    default="INFO",
)
@click.option(
    "--cron-modules", default=None, help="Modules with workers to import [env OBAN_CRON_MODULES]."
)
@click.option(
    "--cron-paths",
    default=None,
    help="Files/directories of workers to import [env OBAN_CRON_PATHS].",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Node processes to run under one supervisor, e.g. one per core for CPU-bound sync "
    "jobs (default 1) [env OBAN_PROCESSES].",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the configuration, the database connection and the schema, then exit.",
)
def start(
    config_path: str | None,
    dsn: str | None,
    prefix: str | None,
    queues: str | None,
    node: str | None,
    pool_min_size: int | None,
    pool_max_size: int | None,
    log_level: str,
    cron_modules: str | None,
    cron_paths: str | None,
    processes: int | None,
    dry_run: bool,
) -> None:
    """Run the configured queues until SIGTERM/SIGINT (a second one forces exit).

    With --processes N (N > 1) it supervises N node processes instead, restarting any that
    dies.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        queue_config = parse_queues(queues) if queues is not None else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--queues") from error
    config = _load(
        config_path=config_path,
        dsn=dsn,
        prefix=prefix,
        queues=queue_config,
        node=node,
        pool_min_size=pool_min_size,
        pool_max_size=pool_max_size,
        processes=processes,
    )
    # A node run by a supervisor (see _supervisor.py); its own children, if any, are not.
    supervisor = supervisor_pid()
    os.environ.pop(SUPERVISOR_ENV, None)
    supervised = supervisor is not None
    declared = import_cron_workers(cron_modules, cron_paths, dry_run=dry_run)

    if not supervised:  # the supervisor said it all
        for expression, name in declared:
            click.echo(f"cron {expression} -> {name}")
        queue_list = ", ".join(f"{q}:{o['limit']}" for q, o in config.queues.items()) or "(none)"
        processes_note = f" | {config.processes} processes" if config.processes > 1 else ""
        click.echo(
            f"oban {__version__} | {_database(config)} | queues {queue_list}{processes_note}"
        )
    if not config.queues and not supervised:
        logger.warning(
            "no queues configured, so this node runs no jobs: give --queues default:10, "
            "OBAN_QUEUES or a [queues] table in oban.toml"
        )
    if dry_run:
        _dry_run(config)
        click.echo("configuration is valid (dry run)")
        return
    if config.processes > 1:
        _supervise(config)
    _run(_serve(config, supervisor=supervisor))


def import_cron_workers(
    cron_modules: str | None, cron_paths: str | None, *, dry_run: bool = False
) -> list[CronDeclaration]:
    """Import the workers that declare cron entries, as ``oban start`` does: the modules and
    paths given (else OBAN_CRON_MODULES / OBAN_CRON_PATHS), else a host's worker modules,
    else those discovered in the working directory (searched after the installed packages);
    with ``dry_run`` nothing is imported and the entries are read from the source."""
    _working_directory_last()
    modules = _split(cron_modules or os.environ.get("OBAN_CRON_MODULES"))
    paths = _split(cron_paths or os.environ.get("OBAN_CRON_PATHS"))
    host = _host()
    if host is not None and not (modules or paths):  # the host imported its workers
        return _import_cron_modules(host.worker_modules, [], discover=False)
    if dry_run:  # imports nothing: the cron workers are read from the source
        return _declared_cron(modules, paths)
    return _import_cron_modules(modules, paths)


def _import_cron_modules(
    modules: list[str], paths: list[str], *, discover: bool = True
) -> list[CronDeclaration]:
    """Import the named modules, or (``discover``) the discovered ones; the cron entries
    they declared."""
    if modules or paths or not discover:
        _import_modules(modules)
        _import_paths(paths)
    else:
        for module in _discover_cron_modules(Path.cwd()):
            try:
                importlib.import_module(module)
            except Exception as error:
                logger.warning("skipping cron module %s: cannot import it: %s", module, error)
    from .decorators import cron_entries

    return [(entry.expression.source, worker_name(entry.worker)) for entry in cron_entries]


#: ``start`` options a supervisor does not hand down as they were given.
_SUPERVISOR_OWN_OPTIONS = frozenset({"node", "processes", "dry_run"})


def _supervise(config: Config) -> NoReturn:
    """Run ``config.processes`` node processes under a supervisor; exits with its status.

    Each child runs ``oban start`` with the flags given here (it reads the same environment
    and oban.toml), ``--processes 1`` and, when a node name was configured, ``--node NAME-i``.
    """
    _preflight(config)
    context = click.get_current_context()
    flags: list[str] = []
    for param in context.command.params:
        value = context.params.get(param.name or "")
        if not isinstance(param, click.Option) or param.name in _SUPERVISOR_OWN_OPTIONS:
            continue
        if param.is_flag:
            flags += [param.opts[0]] if value else []
        elif value is not None:
            flags += [param.opts[0], str(value)]
    host = _host()
    program = host.argv if host is not None else [sys.executable, *_safe_path(), "-m", "oban"]
    base = [*program, "start", *flags, "--processes", "1"]
    commands = []
    for index in range(1, config.processes + 1):
        node = f"{config.node}-{index}" if config.node else None
        commands.append((base + (["--node", node] if node else []), node))
    sys.exit(Supervisor(commands, env=os.environ).run())


def _safe_path() -> list[str]:
    """``-P`` for a ``python -m oban`` child: without it Python puts the working directory
    ahead of the installed packages before oban runs (the child's ``start`` appends it); but
    not when oban itself is imported from the working directory (a checkout run in place)."""
    if Path(__file__).resolve().parent.parent == Path.cwd().resolve():
        return []
    return ["-P"]


def _preflight(config: Config) -> None:
    """Fail once, before any child starts, where every child would fail at once."""
    if is_postgres(config.dsn):
        _run(_with_pool(config, functools.partial(_check_schema, config.prefix)))
        return
    path = Path(sqlite_path(config.dsn))
    if not path.parent.is_dir():
        raise click.UsageError(f"cannot create {path}: {path.parent} is not a directory")


def _dry_run(config: Config) -> None:
    """Connect and check the schema as ``start`` would, without running anything."""
    if is_postgres(config.dsn):
        _run(_with_pool(config, functools.partial(_check_schema, config.prefix)))
        click.echo(f"connected; the oban schema is installed in {_database(config)}")
        return
    path = Path(sqlite_path(config.dsn))
    if not path.exists():
        if not path.parent.is_dir():
            raise click.UsageError(f"cannot create {path}: {path.parent} is not a directory")
        click.echo(f"{path} does not exist yet: start creates it and installs the schema")
        return
    installed = _run(_sqlite_has_schema(config))
    click.echo(
        f"opened {path}; "
        + ("the oban schema is installed" if installed else "start installs the oban schema")
    )


async def _sqlite_has_schema(config: Config) -> bool:
    try:
        await _sqlite(config, "check_schema")
    except SchemaNotInstalledError:
        return False
    return True


async def _check_schema(prefix: str, pool: Any) -> None:
    from ._engines.postgres import PostgresEngine

    await PostgresEngine(pool, prefix=prefix).check_schema()


async def _serve(config: Config, *, supervisor: int | None = None) -> None:
    """Run one node until SIGTERM/SIGINT. ``supervisor``: the pid of the supervisor that runs
    this node (``oban start --processes N``), which handles second signals itself; the node
    stops gracefully when its parent is no longer that process."""
    from .oban import Oban

    # The instance opens (and closes) its own pool, sized by the pool_* settings.
    oban = Oban.from_config(config)
    from ._engines._dsn import guard_pool_logs
    from .telemetry import logger as telemetry_logger

    # Every value bounded; job args left out unless OBAN_LOG_ARGS is true. psycopg_pool's
    # warnings may quote the DSN: its password is masked there too.
    try:
        telemetry_logger.attach(**telemetry_logger.options_from_env())
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    guard_pool_logs(config.dsn)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    first_signal_at: float | None = None

    def on_signal(signum: int) -> None:
        nonlocal first_signal_at
        now = time.monotonic()
        if first_signal_at is not None and (
            supervisor is not None or is_signal_copy(first_signal_at, now)
        ):
            # A copy of the first: `timeout` signals its child and then the child's group,
            # systemd the whole control group while the supervisor forwards; and a supervisor
            # kills its nodes itself on a real second signal.
            logger.info("received %s again; already stopping", signal.Signals(signum).name)
            return
        if first_signal_at is not None:
            logger.warning(
                "second %s: exiting without waiting for jobs", signal.Signals(signum).name
            )
            logging.shutdown()
            os._exit(1)
        first_signal_at = now
        logger.info("received %s, shutting down gracefully", signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    watcher = None if supervisor is None else loop.create_task(_watch_parent(supervisor, stopping))
    try:
        if not await _started_unless_stopped(oban, stopping):
            logger.info("stopped before the node had started")
            return
        logger.info("node %s running queues %s", oban.node, ", ".join(config.queues) or "(none)")
        await stopping.wait()
        await oban.stop()
        abandoned = oban._threads_busy()
        if abandoned:
            # Threads cannot be interrupted, and their jobs were handed back for rescue: the
            # process must not live on running them beside the node that takes them over.
            logger.warning("stopped; exiting with %d job threads still running", abandoned)
            logging.shutdown()
            os._exit(1)
        logger.info("stopped")
    finally:
        if watcher is not None:
            watcher.cancel()
        # A start that failed (say, on a missing schema) may leave the pool open.
        await oban._close_engine()


async def _started_unless_stopped(oban: Any, stopping: asyncio.Event) -> bool:
    """Start ``oban``, unless a signal comes first: opening the pool may wait for the
    database up to ``pool_timeout``, and SIGTERM must not wait that long. ``False`` when the
    start was abandoned; a failed start raises its error."""
    starting = asyncio.create_task(oban.start())
    signalled = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        signalled.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await starting
    return False


async def _watch_parent(supervisor: int, stopping: asyncio.Event) -> None:
    """Stop gracefully once the supervisor is gone (this process was re-parented)."""
    while os.getppid() == supervisor:  # noqa: ASYNC110 (nothing to wait on: this polls)
        await asyncio.sleep(_PARENT_CHECK_INTERVAL)
    if not stopping.is_set():
        logger.warning("the supervisor (pid %d) is gone, shutting down gracefully", supervisor)
        stopping.set()


#: How often a supervised node checks that its supervisor still runs.
_PARENT_CHECK_INTERVAL = 0.5


# The commands that see and steer jobs (oban jobs, job, queues, stats, retry, cancel, delete,
# pause, resume, scale) live in their own module, which adds them to `main`.
from . import _cli_manage  # noqa: E402, F401
from .web._command import web as _web_command  # noqa: E402 (imports click only)

main.add_command(_web_command)
