"""Configuration loading for Oban.

A :class:`Config` is assembled from up to four layers, lowest precedence first:

1. the dataclass defaults,
2. an ``oban.toml`` file (an explicit ``config_path`` or ``./oban.toml`` when present),
3. ``OBAN_*`` environment variables,
4. keyword overrides passed to :meth:`Config.load` (``None`` values are ignored).

Scalar options from a higher layer replace lower ones.  Dict-valued options (``queues``,
``notifier``, ``lifeline``, ``pruner``, ``refresher``, ``scheduler``, ``stager`` and ``metrics``
when it is a table) are merged key by key, so a queue defined in a higher layer replaces that
queue's whole settings while other queues are kept.

Every :class:`Config`, however it was built, is normalised and validated on construction.
"""

from __future__ import annotations

import difflib
import errno
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self

__all__ = [
    "CONFIG_FILE_NAME",
    "NOTIFIER_TYPES",
    "QUEUE_NAME_MAX_LENGTH",
    "Config",
    "parse_queues",
]

#: File looked up in the current working directory when no ``config_path`` is given.
CONFIG_FILE_NAME = "oban.toml"

#: Accepted values for ``notifier["type"]``.
NOTIFIER_TYPES: frozenset[str] = frozenset({"postgres", "poll", "sqlite", "local"})

#: Longest accepted queue name (names must be shorter than 128 characters).
QUEUE_NAME_MAX_LENGTH = 127

_PREFIX_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_QUEUE_LIMIT_PATTERN = re.compile(r"[0-9]+")
#: The limit of a queue configured without one (as oban-py).
DEFAULT_QUEUE_LIMIT = 10
_QUEUES_SYNTAX = 'expected name:limit pairs like "default:10,mailers:5"'
_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})
_UNBOUNDED_WORDS = frozenset({"none", "infinity", "inf"})

_Check = Callable[[str, Any], None]
"""A validator: receives the option label (for messages) and the value, raises ValueError."""


# ---------------------------------------------------------------------------------------------
# Value checks
# ---------------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_positive_number(label: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{label} must be a positive number, got {value!r}")


def _check_non_negative_number(label: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or not value >= 0:
        raise ValueError(f"{label} must be a non-negative number, got {value!r}")


def _check_positive_int(label: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{label} must be a positive integer, got {value!r}")


def _check_bool(label: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{label} must be true or false, got {value!r}")


def _check_optional_bool(label: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{label} must be true, false or None, got {value!r}")


def _check_str(label: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{label} must be a string, got {value!r}")


def _check_optional_str(label: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{label} must be a string or None, got {value!r}")


def _check_non_empty_str(label: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{label} must be a non-empty string, got {value!r}")


def _check_optional_non_empty_str(label: str, value: Any) -> None:
    if value is not None:
        _check_non_empty_str(label, value)


def _check_grace_period(label: str, value: Any) -> None:
    if value is not None:
        _check_non_negative_number(label, value)


def _check_prefix(label: str, value: Any) -> None:
    if not isinstance(value, str) or _PREFIX_PATTERN.fullmatch(value) is None:
        raise ValueError(
            f"{label} must be a valid SQL identifier (a letter or underscore followed by up to "
            f"62 letters, digits or underscores), got {value!r}"
        )


def _check_notifier_type(label: str, value: Any) -> None:
    if not isinstance(value, str) or value not in NOTIFIER_TYPES:
        choices = ", ".join(repr(choice) for choice in sorted(NOTIFIER_TYPES))
        raise ValueError(f"{label} must be one of {choices}, got {value!r}")


_SCALAR_CHECKS: dict[str, _Check] = {
    "dsn": _check_optional_str,
    "name": _check_non_empty_str,
    "node": _check_optional_non_empty_str,
    "prefix": _check_prefix,
    "leadership": _check_optional_bool,
    "shutdown_grace_period": _check_grace_period,
    "pool_min_size": _check_positive_int,
    "pool_max_size": _check_positive_int,
    "pool_timeout": _check_positive_number,
    "pool_max_lifetime": _check_positive_number,
    "pool_max_idle": _check_positive_number,
    "pool_check": _check_bool,
}

#: Known keys of each table-valued option and the check applied to each key's value.
_TABLE_OPTIONS: dict[str, dict[str, _Check]] = {
    "notifier": {
        "type": _check_notifier_type,
        "beat_interval": _check_positive_number,
        "connect_timeout": _check_positive_number,
        "notify_timeout": _check_positive_number,
        "poll_interval": _check_positive_number,
    },
    "leader": {
        "interval": _check_positive_number,
    },
    "lifeline": {
        "interval": _check_positive_number,
        "limit": _check_positive_int,
        "rescue_after": _check_positive_number,
    },
    "pruner": {
        "interval": _check_positive_number,
        "limit": _check_positive_int,
        "max_age": _check_positive_number,
    },
    "refresher": {
        "interval": _check_positive_number,
        "max_age": _check_positive_number,
    },
    "scheduler": {
        "timezone": _check_non_empty_str,
    },
    "stager": {
        "interval": _check_positive_number,
        "limit": _check_positive_int,
    },
    "metrics": {
        "interval": _check_positive_number,
        "cronitor_interval": _check_positive_number,
        "estimate_limit": _check_positive_int,
        "counts_enabled": _check_bool,
    },
}

#: Options whose values are merged key by key across configuration layers.
_MERGED_OPTIONS: frozenset[str] = frozenset({"queues", *_TABLE_OPTIONS})


def _unknown_option(key: object, known: Iterable[str]) -> ValueError:
    """Build the error for an unrecognised option, suggesting the closest known name."""
    candidates = sorted(known)
    matches = difflib.get_close_matches(str(key), candidates, n=1)
    if matches:
        return ValueError(f"unknown option {key!r}, did you mean {matches[0]!r}?")
    return ValueError(f"unknown option {key!r} (known options: {', '.join(candidates)})")


def _check_table(option: str, value: Any) -> dict[str, Any]:
    """Validate a plugin/notifier/metrics table and return a shallow copy of it."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{option} must be a table (dict), got {value!r}")
    checks = _TABLE_OPTIONS[option]
    for key, item in value.items():
        check = checks.get(key)
        if check is None:
            raise ValueError(f"{option}: {_unknown_option(key, checks)}")
        check(f"{option}.{key}", item)
    return dict(value)


# ---------------------------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------------------------


def _normalise_queue_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"queue name must be a non-empty string, got {name!r}")
    stripped = name.strip()
    if len(stripped) > QUEUE_NAME_MAX_LENGTH:
        raise ValueError(
            f"queue name {stripped[:20]!r}... is too long "
            f"({len(stripped)} characters, the maximum is {QUEUE_NAME_MAX_LENGTH})"
        )
    return stripped


def _normalise_queue(name: str, value: Any) -> dict[str, Any]:
    label = f"queues.{name}"
    if isinstance(value, Mapping):
        settings = {"limit": DEFAULT_QUEUE_LIMIT, **value}
    elif isinstance(value, int) and not isinstance(value, bool):
        settings = {"limit": value}
    else:
        raise ValueError(
            f"{label} must be a positive integer limit or a table with a 'limit' key, got {value!r}"
        )
    _check_positive_int(f"{label}.limit", settings["limit"])
    if "paused" in settings:
        _check_bool(f"{label}.paused", settings["paused"])
    if "debounce_interval" in settings:
        _check_non_negative_number(f"{label}.debounce_interval", settings["debounce_interval"])
    return settings


def _normalise_queues(queues: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(queues, Mapping):
        raise ValueError(f"queues must be a table (dict) of queue name to limit, got {queues!r}")
    result: dict[str, dict[str, Any]] = {}
    for raw_name, value in queues.items():
        name = _normalise_queue_name(raw_name)
        if name in result:
            raise ValueError(f"queue {name!r} is defined more than once")
        result[name] = _normalise_queue(name, value)
    return result


def _parse_queue_pairs(text: str) -> dict[str, dict[str, Any]]:
    """Parse ``"a:10,b:5"``; errors carry only the detail, callers add the context."""
    result: dict[str, dict[str, Any]] = {}
    for segment in text.split(","):
        if not segment.strip():
            continue
        parts = segment.split(":")
        if len(parts) != 2:
            raise ValueError(_QUEUES_SYNTAX)
        raw_name, raw_limit = (part.strip() for part in parts)
        if not raw_name or _QUEUE_LIMIT_PATTERN.fullmatch(raw_limit) is None:
            raise ValueError(_QUEUES_SYNTAX)
        name = _normalise_queue_name(raw_name)
        if name in result:
            raise ValueError(f"queue {name!r} is given more than once")
        limit = int(raw_limit)
        _check_positive_int(f"queues.{name}.limit", limit)
        result[name] = {"limit": limit}
    return result


def parse_queues(text: str) -> dict[str, dict[str, Any]]:
    """Parse a compact queue specification such as ``"default:10, mailers:5"``.

    Whitespace around names and limits is ignored and an empty (or blank) string yields no
    queues.  Returns normalised settings, e.g. ``{"default": {"limit": 10}}``.

    :raises ValueError: if the text is malformed, a name is invalid or repeated, or a limit is
        not a positive integer.  The message quotes the offending text.
    """
    try:
        return _parse_queue_pairs(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not valid: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Environment variables
# ---------------------------------------------------------------------------------------------


def _parse_bool(raw: str) -> bool:
    word = raw.lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError("expected one of true, false, yes, no, 1, 0")


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected an integer") from None


def _parse_float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("expected a number") from None


def _parse_grace_period(raw: str) -> float | None:
    if raw.lower() in _UNBOUNDED_WORDS:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds, 'none' or 'infinity'") from None


def _parse_notifier(raw: str) -> dict[str, Any]:
    _check_notifier_type("notifier.type", raw)
    return {"type": raw}


def _parse_str(raw: str) -> str:
    return raw


#: Environment variable -> (option name, parser).  Parsers raise ValueError with a detail.
_ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "OBAN_DSN": ("dsn", _parse_str),
    "OBAN_NAME": ("name", _parse_str),
    "OBAN_NODE": ("node", _parse_str),
    "OBAN_PREFIX": ("prefix", _parse_str),
    "OBAN_LEADERSHIP": ("leadership", _parse_bool),
    "OBAN_QUEUES": ("queues", _parse_queue_pairs),
    "OBAN_NOTIFIER": ("notifier", _parse_notifier),
    "OBAN_SHUTDOWN_GRACE_PERIOD": ("shutdown_grace_period", _parse_grace_period),
    "OBAN_POOL_MIN_SIZE": ("pool_min_size", _parse_int),
    "OBAN_POOL_MAX_SIZE": ("pool_max_size", _parse_int),
    "OBAN_POOL_TIMEOUT": ("pool_timeout", _parse_float),
    "OBAN_POOL_MAX_LIFETIME": ("pool_max_lifetime", _parse_float),
    "OBAN_POOL_MAX_IDLE": ("pool_max_idle", _parse_float),
    "OBAN_POOL_CHECK": ("pool_check", _parse_bool),
}


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    """Read the ``OBAN_*`` variables; unset or blank variables contribute nothing."""
    layer: dict[str, Any] = {}
    for var, (option, parse) in _ENV_VARS.items():
        raw = env.get(var)
        if raw is None or not raw.strip():
            continue
        try:
            value = parse(raw.strip())
            check = _SCALAR_CHECKS.get(option)
            if check is not None:
                check(option, value)
        except ValueError as exc:
            raise ValueError(f"{var}: {raw!r} is not valid: {exc}") from None
        layer[option] = value
    return layer


# ---------------------------------------------------------------------------------------------
# Files and merging
# ---------------------------------------------------------------------------------------------


def _file_layer(config_path: str | os.PathLike[str] | None) -> dict[str, Any]:
    if config_path is None:
        path = Path.cwd() / CONFIG_FILE_NAME
        if not path.is_file():
            return {}
    else:
        path = Path(config_path)
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "Oban config file not found", str(path))
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from exc
    for key in data:
        if key not in _OPTION_NAMES:
            raise ValueError(f"{path}: {_unknown_option(key, _OPTION_NAMES)}")
    return data


def _merge_layers(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            previous = merged.get(key)
            if (
                key in _MERGED_OPTIONS
                and isinstance(previous, Mapping)
                and isinstance(value, Mapping)
            ):
                merged[key] = {**previous, **value}
            else:
                merged[key] = value
    return merged


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Config:
    """Validated settings for an Oban instance.

    Build one directly (every field is keyword-only) or with :meth:`load`, which layers
    ``oban.toml``, ``OBAN_*`` environment variables and keyword overrides on top of the
    defaults.  Construction normalises the queues (``{"default": 10}`` becomes
    ``{"default": {"limit": 10}}``) and raises :class:`ValueError` for invalid settings.
    """

    dsn: str | None = field(default=None, repr=False)
    """PostgreSQL connection string (hidden from ``repr`` as it may hold a password)."""
    name: str = "Oban"
    """Instance name, used to tell several instances apart."""
    node: str | None = None
    """Node identifier; ``None`` lets the runtime pick one (e.g. the host name)."""
    prefix: str = "public"
    """Database schema holding the ``oban_*`` tables."""
    leadership: bool | None = None
    """Whether to take part in leader election; ``None`` means the runtime default."""
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Queue name to settings; each has ``limit`` and optionally ``paused``,
    ``debounce_interval`` and extra metadata keys."""
    notifier: dict[str, Any] = field(default_factory=dict)
    """Notifier settings: ``type`` and optional timing options."""
    shutdown_grace_period: float | None = 15.0
    """Seconds to wait for running jobs on shutdown; ``None`` waits indefinitely."""
    leader: dict[str, Any] = field(default_factory=dict)
    """Leader election options: ``interval`` (the lease, in seconds; default 30)."""
    lifeline: dict[str, Any] = field(default_factory=dict)
    """Lifeline (orphan rescue) plugin options: ``interval``, ``limit``, ``rescue_after``."""
    pruner: dict[str, Any] = field(default_factory=dict)
    """Pruner plugin options: ``interval``, ``limit``, ``max_age``."""
    refresher: dict[str, Any] = field(default_factory=dict)
    """Producer refresher options: ``interval``, ``max_age``."""
    scheduler: dict[str, Any] = field(default_factory=dict)
    """Cron scheduler options: ``timezone``."""
    stager: dict[str, Any] = field(default_factory=dict)
    """Stager plugin options: ``interval``, ``limit``."""
    metrics: bool | dict[str, Any] | None = None
    """Metrics reporting: a bool switch or a table of options."""
    pool_min_size: int = 1
    """Minimum number of pooled connections."""
    pool_max_size: int = 10
    """Maximum number of pooled connections."""
    pool_timeout: float = 30.0
    """Seconds to wait for a connection from the pool."""
    pool_max_lifetime: float = 3600.0
    """Seconds after which a pooled connection is replaced."""
    pool_max_idle: float = 600.0
    """Seconds an idle pooled connection is kept above ``pool_min_size``."""
    pool_check: bool = False
    """Whether to check connections when they are taken from the pool."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Normalise the settings in place and check them.

        Called automatically on construction; call it again after mutating a config.  Nothing
        is modified when a check fails.

        :raises ValueError: naming the offending option (e.g. ``pruner.max_age``).
        """
        queues = _normalise_queues(self.queues)
        for option, check in _SCALAR_CHECKS.items():
            check(option, getattr(self, option))
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"pool_min_size ({self.pool_min_size}) must not be greater than "
                f"pool_max_size ({self.pool_max_size})"
            )
        tables = {
            option: _check_table(option, getattr(self, option))
            for option in _TABLE_OPTIONS
            if option != "metrics"
        }
        metrics = self.metrics
        if isinstance(metrics, Mapping):
            metrics = _check_table("metrics", metrics)
        elif metrics is not None and not isinstance(metrics, bool):
            raise ValueError(f"metrics must be true, false, None or a table, got {metrics!r}")

        self.queues = queues
        for option, table in tables.items():
            setattr(self, option, table)
        self.metrics = metrics

    @classmethod
    def load(
        cls,
        *,
        config_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Self:
        """Build a config from defaults, ``oban.toml``, environment variables and overrides.

        :param config_path: TOML file to read.  Without it ``./oban.toml`` is read if present.
        :param env: environment to read ``OBAN_*`` variables from (default ``os.environ``).
        :param overrides: option values taking precedence over everything else; ``None``
            values are ignored so unset CLI flags can be passed straight through.
        :raises FileNotFoundError: if an explicit ``config_path`` does not exist.
        :raises ValueError: for unknown options, malformed environment values or invalid
            settings.
        """
        for key in overrides:
            if key not in _OPTION_NAMES:
                raise _unknown_option(key, _OPTION_NAMES)
        file_layer = _file_layer(config_path)
        env_layer = _env_layer(os.environ if env is None else env)
        override_layer = {key: value for key, value in overrides.items() if value is not None}
        return cls(**_merge_layers([file_layer, env_layer, override_layer]))

    def pool_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg_pool.AsyncConnectionPool``.

        ``check`` is only present (as ``True``) when ``pool_check`` is enabled; the caller is
        expected to substitute the actual check callable.
        """
        kwargs: dict[str, Any] = {
            "min_size": self.pool_min_size,
            "max_size": self.pool_max_size,
            "timeout": self.pool_timeout,
            "max_lifetime": self.pool_max_lifetime,
            "max_idle": self.pool_max_idle,
        }
        if self.pool_check:
            kwargs["check"] = True
        return kwargs


_OPTION_NAMES: frozenset[str] = frozenset(f.name for f in fields(Config))
