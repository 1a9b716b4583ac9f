"""Oban(...) and Oban.from_config resolve settings as ``oban start`` does: keyword arguments
over ``OBAN_*`` over ``oban.toml`` over SQLite on ./oban.db. No database is touched: an
instance opens its engine only when it starts or first needs it."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Config, Oban
from oban._engines.postgres import PostgresEngine
from oban._engines.sqlite import SQLiteEngine
from oban.errors import OptionNotImplementedError
from oban.oban import _instances

PG_DSN = "postgresql://app:hunter2@db.internal:5432/jobs"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory (no oban.toml) and no instance left registered."""
    monkeypatch.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        _instances.clear()


def write_toml(directory: Path, body: str) -> Path:
    path = directory / "oban.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_oban_dsn_alone_switches_oban_to_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBAN_DSN", PG_DSN)

    oban = Oban(queues={"default": 10})

    assert isinstance(oban._engine, PostgresEngine)
    assert oban.sqlite_path is None
    assert oban.pool is not None and oban.pool.conninfo == PG_DSN


def test_without_any_setting_oban_uses_sqlite_in_the_working_directory() -> None:
    oban = Oban()

    assert isinstance(oban._engine, SQLiteEngine)
    assert oban.sqlite_path == "oban.db"


def test_keyword_arguments_beat_the_environment_which_beats_the_file(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(in_tmp, 'prefix = "from_file"\nnode = "file-node"\nname = "FileName"\n')
    monkeypatch.setenv("OBAN_PREFIX", "from_env")
    monkeypatch.setenv("OBAN_NODE", "env-node")

    oban = Oban(node="kwarg-node")

    assert oban.node == "kwarg-node"
    assert oban.prefix == "from_env"
    assert oban.name == "FileName"


def test_queues_from_the_environment_replace_the_files(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(in_tmp, "[queues]\ndefault = 5\nmailers = 2\n")
    monkeypatch.setenv("OBAN_QUEUES", "media:3")

    assert Oban().config.queues == {"media": {"limit": 3}}
    assert Oban(name="Other", queues={"alpha": 1}).config.queues == {"alpha": {"limit": 1}}


def test_an_explicit_pool_wins_over_every_dsn_setting(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(in_tmp, 'dsn = "sqlite:///file.db"\n')
    monkeypatch.setenv("OBAN_DSN", "sqlite:///env.db")
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(PG_DSN, open=False)

    oban = Oban(pool=pool)

    assert isinstance(oban._engine, PostgresEngine)
    assert oban.pool is pool
    assert oban.sqlite_path is None


def test_a_dsn_argument_wins_over_oban_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBAN_DSN", PG_DSN)

    oban = Oban(dsn="sqlite:///mine.db")

    assert oban.sqlite_path == "mine.db"
    assert oban.pool is None


def test_pool_and_dsn_together_are_rejected() -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(PG_DSN, open=False)

    with pytest.raises(ValueError, match="pass pool= or dsn=, not both"):
        Oban(pool=pool, dsn=PG_DSN)


def test_an_owned_pool_is_sized_by_the_pool_settings(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_toml(in_tmp, "pool_timeout = 7.5\npool_max_idle = 42\n")
    monkeypatch.setenv("OBAN_POOL_MAX_SIZE", "3")

    oban = Oban(dsn=PG_DSN, pool_min_size=2, pool_max_lifetime=99.0)

    assert oban.pool is not None
    assert (oban.pool.min_size, oban.pool.max_size) == (2, 3)
    assert oban.pool.timeout == 7.5
    assert oban.pool.max_idle == 42
    assert oban.pool.max_lifetime == 99.0


def test_shutdown_grace_period_none_is_a_value_and_unset_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OBAN_SHUTDOWN_GRACE_PERIOD", "4")

    assert Oban().config.shutdown_grace_period == 4.0
    assert Oban(name="Forever", shutdown_grace_period=None).config.shutdown_grace_period is None


def test_an_unknown_keyword_argument_names_the_near_match() -> None:
    options: dict[str, Any] = {"queus": {"default": 1}}

    with pytest.raises(TypeError, match=r"unknown option 'queus', did you mean 'queues'\?"):
        Oban(**options)


def test_a_queue_option_typo_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'limt', did you mean 'limit'\?"):
        Oban(queues={"default": {"limt": 5}})


def test_a_wrongly_typed_option_is_a_type_error_naming_it() -> None:
    options: dict[str, Any] = {"queues": {"default": {"paused": "yes"}}}

    with pytest.raises(TypeError, match=r"queues\.default\.paused must be true or false"):
        Oban(**options)


@pytest.mark.parametrize("metrics", [True, {"interval": 2}, {"counts_enabled": False}])
def test_metrics_gossip_is_accepted_on_postgres(metrics: Any) -> None:
    assert Oban(dsn=PG_DSN, metrics=metrics).config.metrics == metrics
    assert Oban.from_config(Config(dsn=PG_DSN, metrics=metrics)).config.metrics == metrics


@pytest.mark.parametrize("metrics", [True, {"interval": 2}])
def test_metrics_is_refused_on_sqlite(metrics: Any) -> None:
    """Oban Met / Oban Web read gossip by LISTEN on PostgreSQL: on SQLite nothing could."""
    with pytest.raises(ValueError, match=r"metrics=.*needs PostgreSQL"):
        Oban(metrics=metrics)


@pytest.mark.parametrize(
    "metrics",
    [{"counts_enabled": True}, {"cronitor_interval": 5}, {"estimate_limit": 10, "interval": 1}],
)
def test_metrics_keys_for_counts_and_crontab_are_refused(metrics: Any) -> None:
    """Only queue checks are gossiped: a key for counts or crontab would do nothing."""
    with pytest.raises(OptionNotImplementedError, match=r"metrics\.\w+ is not implemented yet"):
        Oban(dsn=PG_DSN, metrics=metrics)


@pytest.mark.parametrize("metrics", [None, False])
def test_metrics_off_is_accepted(metrics: Any) -> None:
    assert Oban(metrics=metrics).config.metrics == metrics


def test_every_config_option_is_a_keyword_argument() -> None:
    parameters = set(inspect.signature(Oban).parameters) - {"pool", "dispatcher", "unknown"}

    # processes is an `oban start` setting: Oban(processes=...) is refused.
    assert parameters == {name for name in Config.__dataclass_fields__} - {"processes"}


def test_from_config_takes_the_settings_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config.load(queues={"default": 2})
    monkeypatch.setenv("OBAN_DSN", PG_DSN)
    monkeypatch.setenv("OBAN_NAME", "FromEnv")

    oban = Oban.from_config(config)

    assert oban.name == "Oban"
    assert oban.sqlite_path == "oban.db"
    assert oban.config.queues == {"default": {"limit": 2}}
    assert oban.config is not config


def test_from_config_validates_a_config_changed_after_loading() -> None:
    config = Config()
    config.queues = {"default": {"limt": 1}}

    with pytest.raises(ValueError, match="did you mean 'limit'"):
        Oban.from_config(config)


def test_from_config_reads_a_config_path(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("conf") / "deploy.toml"
    path.write_text(f'dsn = "{PG_DSN}"\npool_max_size = 4\n[queues]\nmailers = 3\n')

    oban = Oban.from_config(config_path=path)

    assert isinstance(oban._engine, PostgresEngine)
    assert oban.pool is not None and oban.pool.max_size == 4
    assert oban.config.queues == {"mailers": {"limit": 3}}


def test_from_config_uses_a_given_pool() -> None:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(PG_DSN, open=False)

    oban = Oban.from_config(Config(dsn="sqlite:///ignored.db"), pool=pool)

    assert oban.pool is pool


def test_from_config_rejects_config_and_config_path_together() -> None:
    with pytest.raises(ValueError, match="not both"):
        Oban.from_config(Config(), config_path="oban.toml")
