"""``oban web``: serve the dashboard on its own, as a client of the configured database.

This module imports only click and oban's configuration at import time, so ``oban --help``
works without the ``web`` extra; the command itself says how to install it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["web"]

logger = logging.getLogger("oban.web")

_INSTALL_HINT = "oban web needs the web extra: pip install 'oban[web]'"


def _parse_basic_auth(
    context: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, str] | None:
    if value is None or value == "":
        return None
    username, sep, password = value.partition(":")
    if not sep or not username or not password:
        raise click.BadParameter("expected user:password, both non-empty", context, param)
    return username, password


@click.command("web")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Path to oban.toml (default: ./oban.toml when present).",
)
@click.option(
    "--dsn",
    default=None,
    help="postgresql://... or sqlite:///path.db (default: ./oban.db) [env OBAN_DSN].",
)
@click.option("--prefix", default=None, help="Schema name [env OBAN_PREFIX].")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="OBAN_WEB_HOST",
    help="Address to listen on [env OBAN_WEB_HOST]; anything but loopback exposes the "
    "dashboard to the network.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4000,
    show_default=True,
    envvar="OBAN_WEB_PORT",
    help="Port to listen on [env OBAN_WEB_PORT].",
)
@click.option(
    "--read-only",
    is_flag=True,
    envvar="OBAN_WEB_READ_ONLY",
    help="Show everything, change nothing: every action is refused [env OBAN_WEB_READ_ONLY].",
)
@click.option(
    "--basic-auth",
    metavar="USER:PASSWORD",
    default=None,
    envvar="OBAN_WEB_BASIC_AUTH",
    callback=_parse_basic_auth,
    help="Require this user name and password (HTTP basic auth); prefer the environment "
    "variable, which other users of the machine cannot read in the process list "
    "[env OBAN_WEB_BASIC_AUTH].",
)
@click.option(
    "--refresh",
    type=click.Choice(["1", "2", "5", "15", "0"]),
    default="5",
    show_default=True,
    help="Seconds between live refreshes until the user picks another interval (0: off).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--cron-modules",
    default=None,
    help="Modules with cron workers to import, for the cron page [env OBAN_CRON_MODULES].",
)
@click.option(
    "--cron-paths",
    default=None,
    help="Files/directories of cron workers to import [env OBAN_CRON_PATHS].",
)
def web(
    config_path: str | None,
    dsn: str | None,
    prefix: str | None,
    host: str,
    port: int,
    read_only: bool,
    basic_auth: tuple[str, str] | None,
    refresh: str,
    log_level: str,
    cron_modules: str | None,
    cron_paths: str | None,
) -> None:
    """Serve the web dashboard: jobs, queues and nodes of the configured database.

    It runs no queues (a client, like ``Oban(...)`` without queues) and reads the same
    configuration as ``oban start`` (flags, OBAN_* variables, oban.toml); it imports the cron
    workers as ``oban start`` does, so that the cron page lists their entries.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvicorn

        from . import create_app  # noqa: F401 - fails early without starlette or jinja2
    except ImportError as error:
        raise click.ClickException(f"{_INSTALL_HINT} ({error})") from error
    from .._engines._dsn import is_postgres, sqlite_path
    from ..cli import _database, _load, import_cron_workers

    config = _load(config_path=config_path, dsn=dsn, prefix=prefix)
    import_cron_workers(cron_modules, cron_paths)
    # A client: the dashboard only reads and signals; it never runs jobs or leads.
    config = dataclasses.replace(config, queues={}, leadership=False)
    if not is_postgres(config.dsn) and not Path(sqlite_path(config.dsn)).is_file():
        # A dashboard never creates a database: an empty one would only show nothing.
        raise click.ClickException(
            f"no database at {sqlite_path(config.dsn)}: point --dsn (or OBAN_DSN, or dsn in "
            "oban.toml) at the one your nodes use"
        )
    try:
        asyncio.run(_check_database(config))
    except Exception as error:
        raise click.ClickException(f"cannot read the oban tables: {error}") from error
    app = build_standalone(
        config, basic_auth=basic_auth, read_only=read_only, refresh_default=int(refresh)
    )
    from ._security import is_loopback

    if not is_loopback(host) and basic_auth is None:
        logger.warning(
            "serving the dashboard on %s without --basic-auth: anyone who can reach port %d "
            "can see every job's args%s; set OBAN_WEB_BASIC_AUTH=user:password or put it "
            "behind an authenticating proxy",
            host,
            port,
            "" if read_only else " and cancel, retry and delete jobs and stop queues",
        )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"oban web | {_database(config)} | http://{shown}:{port}/"
        + (" | read-only" if read_only else "")
        + (" | basic auth" if basic_auth else "")
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler
    # it found installed: this one makes that a normal exit (status 0), as `oban start` has.
    signal.signal(signal.SIGTERM, _exit_after_shutdown)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)


def _exit_after_shutdown(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def build_standalone(
    config: Any,
    *,
    basic_auth: tuple[str, str] | None,
    read_only: bool,
    refresh_default: int,
) -> Starlette:
    """The app ``oban web`` serves: the dashboard at ``/``, behind basic auth when asked,
    with a lifespan that closes the instance at exit."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from ..oban import Oban
    from . import create_app
    from ._security import BasicAuth, basic_user

    oban = Oban.from_config(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await oban.stop()

    dashboard = create_app(
        oban,
        read_only=read_only,
        refresh_default=refresh_default,
        resolver=basic_user if basic_auth else None,
    )
    inner: Any = dashboard
    if basic_auth is not None:
        username, password = basic_auth
        inner = BasicAuth(
            dashboard, username=username, password=password, exempt=frozenset({"/health"})
        )
    app = Starlette(routes=[Mount("/", app=inner)], lifespan=lifespan)
    app.state.oban = oban
    return app


async def _check_database(config: Any) -> None:
    """Fail at start, with the reason, rather than on every page (its own instance: the
    served one belongs to the server's event loop)."""
    from ..oban import Oban

    oban = Oban.from_config(config)
    try:
        await oban.nodes()
    finally:
        await oban.stop()
