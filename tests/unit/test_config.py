"""Tests for oban._config: layering, parsing, normalisation and validation."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path
from typing import Any, cast

import pytest

from oban._config import Config, parse_queues, producer_options, resolve


def write_toml(directory: Path, body: str, name: str = "oban.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def make_config(**kwargs: Any) -> Config:
    """Build a Config from dynamically chosen option names."""
    return Config(**kwargs)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from an empty directory so a stray ./oban.toml cannot leak in."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- defaults -------------------------------------------------------------------------------


def test_defaults() -> None:
    config = Config()

    assert config.dsn is None
    assert config.name == "Oban"
    assert config.node is None
    assert config.prefix == "public"
    assert config.leadership is None
    assert config.queues == {}
    assert config.notifier == {}
    assert config.shutdown_grace_period == 15.0
    for table in ("lifeline", "pruner", "refresher", "scheduler", "stager"):
        assert getattr(config, table) == {}
    assert config.metrics is None
    assert config.pool_min_size == 1
    assert config.pool_max_size == 10
    assert config.pool_timeout == 30.0
    assert config.pool_max_lifetime == 3600.0
    assert config.pool_max_idle == 600.0
    assert config.pool_check is False


def test_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        cast(Any, Config)("postgresql://localhost/db")


def test_default_dicts_are_not_shared() -> None:
    first, second = Config(), Config()
    first.pruner["interval"] = 5

    assert second.pruner == {}


def test_load_with_nothing_gives_defaults(in_tmp: Path) -> None:
    assert Config.load(env={}) == Config()


def test_dsn_is_hidden_from_repr() -> None:
    config = Config(dsn="postgresql://user:secret@localhost/db")

    assert "secret" not in repr(config)


# -- oban.toml --------------------------------------------------------------------------------


def test_reads_oban_toml_from_working_directory(in_tmp: Path) -> None:
    write_toml(
        in_tmp,
        """
        dsn = "postgresql://localhost/app"
        name = "Worker"
        node = "node-1"
        prefix = "private"
        leadership = false
        shutdown_grace_period = 5
        pool_min_size = 2
        pool_max_size = 4
        pool_timeout = 1.5
        pool_max_lifetime = 60.0
        pool_max_idle = 30.0
        pool_check = true
        metrics = true

        [queues]
        default = 10

        [queues.media]
        limit = 5
        paused = true
        debounce_interval = 0.01

        [notifier]
        type = "poll"
        poll_interval = 2

        [pruner]
        max_age = 600

        [scheduler]
        timezone = "Europe/Paris"
        """,
    )

    config = Config.load(env={})

    assert config.dsn == "postgresql://localhost/app"
    assert config.name == "Worker"
    assert config.node == "node-1"
    assert config.prefix == "private"
    assert config.leadership is False
    assert config.shutdown_grace_period == 5
    assert (config.pool_min_size, config.pool_max_size) == (2, 4)
    assert config.pool_timeout == 1.5
    assert config.pool_max_lifetime == 60.0
    assert config.pool_max_idle == 30.0
    assert config.pool_check is True
    assert config.metrics is True
    assert config.queues == {
        "default": {"limit": 10},
        "media": {"limit": 5, "paused": True, "debounce_interval": 0.01},
    }
    assert config.notifier == {"type": "poll", "poll_interval": 2}
    assert config.pruner == {"max_age": 600}
    assert config.scheduler == {"timezone": "Europe/Paris"}


def test_explicit_config_path_is_used_instead_of_working_directory(
    in_tmp: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    write_toml(in_tmp, 'name = "FromCwd"\n')
    other = write_toml(tmp_path_factory.mktemp("elsewhere"), 'name = "FromPath"\n', "custom.toml")

    assert Config.load(config_path=other, env={}).name == "FromPath"
    assert Config.load(config_path=str(other), env={}).name == "FromPath"


def test_explicit_missing_config_path_raises_naming_it(in_tmp: Path) -> None:
    missing = in_tmp / "nope" / "oban.toml"

    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))) as info:
        Config.load(config_path=missing, env={})

    assert info.value.filename == str(missing)


def test_missing_default_oban_toml_is_not_an_error(in_tmp: Path) -> None:
    assert Config.load(env={}).name == "Oban"


def test_invalid_toml_raises_value_error_naming_file(in_tmp: Path) -> None:
    path = write_toml(in_tmp, "name = \n")

    with pytest.raises(ValueError, match=re.escape(str(path))):
        Config.load(env={})


def test_unknown_top_level_toml_key_suggests_close_match(in_tmp: Path) -> None:
    write_toml(in_tmp, "[queus]\ndefault = 10\n")

    with pytest.raises(ValueError, match=r"unknown option 'queus', did you mean 'queues'\?"):
        Config.load(env={})


def test_unknown_key_in_toml_table_suggests_close_match(in_tmp: Path) -> None:
    write_toml(in_tmp, "[pruner]\nintervl = 10\n")

    with pytest.raises(ValueError, match=r"unknown option 'intervl', did you mean 'interval'\?"):
        Config.load(env={})


def test_unknown_key_without_close_match_lists_known_options(in_tmp: Path) -> None:
    write_toml(in_tmp, "zzzzzz = 1\n")

    with pytest.raises(ValueError, match="unknown option 'zzzzzz'") as info:
        Config.load(env={})

    assert "did you mean" not in str(info.value)
    assert "pool_max_size" in str(info.value)


def test_invalid_toml_value_is_validated(in_tmp: Path) -> None:
    path = write_toml(in_tmp, 'pool_timeout = "30"\n')

    # A value of the wrong type is a TypeError (as in oban-py), naming the file and option.
    with pytest.raises(TypeError, match="pool_timeout must be a positive number") as info:
        Config.load(env={})

    assert str(info.value).startswith(f"{path}: ")


# -- precedence -------------------------------------------------------------------------------


def test_scalar_precedence_toml_env_kwargs(in_tmp: Path) -> None:
    write_toml(in_tmp, 'name = "Toml"\nprefix = "toml_prefix"\npool_max_size = 3\n')
    env = {"OBAN_NAME": "Env", "OBAN_PREFIX": "env_prefix"}

    config = Config.load(env=env, name="Kwarg")

    assert config.name == "Kwarg"  # kwarg beats env and toml
    assert config.prefix == "env_prefix"  # env beats toml
    assert config.pool_max_size == 3  # toml beats defaults


def test_none_overrides_are_ignored(in_tmp: Path) -> None:
    write_toml(in_tmp, 'node = "toml-node"\nshutdown_grace_period = 3\n')

    config = Config.load(env={"OBAN_NAME": "Env"}, name=None, node=None, shutdown_grace_period=None)

    assert config.name == "Env"
    assert config.node == "toml-node"
    assert config.shutdown_grace_period == 3


def test_false_override_is_not_ignored(in_tmp: Path) -> None:
    write_toml(in_tmp, "leadership = true\npool_check = true\n")

    config = Config.load(env={"OBAN_LEADERSHIP": "yes"}, leadership=False, pool_check=False)

    assert config.leadership is False
    assert config.pool_check is False


def test_env_defaults_to_os_environ(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBAN_NAME", "FromOsEnviron")

    assert Config.load().name == "FromOsEnviron"
    assert Config.load(env={}).name == "Oban"


def test_queues_are_replaced_not_merged_across_layers(in_tmp: Path) -> None:
    write_toml(
        in_tmp,
        """
        [queues]
        default = 10
        alpha = 1

        [queues.media]
        limit = 5
        paused = true
        """,
    )
    env = {"OBAN_QUEUES": "media:7, mailers:3"}

    from_env = Config.load(env=env)
    from_kwargs = Config.load(env=env, queues={"alpha": {"limit": 2, "paused": True}})

    # OBAN_QUEUES replaces the file's queues: "default" and "alpha" do not run.
    assert from_env.queues == {"media": {"limit": 7}, "mailers": {"limit": 3}}
    # Keyword queues replace both.
    assert from_kwargs.queues == {"alpha": {"limit": 2, "paused": True}}
    assert Config.load(env={}).queues == {
        "default": {"limit": 10},
        "alpha": {"limit": 1},
        "media": {"limit": 5, "paused": True},
    }


def test_table_options_merge_per_key_across_layers(in_tmp: Path) -> None:
    write_toml(
        in_tmp,
        """
        [notifier]
        type = "postgres"
        beat_interval = 5
        notify_timeout = 2

        [pruner]
        interval = 60
        max_age = 600
        """,
    )

    config = Config.load(
        env={"OBAN_NOTIFIER": "poll"},
        notifier={"notify_timeout": 9},
        pruner={"max_age": 30},
    )

    assert config.notifier == {"type": "poll", "beat_interval": 5, "notify_timeout": 9}
    assert config.pruner == {"interval": 60, "max_age": 30}


def test_metrics_tables_merge_but_bool_replaces(in_tmp: Path) -> None:
    write_toml(in_tmp, "[metrics]\ninterval = 1\ncounts_enabled = true\n")

    merged = Config.load(env={}, metrics={"interval": 5})
    replaced = Config.load(env={}, metrics=False)

    assert merged.metrics == {"interval": 5, "counts_enabled": True}
    assert replaced.metrics is False


def test_override_dicts_are_not_mutated(in_tmp: Path) -> None:
    queues: dict[str, Any] = {"default": 10}

    config = Config.load(env={}, queues=queues)
    config.queues["default"]["limit"] = 99

    assert queues == {"default": 10}


def test_unknown_override_suggests_close_match(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown option 'pool_max_sise', did you mean"):
        Config.load(env={}, pool_max_sise=3)


def test_unknown_override_is_rejected_even_when_none(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="unknown option 'queus'"):
        Config.load(env={}, queus=None)


# -- environment variables ------------------------------------------------------------------


def test_all_environment_variables(in_tmp: Path) -> None:
    env = {
        "OBAN_DSN": "postgresql://env/db",
        "OBAN_NAME": "EnvName",
        "OBAN_NODE": "env-node",
        "OBAN_PREFIX": "env_schema",
        "OBAN_LEADERSHIP": "false",
        "OBAN_QUEUES": "default:10,mailers:5",
        "OBAN_NOTIFIER": "poll",
        "OBAN_SHUTDOWN_GRACE_PERIOD": "2.5",
        "OBAN_POOL_MIN_SIZE": "3",
        "OBAN_POOL_MAX_SIZE": "7",
        "OBAN_POOL_TIMEOUT": "4.5",
        "OBAN_POOL_MAX_LIFETIME": "120",
        "OBAN_POOL_MAX_IDLE": "60",
        "OBAN_POOL_CHECK": "yes",
    }

    config = Config.load(env=env)

    assert config.dsn == "postgresql://env/db"
    assert config.name == "EnvName"
    assert config.node == "env-node"
    assert config.prefix == "env_schema"
    assert config.leadership is False
    assert config.queues == {"default": {"limit": 10}, "mailers": {"limit": 5}}
    assert config.notifier == {"type": "poll"}
    assert config.shutdown_grace_period == 2.5
    assert (config.pool_min_size, config.pool_max_size) == (3, 7)
    assert config.pool_timeout == 4.5
    assert config.pool_max_lifetime == 120.0
    assert config.pool_max_idle == 60.0
    assert config.pool_check is True


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("Yes", True),
        (" yes ", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("NO", False),
    ],
)
def test_boolean_env_parsing(in_tmp: Path, raw: str, expected: bool) -> None:
    config = Config.load(env={"OBAN_LEADERSHIP": raw, "OBAN_POOL_CHECK": raw})

    assert config.leadership is expected
    assert config.pool_check is expected


@pytest.mark.parametrize("var", ["OBAN_LEADERSHIP", "OBAN_POOL_CHECK"])
def test_malformed_boolean_env_names_variable_and_value(in_tmp: Path, var: str) -> None:
    with pytest.raises(ValueError, match=rf"{var}: 'maybe' is not valid: expected one of true"):
        Config.load(env={var: "maybe"})


@pytest.mark.parametrize("raw", ["none", "None", "INFINITY", "infinity"])
def test_shutdown_grace_period_none_from_env_beats_toml(in_tmp: Path, raw: str) -> None:
    write_toml(in_tmp, "shutdown_grace_period = 30\n")

    config = Config.load(env={"OBAN_SHUTDOWN_GRACE_PERIOD": raw})

    assert config.shutdown_grace_period is None


def test_shutdown_grace_period_zero_from_env_is_allowed(in_tmp: Path) -> None:
    config = Config.load(env={"OBAN_SHUTDOWN_GRACE_PERIOD": "0"})

    assert config.shutdown_grace_period == 0.0


@pytest.mark.parametrize(
    ("var", "raw", "detail"),
    [
        ("OBAN_SHUTDOWN_GRACE_PERIOD", "soon", "expected a number of seconds"),
        ("OBAN_SHUTDOWN_GRACE_PERIOD", "-1", "shutdown_grace_period must be a non-negative"),
        ("OBAN_POOL_MIN_SIZE", "two", "expected an integer"),
        ("OBAN_POOL_MAX_SIZE", "1.5", "expected an integer"),
        ("OBAN_POOL_MAX_SIZE", "0", "pool_max_size must be a positive integer"),
        ("OBAN_POOL_TIMEOUT", "fast", "expected a number"),
        ("OBAN_POOL_TIMEOUT", "-3", "pool_timeout must be a positive number"),
        ("OBAN_POOL_MAX_LIFETIME", "nan", "pool_max_lifetime must be a positive number"),
        ("OBAN_POOL_MAX_IDLE", "0", "pool_max_idle must be a positive number"),
        ("OBAN_PREFIX", "my-schema", "prefix must be a valid SQL identifier"),
        (
            "OBAN_NOTIFIER",
            "redis",
            "notifier.type must be one of 'local', 'poll', 'postgres', 'sqlite'",
        ),
        ("OBAN_QUEUES", "default:ten", 'expected name:limit pairs like "default:10,mailers:5"'),
        ("OBAN_QUEUES", "default:0", "queues.default.limit must be a positive integer"),
    ],
)
def test_malformed_env_values_name_variable_and_value(
    in_tmp: Path, var: str, raw: str, detail: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{var}: {raw!r} is not valid: {detail}")):
        Config.load(env={var: raw})


def test_oban_queues_error_message_matches_documented_format(in_tmp: Path) -> None:
    expected = (
        "OBAN_QUEUES: 'default:ten' is not valid: "
        'expected name:limit pairs like "default:10,mailers:5"'
    )

    with pytest.raises(ValueError) as info:
        Config.load(env={"OBAN_QUEUES": "default:ten"})

    assert str(info.value) == expected


@pytest.mark.parametrize("raw", ["", "   "])
def test_empty_oban_queues_adds_no_queues(in_tmp: Path, raw: str) -> None:
    write_toml(in_tmp, "[queues]\ndefault = 4\n")

    config = Config.load(env={"OBAN_QUEUES": raw})

    assert config.queues == {"default": {"limit": 4}}


def test_blank_env_values_are_treated_as_unset(in_tmp: Path) -> None:
    write_toml(in_tmp, 'name = "Toml"\npool_max_size = 4\n')

    config = Config.load(env={"OBAN_NAME": "", "OBAN_POOL_MAX_SIZE": "  "})

    assert config.name == "Toml"
    assert config.pool_max_size == 4


def test_unrelated_env_vars_are_ignored(in_tmp: Path) -> None:
    assert Config.load(env={"OBAN_UNKNOWN": "x", "PATH": "/bin"}) == Config()


# -- parse_queues ---------------------------------------------------------------------------


def test_parse_queues_tolerates_whitespace() -> None:
    assert parse_queues(" default : 10 ,mailers:5 ") == {
        "default": {"limit": 10},
        "mailers": {"limit": 5},
    }


@pytest.mark.parametrize("text", ["", "  ", ","])
def test_parse_queues_empty_gives_no_queues(text: str) -> None:
    assert parse_queues(text) == {}


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("default", "expected name:limit pairs"),
        ("default:ten", "expected name:limit pairs"),
        ("default:-1", "expected name:limit pairs"),
        ("default:1.5", "expected name:limit pairs"),
        (":10", "expected name:limit pairs"),
        ("a:b:10", "expected name:limit pairs"),
        ("default:0", "queues.default.limit must be a positive integer, got 0"),
        ("a:1,a:2", "queue 'a' is given more than once"),
        ("q" * 128 + ":1", "is too long"),
    ],
)
def test_parse_queues_errors_quote_the_text(text: str, detail: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{text!r} is not valid: ")) as info:
        parse_queues(text)

    assert detail in str(info.value)


def test_parse_queues_accepts_name_of_127_chars() -> None:
    name = "q" * 127

    assert parse_queues(f"{name}:1") == {name: {"limit": 1}}


# -- queue normalisation and validation ----------------------------------------------------


def test_queue_int_shorthand_is_normalised() -> None:
    shorthand: Any = {"default": 10}
    assert Config(queues=shorthand).queues == {"default": {"limit": 10}}


def test_queue_meta_table_is_kept() -> None:
    meta = {"region": "eu", "x": [1]}
    settings = {"limit": 3, "paused": False, "debounce_interval": 0, "meta": meta}

    config = Config(queues={"media": settings})

    assert config.queues == {"media": settings}
    assert config.queues["media"] is not settings
    assert config.queues["media"]["meta"] is not meta


def test_queue_names_are_stripped() -> None:
    assert Config(queues={" media ": {"limit": 1}}).queues == {"media": {"limit": 1}}


def test_queue_names_colliding_after_strip_are_rejected() -> None:
    with pytest.raises(ValueError, match="queue 'media' is defined more than once"):
        Config(queues={"media": {"limit": 1}, "media ": {"limit": 2}})


@pytest.mark.parametrize(
    ("queues", "error", "message"),
    [
        ({"": 1}, ValueError, "queue name must be a non-empty string"),
        ({"   ": 1}, ValueError, "queue name must be a non-empty string"),
        ({"q" * 128: 1}, ValueError, "is too long"),
        ({"default": 0}, ValueError, "queues.default.limit must be a positive integer, got 0"),
        ({"default": -5}, ValueError, "queues.default.limit must be a positive integer, got -5"),
        ({"default": True}, TypeError, "queues.default must be a positive integer limit"),
        ({"default": "10"}, TypeError, "queues.default must be a positive integer limit"),
        ({"default": {"limit": 2.5}}, TypeError, "queues.default.limit must be a positive integer"),
        (
            {"default": {"limit": False}},
            TypeError,
            "queues.default.limit must be a positive integer",
        ),
        (
            {"default": {"limit": 1, "paused": "yes"}},
            TypeError,
            "queues.default.paused must be true or",
        ),
        (
            {"default": {"limit": 1, "debounce_interval": -0.1}},
            ValueError,
            "queues.default.debounce_interval must be a non-negative number",
        ),
        (
            {"default": {"limit": 1, "debounce_interval": True}},
            TypeError,
            "queues.default.debounce_interval must be a non-negative number",
        ),
    ],
)
def test_invalid_queues(queues: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Config(queues=queues)


def test_queue_limit_zero_in_table_names_the_limit() -> None:
    with pytest.raises(ValueError, match=r"queues\.default\.limit must be a positive integer"):
        Config(queues={"default": {"limit": 0}})


def test_queues_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="queues must be a table"):
        Config(queues=cast(Any, "default:10"))


def test_queue_names_of_127_chars_are_accepted() -> None:
    name = "q" * 127

    assert Config(queues={name: {"limit": 1}}).queues == {name: {"limit": 1}}


# -- table options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "typo", "suggestion"),
    [
        ("stager", "intervall", "interval"),
        ("pruner", "maxage", "max_age"),
        ("lifeline", "rescue_aftr", "rescue_after"),
        ("refresher", "max_ag", "max_age"),
        ("scheduler", "timezon", "timezone"),
        ("notifier", "typ", "type"),
        ("metrics", "counts_enable", "counts_enabled"),
    ],
)
def test_unknown_table_keys_suggest_close_match(table: str, typo: str, suggestion: str) -> None:
    expected = f"{table}: unknown option {typo!r}, did you mean {suggestion!r}?"

    with pytest.raises(ValueError) as info:
        make_config(**{table: {typo: 1}})

    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("stager", "interval"),
        ("stager", "limit"),
        ("pruner", "interval"),
        ("pruner", "limit"),
        ("pruner", "max_age"),
        ("lifeline", "interval"),
        ("lifeline", "rescue_after"),
        ("refresher", "interval"),
        ("refresher", "max_age"),
        ("notifier", "beat_interval"),
        ("notifier", "connect_timeout"),
        ("notifier", "notify_timeout"),
        ("notifier", "poll_interval"),
        ("metrics", "interval"),
        ("metrics", "cronitor_interval"),
        ("metrics", "estimate_limit"),
    ],
)
@pytest.mark.parametrize("bad", [0, -1, True, "10", None, float("inf")])
def test_table_numbers_must_be_positive(table: str, key: str, bad: Any) -> None:
    error = TypeError if _wrong_number_type(bad, integer=key.endswith("limit")) else ValueError
    with pytest.raises(error, match=rf"^{table}\.{key} must be a positive"):
        make_config(**{table: {key: bad}})


def _wrong_number_type(value: Any, *, integer: bool) -> bool:
    """Whether ``value`` is not a number (of the option's kind) at all: a TypeError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    return integer and not isinstance(value, int)


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("stager", "interval", 0.5),
        ("stager", "limit", 5_000),
        ("pruner", "max_age", 60),
        ("lifeline", "rescue_after", 300.0),
        ("refresher", "max_age", 90),
        ("notifier", "poll_interval", 0.1),
        ("metrics", "estimate_limit", 50_000),
    ],
)
def test_valid_table_numbers_are_kept(table: str, key: str, value: float) -> None:
    assert getattr(make_config(**{table: {key: value}}), table) == {key: value}


@pytest.mark.parametrize("key", ["limit"])
@pytest.mark.parametrize("table", ["pruner", "stager"])
def test_table_limits_must_be_integers(table: str, key: str) -> None:
    with pytest.raises(TypeError, match=rf"{table}\.{key} must be a positive integer"):
        make_config(**{table: {key: 2.5}})


@pytest.mark.parametrize("notifier_type", ["postgres", "poll", "sqlite", "local"])
def test_notifier_types_accepted(notifier_type: str) -> None:
    assert Config(notifier={"type": notifier_type}).notifier == {"type": notifier_type}


@pytest.mark.parametrize(
    ("notifier_type", "error"),
    [("redis", ValueError), ("Postgres", ValueError), ("", ValueError), (1, TypeError)],
)
def test_notifier_type_rejected(notifier_type: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"notifier\.type must be one of"):
        Config(notifier={"type": notifier_type})


@pytest.mark.parametrize(("timezone", "error"), [("", ValueError), (5, TypeError)])
def test_scheduler_timezone_must_be_a_string(timezone: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"scheduler\.timezone must be a non-empty string"):
        Config(scheduler={"timezone": timezone})


def test_metrics_counts_enabled_must_be_bool() -> None:
    with pytest.raises(TypeError, match=r"metrics\.counts_enabled must be true or false"):
        Config(metrics={"counts_enabled": 1})


@pytest.mark.parametrize("metrics", [None, True, False, {"interval": 2, "counts_enabled": False}])
def test_metrics_accepted_forms(metrics: Any) -> None:
    assert Config(metrics=metrics).metrics == metrics


def test_metrics_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="metrics must be true, false, None or a table"):
        Config(metrics=cast(Any, "on"))


@pytest.mark.parametrize("table", ["notifier", "lifeline", "pruner", "refresher", "stager"])
def test_table_options_must_be_mappings(table: str) -> None:
    with pytest.raises(TypeError, match=rf"{table} must be a table"):
        make_config(**{table: 5})


# -- scalar validation ----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["public", "_private", "Oban_2", "a" * 63])
def test_valid_prefixes(prefix: str) -> None:
    assert Config(prefix=prefix).prefix == prefix


@pytest.mark.parametrize(
    "prefix", ["", "1abc", "my-schema", "my schema", "public;drop", "a" * 64, "x\n", "ü"]
)
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix must be a valid SQL identifier"):
        Config(prefix=prefix)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name must be a non-empty string"),
        ({"node": " "}, "node must be a non-empty string"),
        ({"shutdown_grace_period": -1}, "shutdown_grace_period must be a non-negative number"),
        ({"pool_min_size": 0}, "pool_min_size must be a positive integer"),
        ({"pool_timeout": 0}, "pool_timeout must be a positive number"),
        ({"pool_max_lifetime": -1.0}, "pool_max_lifetime must be a positive number"),
        ({"pool_min_size": 5, "pool_max_size": 4}, "pool_min_size (5) must not be greater"),
    ],
)
def test_invalid_scalars(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": None}, "name must be a non-empty string"),
        ({"dsn": 5}, "dsn must be a string or None"),
        ({"leadership": "yes"}, "leadership must be true, false or None"),
        ({"pool_check": 1}, "pool_check must be true or false"),
        ({"shutdown_grace_period": True}, "shutdown_grace_period must be a non-negative"),
        ({"pool_max_size": 2.0}, "pool_max_size must be a positive integer"),
        ({"pool_max_size": True}, "pool_max_size must be a positive integer"),
        ({"pool_max_idle": False}, "pool_max_idle must be a positive number"),
    ],
)
def test_wrongly_typed_scalars_are_type_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        Config(**kwargs)


def test_shutdown_grace_period_none_and_zero_are_valid() -> None:
    assert Config(shutdown_grace_period=None).shutdown_grace_period is None
    assert Config(shutdown_grace_period=0).shutdown_grace_period == 0


def test_equal_pool_sizes_are_valid() -> None:
    config = Config(pool_min_size=4, pool_max_size=4)

    assert (config.pool_min_size, config.pool_max_size) == (4, 4)


def test_cross_layer_pool_sizes_are_validated(in_tmp: Path) -> None:
    write_toml(in_tmp, "pool_min_size = 8\n")

    with pytest.raises(ValueError, match="pool_min_size"):
        Config.load(env={"OBAN_POOL_MAX_SIZE": "5"})


# -- validate() -----------------------------------------------------------------------------


def test_validate_normalises_after_mutation() -> None:
    config = Config()
    config.queues = cast(Any, {"late": 3})

    config.validate()

    assert config.queues == {"late": {"limit": 3}}


def test_failed_validate_leaves_config_untouched() -> None:
    config = Config()
    config.queues = cast(Any, {"late": 3})
    config.pool_timeout = -1

    with pytest.raises(ValueError, match="pool_timeout"):
        config.validate()

    assert cast(Any, config.queues) == {"late": 3}


# -- pool_kwargs ----------------------------------------------------------------------------


def test_pool_kwargs_without_check() -> None:
    config = Config(
        pool_min_size=2, pool_max_size=5, pool_timeout=3.0, pool_max_lifetime=9.0, pool_max_idle=4.0
    )

    assert config.pool_kwargs() == {
        "min_size": 2,
        "max_size": 5,
        "timeout": 3.0,
        "max_lifetime": 9.0,
        "max_idle": 4.0,
    }


def test_pool_kwargs_with_check() -> None:
    kwargs = Config(pool_check=True).pool_kwargs()

    assert kwargs["check"] is True
    assert set(kwargs) == {"min_size", "max_size", "timeout", "max_lifetime", "max_idle", "check"}


def test_a_queue_table_without_limit_defaults_to_ten() -> None:
    config = Config(queues={"default": {"paused": True}})
    assert config.queues == {"default": {"limit": 10, "paused": True}}


# -- per-queue options ----------------------------------------------------------------------


def test_queue_option_typo_in_oban_toml_is_rejected_with_the_accepted_names(in_tmp: Path) -> None:
    path = write_toml(in_tmp, "[queues]\ndefault = { limt = 5 }\n")

    with pytest.raises(ValueError) as info:
        Config.load(env={})

    message = str(info.value)
    assert message.startswith(f"{path}: queues.default: unknown option 'limt'")
    assert "did you mean 'limit'?" in message
    assert "debounce_interval, limit, meta, paused" in message


def test_queue_option_typo_in_keyword_arguments_is_rejected(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"queues\.default: unknown option 'pasued', did you mean"):
        Config.load(env={}, queues={"default": {"limit": 5, "pasued": True}})


def test_free_form_queue_data_must_go_under_meta() -> None:
    with pytest.raises(ValueError, match="free-form queue data goes under 'meta'"):
        Config(queues={"media": {"limit": 1, "region": "eu"}})


@pytest.mark.parametrize("option", ["global_limit", "rate_limit", "partition"])
def test_oban_pro_queue_options_are_not_implemented(option: str) -> None:
    with pytest.raises(ValueError, match=rf"queues\.media\.{option} is not implemented yet"):
        Config(queues={"media": {"limit": 1, option: 5}})


@pytest.mark.parametrize(
    ("meta", "error", "message"),
    [
        ("eu", TypeError, "queues.media.meta must be a table (dict) with string keys"),
        ({1: "x"}, TypeError, "queues.media.meta must be a table (dict) with string keys"),
        ({"when": object()}, TypeError, "queues.media.meta must be JSON-serialisable"),
        ({"paused": True}, ValueError, "queues.media.meta must not use the reserved keys paused"),
        ({"local_limit": 2}, ValueError, "must not use the reserved keys local_limit"),
    ],
)
def test_invalid_queue_meta(meta: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Config(queues={"media": {"limit": 1, "meta": meta}})


def test_producer_options_spread_the_meta() -> None:
    config = Config(queues={"media": {"limit": 2, "meta": {"region": "eu"}}})

    assert producer_options(config.queues["media"]) == {"limit": 2, "region": "eu"}
    assert producer_options({"limit": 1, "paused": True}) == {"limit": 1, "paused": True}


def test_reserved_meta_keys_cover_the_producer_arguments() -> None:
    from oban._config import _RESERVED_META
    from oban._producer import Producer

    parameters = inspect.signature(Producer).parameters
    named = {name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}

    assert named <= _RESERVED_META


def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"scheduler\.timezone: unknown timezone 'Mars/Olympus'"):
        Config(scheduler={"timezone": "Mars/Olympus"})


# -- dsn ------------------------------------------------------------------------------------


def test_unsupported_dsn_is_rejected_with_its_password_masked() -> None:
    with pytest.raises(ValueError, match="unsupported dsn") as info:
        Config(dsn="mysql://app:hunter2@db/jobs")

    assert "hunter2" not in str(info.value)
    assert "mysql://app:***@db/jobs" in str(info.value)


def test_unsupported_dsn_from_the_environment_names_the_variable(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="OBAN_DSN: the value is not valid") as info:
        Config.load(env={"OBAN_DSN": "redis://u:hunter2@x"})
    assert "hunter2" not in str(info.value)
    assert "redis://u:***@x" in str(info.value)


# -- resolve --------------------------------------------------------------------------------


def test_resolve_takes_an_explicit_none_as_a_value(in_tmp: Path) -> None:
    write_toml(in_tmp, "shutdown_grace_period = 3\n")

    explicit = Config(**resolve({"shutdown_grace_period": None}, env={}))
    unset = Config(**resolve({}, env={"OBAN_SHUTDOWN_GRACE_PERIOD": "5"}))

    assert explicit.shutdown_grace_period is None
    assert unset.shutdown_grace_period == 5.0


def test_resolve_rejects_unknown_options(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match="unknown option 'queus', did you mean 'queues'"):
        resolve({"queus": {}}, env={})


def test_config_is_public() -> None:
    import oban

    assert oban.Config is Config
    assert "Config" in oban.__all__


# -- processes (an `oban start` setting) -----------------------------------------------------


def test_processes_defaults_to_one_and_layers_as_every_option(in_tmp: Path) -> None:
    assert Config().processes == 1
    write_toml(in_tmp, "processes = 2\n")

    assert Config.load(env={}).processes == 2
    assert Config.load(env={"OBAN_PROCESSES": "3"}).processes == 3
    assert Config.load(env={"OBAN_PROCESSES": "3"}, processes=4).processes == 4


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-2, ValueError), ("2", TypeError), (2.0, TypeError)]
)
def test_processes_must_be_a_positive_integer(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="processes must be a positive integer"):
        Config(processes=value)


@pytest.mark.parametrize(("raw", "detail"), [("x", "expected an integer"), ("0", "positive")])
def test_bad_oban_processes_names_the_variable(in_tmp: Path, raw: str, detail: str) -> None:
    with pytest.raises(ValueError, match=f"OBAN_PROCESSES: {raw!r} is not valid: .*{detail}"):
        Config.load(env={"OBAN_PROCESSES": raw})


def test_processes_of_the_wrong_type_in_oban_toml_names_the_file(in_tmp: Path) -> None:
    path = write_toml(in_tmp, 'processes = "2"\n')

    with pytest.raises(TypeError, match=re.escape(f"{path}: processes must be a positive")):
        Config.load(env={})


def test_oban_refuses_processes_as_an_oban_start_setting() -> None:
    from oban import Oban
    from oban.errors import UnknownOptionError

    with pytest.raises(UnknownOptionError, match=r"Oban\(\): processes is an `oban start` setting"):
        Oban(processes=2)  # type: ignore[arg-type]


def test_an_instance_reads_oban_processes_and_runs_one_node(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oban import Oban

    monkeypatch.setenv("OBAN_PROCESSES", "4")

    assert Oban().config.processes == 4  # validated like every setting; an instance is one node


# -- worker_modules (which modules a job's worker may be imported from) -----------------------


def test_worker_modules_defaults_to_none_and_layers_as_every_option(in_tmp: Path) -> None:
    assert Config().worker_modules is None
    write_toml(in_tmp, 'worker_modules = ["from_file"]\n')

    assert Config.load(env={}).worker_modules == ["from_file"]
    env = {"OBAN_WORKER_MODULES": "from_env"}
    assert Config.load(env=env).worker_modules == ["from_env"]
    assert Config.load(env=env, worker_modules=["given"]).worker_modules == ["given"]


def test_oban_worker_modules_is_a_comma_separated_list(in_tmp: Path) -> None:
    env = {"OBAN_WORKER_MODULES": " myapp , billing.jobs,, "}

    assert Config.load(env=env).worker_modules == ["myapp", "billing.jobs"]


def test_worker_modules_accepts_a_tuple_and_an_empty_list() -> None:
    assert Config(worker_modules=cast(Any, ("myapp", " other "))).worker_modules == [
        "myapp",
        "other",
    ]
    assert Config(worker_modules=[]).worker_modules == []  # registered workers only


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("myapp", TypeError, "worker_modules must be a list of module names"),
        ([1], TypeError, "worker_modules must be a list of module names"),
        ([""], ValueError, "'' is not a module name"),
        (["my-app"], ValueError, "'my-app' is not a module name"),
        (["myapp."], ValueError, "'myapp.' is not a module name"),
        (["os"], ValueError, "'os' cannot hold workers: 'os' is in the standard library"),
        (["unittest.mock"], ValueError, "in the standard library"),
        (["oban.jobs"], ValueError, "modules of oban itself"),
        (["myapp.__main__"], ValueError, "__main__ module"),
    ],
)
def test_invalid_worker_modules(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Config(worker_modules=value)


def test_bad_oban_worker_modules_names_the_variable(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"OBAN_WORKER_MODULES: 'myapp,venv' is not valid: .*venv"):
        Config.load(env={"OBAN_WORKER_MODULES": "myapp,venv"})


def test_worker_modules_of_the_wrong_type_in_oban_toml_names_the_file(in_tmp: Path) -> None:
    path = write_toml(in_tmp, 'worker_modules = "myapp"\n')

    with pytest.raises(TypeError, match=re.escape(f"{path}: worker_modules must be a list")):
        Config.load(env={})


def test_oban_takes_worker_modules(in_tmp: Path) -> None:
    from oban import Oban

    assert Oban(worker_modules=["myapp"]).config.worker_modules == ["myapp"]
