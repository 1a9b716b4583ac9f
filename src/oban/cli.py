"""The ``oban`` command: install/uninstall the schema and run queues."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import __version__, schema
from ._config import Config, parse_queues
from ._engines._dsn import describe, is_postgres, sqlite_path
from ._supervisor import SUPERVISOR_ENV, Supervisor, supervisor_pid
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


def _load(**options: Any) -> Config:
    try:
        return Config.load(**options)
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


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        uvloop = None
    # Run outside the except block: every traceback would read "during handling of
    # ModuleNotFoundError: uvloop" otherwise.
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
    """Drop the oban tables (and every job in them)."""
    config = _load(config_path=config_path, dsn=dsn, prefix=prefix)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(
                f"not dropping the oban tables in {_database(config)}: there is no terminal "
                "to confirm on; pass --yes to drop them"
            )
        click.confirm(f"Drop every oban table and all jobs in {_database(config)}?", abort=True)
    if not is_postgres(config.dsn):
        _run(_sqlite(config, "uninstall"))
        click.echo(f"oban schema removed from {_database(config)}")
        return

    async def act(pool: Any) -> None:
        await schema.uninstall(pool, config.prefix)

    _run(_with_pool(config, act))
    click.echo(f"oban schema removed from {_database(config)}")


def _import_modules(modules: list[str]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:
            raise click.UsageError(f"cannot import worker module {module!r}: {error}") from error


def _import_paths(paths: list[str]) -> None:
    for raw in paths:
        path = Path(raw).resolve()
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(Path.cwd()) if file.is_relative_to(Path.cwd()) else None
            if relative is None:
                raise click.UsageError(f"{file} is outside the working directory")
            module = ".".join(relative.with_suffix("").parts)
            _import_modules([module.removesuffix(".__init__")])


_SKIPPED_DIRS = frozenset({".venv", "venv", ".tox", "node_modules", "__pycache__", "site-packages"})


def _discover_cron_modules(root: Path) -> list[str]:
    """Modules under ``root`` that declare cron workers (``@worker``/``@job`` with ``cron=``)."""
    found: list[str] = []
    for file in sorted(root.rglob("*.py")):
        relative = file.relative_to(root)
        if any(part in _SKIPPED_DIRS or part.startswith(".") for part in relative.parts[:-1]):
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "cron=" in text and ("@worker" in text or "@job" in text):
            found.append(".".join(relative.with_suffix("").parts).removesuffix(".__init__"))
    return found


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
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    modules = _split(cron_modules or os.environ.get("OBAN_CRON_MODULES"))
    paths = _split(cron_paths or os.environ.get("OBAN_CRON_PATHS"))
    if modules or paths:
        _import_modules(modules)
        _import_paths(paths)
    else:
        for module in _discover_cron_modules(Path.cwd()):
            try:
                importlib.import_module(module)
            except Exception as error:
                logger.warning("skipping cron module %s: cannot import it: %s", module, error)
    from .decorators import cron_entries

    if not supervised:  # the supervisor said it all
        for entry in cron_entries:
            click.echo(f"cron {entry.expression.source} -> {worker_name(entry.worker)}")
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
    base = [sys.executable, "-m", "oban", "start", *flags, "--processes", "1"]
    commands = []
    for index in range(1, config.processes + 1):
        node = f"{config.node}-{index}" if config.node else None
        commands.append((base + (["--node", node] if node else []), node))
    sys.exit(Supervisor(commands, env=os.environ).run())


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
    from .telemetry import logger as telemetry_logger

    telemetry_logger.attach()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_signal(signum: int) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1 and supervisor is not None:
            # The supervisor kills its nodes on a second signal; a repeat here is a copy of
            # the first (systemd signals the whole control group, the supervisor forwards).
            logger.info("received %s again; already stopping", signal.Signals(signum).name)
            return
        if interrupts > 1:
            logger.warning(
                "second %s: exiting without waiting for jobs", signal.Signals(signum).name
            )
            logging.shutdown()
            os._exit(1)
        logger.info("received %s, shutting down gracefully", signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    watcher = None if supervisor is None else loop.create_task(_watch_parent(supervisor, stopping))
    try:
        await oban.start()
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


async def _watch_parent(supervisor: int, stopping: asyncio.Event) -> None:
    """Stop gracefully once the supervisor is gone (this process was re-parented)."""
    while os.getppid() == supervisor:  # noqa: ASYNC110 (nothing to wait on: this polls)
        await asyncio.sleep(_PARENT_CHECK_INTERVAL)
    if not stopping.is_set():
        logger.warning("the supervisor (pid %d) is gone, shutting down gracefully", supervisor)
        stopping.set()


#: How often a supervised node checks that its supervisor still runs.
_PARENT_CHECK_INTERVAL = 0.5
