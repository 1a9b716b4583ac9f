"""The ``oban`` command: install/uninstall the schema and run queues."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__, schema
from ._config import Config, parse_queues
from ._engines._dsn import is_postgres, sqlite_path
from .errors import ObanError
from .worker import worker_name

logger = logging.getLogger("oban.cli")

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Path to oban.toml (default: ./oban.toml when present).",
)
_dsn_option = click.option("--dsn", default=None, help="PostgreSQL DSN [env OBAN_DSN].")
_prefix_option = click.option("--prefix", default=None, help="Schema name [env OBAN_PREFIX].")


def _load(**options: Any) -> Config:
    try:
        return Config.load(**options)
    except (ValueError, FileNotFoundError) as error:
        raise click.UsageError(str(error)) from error


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
    from .oban import Oban

    pool = await Oban.create_pool(dsn=config.dsn, min_size=1, max_size=2)
    try:
        await action(pool)
    finally:
        await pool.close()


def _run(coro: Any) -> None:
    try:
        try:
            import uvloop  # type: ignore[import-not-found]
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
    except ObanError as error:
        raise click.ClickException(str(error)) from error


@click.group(invoke_without_command=False)
@click.version_option(__version__, prog_name="oban")
def main() -> None:
    """oban: background jobs on PostgreSQL."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


@main.command()
@_config_option
@_dsn_option
@_prefix_option
def install(config_path: str | None, dsn: str | None, prefix: str | None) -> None:
    """Install or upgrade the schema (Elixir Oban v14 plus the Python tables)."""
    config = _load(config_path=config_path, dsn=dsn, prefix=prefix)
    if not is_postgres(config.dsn):
        _run(_sqlite(config, "install"))
        click.echo(f"oban schema installed in {sqlite_path(config.dsn)}")
        return

    async def act(pool: Any) -> None:
        await schema.install(pool, config.prefix)

    _run(_with_pool(config, act))
    click.echo(f"oban schema installed in {config.prefix!r} (version {schema.SCHEMA_VERSION})")


@main.command()
@_config_option
@_dsn_option
@_prefix_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
def uninstall(config_path: str | None, dsn: str | None, prefix: str | None, yes: bool) -> None:
    """Drop the oban tables (and every job in them)."""
    config = _load(config_path=config_path, dsn=dsn, prefix=prefix)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Drop every oban table and all jobs in {config.prefix!r}?", abort=True)
    if not is_postgres(config.dsn):
        _run(_sqlite(config, "uninstall"))
        click.echo(f"oban schema removed from {sqlite_path(config.dsn)}")
        return

    async def act(pool: Any) -> None:
        await schema.uninstall(pool, config.prefix)

    _run(_with_pool(config, act))
    click.echo(f"oban schema removed from {config.prefix!r}")


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
    "--queues", default=None, help='Queues and limits, "default:10,mail:5" [env OBAN_QUEUES].'
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
@click.option("--dry-run", is_flag=True, help="Validate the configuration and exit.")
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
    dry_run: bool,
) -> None:
    """Run the configured queues until SIGTERM/SIGINT (a second SIGINT forces exit)."""
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
    )
    if not is_postgres(config.dsn):
        try:
            sqlite_path(config.dsn)
        except ValueError as error:
            raise click.UsageError(str(error)) from error
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

    for entry in cron_entries:
        click.echo(f"cron {entry.expression.source} -> {worker_name(entry.worker)}")
    queue_list = ", ".join(f"{q}:{o['limit']}" for q, o in config.queues.items()) or "(none)"
    where = f"prefix {config.prefix}" if is_postgres(config.dsn) else sqlite_path(config.dsn)
    click.echo(f"oban {__version__} | {where} | queues {queue_list}")
    if dry_run:
        click.echo("configuration is valid (dry run)")
        return
    _run(_serve(config))


async def _serve(config: Config) -> None:
    from .oban import Oban

    pool = None
    if is_postgres(config.dsn):
        pool = await Oban.create_pool(
            dsn=config.dsn, min_size=config.pool_min_size, max_size=config.pool_max_size
        )
    oban = Oban(
        dsn=None if pool is not None else config.dsn,
        pool=pool,
        leader=config.leader,
        leadership=config.leadership,
        lifeline=config.lifeline,
        metrics=config.metrics,
        name=config.name,
        node=config.node,
        notifier=config.notifier,
        prefix=config.prefix,
        pruner=config.pruner,
        queues=config.queues,  # type: ignore[arg-type]
        refresher=config.refresher,
        scheduler=config.scheduler,
        shutdown_grace_period=config.shutdown_grace_period,
        stager=config.stager,
    )
    from .telemetry import logger as telemetry_logger

    telemetry_logger.attach()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_signal(signum: int) -> None:
        nonlocal interrupts
        if signum == signal.SIGINT:
            interrupts += 1
            if interrupts > 1:
                logger.warning("second interrupt: exiting without waiting for jobs")
                os._exit(1)
        logger.info("received %s, shutting down gracefully", signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await oban.start()
        logger.info("node %s running queues %s", oban.node, ", ".join(config.queues))
        await stopping.wait()
        await oban.stop()
        logger.info("stopped")
    finally:
        if pool is not None:
            await pool.close()
