"""Configuration: the one place where Oban's settings are resolved.

``Oban(...)``, :meth:`Oban.from_config`, ``Oban.create_pool()`` and the ``oban`` command all
resolve their settings here, from up to four layers, highest precedence first:

1. keyword arguments (or CLI flags); ``None`` means "not given",
2. ``OBAN_*`` environment variables,
3. an ``oban.toml`` file (an explicit ``config_path``, else ``./oban.toml`` when present),
4. the defaults: the embedded SQLite engine on ``./oban.db``.

A value from a higher layer replaces a lower one's, ``queues`` included: ``--queues`` or
``OBAN_QUEUES`` replace the file's queues. Only the component tables (``notifier``,
``leader``, ``lifeline``, ``pruner``, ``refresher``, ``scheduler``, ``stager`` and
``metrics`` when it is a table) are merged key by key.

Every option is validated where it is given: an unknown name raises ``ValueError`` with the
near match, a value of the wrong type ``TypeError`` and a wrong value ``ValueError``, each
naming the option (and the file or variable it came from).
"""

from __future__ import annotations

import enum
import errno
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from ._engines._dsn import is_postgres, sqlite_path
from ._options import unknown_option as _unknown_option
from .errors import OptionNotImplementedError, UnknownOptionError
from .worker import refused_module

__all__ = [
    "CONFIG_FILE_NAME",
    "NOTIFIER_TYPES",
    "QUEUE_NAME_MAX_LENGTH",
    "QUEUE_OPTIONS",
    "UNSET",
    "Config",
    "Unset",
    "_unknown_option",
    "parse_queues",
    "producer_options",
    "resolve",
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
"""A validator: receives the option label (for messages) and the value; raises TypeError for
a value of the wrong type and ValueError for a wrong value."""


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: "Not given", for the options where ``None`` is a meaningful value.
UNSET: Final = Unset.UNSET


# ---------------------------------------------------------------------------------------------
# Value checks
# ---------------------------------------------------------------------------------------------


def _require(label: str, what: str, value: Any, *, typed: bool, valid: bool = True) -> None:
    """TypeError when ``value`` has the wrong type, ValueError when it is a wrong value."""
    if not typed:
        raise TypeError(f"{label} must be {what}, got {value!r}")
    if not valid:
        raise ValueError(f"{label} must be {what}, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_number(label: str, value: Any) -> None:
    typed = _is_number(value)
    valid = typed and math.isfinite(value) and value > 0
    _require(label, "a positive number", value, typed=typed, valid=valid)


def _check_non_negative_number(label: str, value: Any) -> None:
    typed = _is_number(value)
    valid = typed and math.isfinite(value) and value >= 0
    _require(label, "a non-negative number", value, typed=typed, valid=valid)


def _check_positive_int(label: str, value: Any) -> None:
    typed = _is_int(value)
    _require(label, "a positive integer", value, typed=typed, valid=typed and value > 0)


def _check_bool(label: str, value: Any) -> None:
    _require(label, "true or false", value, typed=isinstance(value, bool))


def _check_optional_bool(label: str, value: Any) -> None:
    _require(label, "true, false or None", value, typed=value is None or isinstance(value, bool))


def _check_optional_str(label: str, value: Any) -> None:
    _require(label, "a string or None", value, typed=value is None or isinstance(value, str))


def _check_dsn(label: str, value: Any) -> None:
    _check_optional_str(label, value)
    if value and not is_postgres(value):
        try:
            sqlite_path(value)
        except ValueError as error:
            raise ValueError(f"{label}: {error}") from None


def _check_non_empty_str(label: str, value: Any) -> None:
    typed = isinstance(value, str)
    _require(label, "a non-empty string", value, typed=typed, valid=typed and bool(value.strip()))


def _check_optional_non_empty_str(label: str, value: Any) -> None:
    if value is not None:
        _check_non_empty_str(label, value)


def _check_grace_period(label: str, value: Any) -> None:
    if value is not None:
        _check_non_negative_number(label, value)


def _check_prefix(label: str, value: Any) -> None:
    typed = isinstance(value, str)
    _require(
        label,
        "a valid SQL identifier (a letter or underscore followed by up to 62 letters, digits "
        "or underscores)",
        value,
        typed=typed,
        valid=typed and _PREFIX_PATTERN.fullmatch(value) is not None,
    )


def _check_notifier_type(label: str, value: Any) -> None:
    choices = ", ".join(repr(choice) for choice in sorted(NOTIFIER_TYPES))
    typed = isinstance(value, str)
    _require(
        label, f"one of {choices}", value, typed=typed, valid=typed and value in NOTIFIER_TYPES
    )


def _check_timezone(label: str, value: Any) -> None:
    _check_non_empty_str(label, value)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{label}: unknown timezone {value!r}") from None


def _normalise_worker_modules(label: str, value: Any) -> list[str] | None:
    """``None`` (import any worker on demand) or a list of module prefixes such as
    ``["myapp", "billing.jobs"]``; each a dotted module name that a worker may come from."""
    if value is None:
        return None
    typed = isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)
    _require(label, "a list of module names (strings) or None", value, typed=typed)
    prefixes: list[str] = []
    for item in value:
        prefix = item.strip()
        if not prefix or not all(part.isidentifier() for part in prefix.split(".")):
            raise ValueError(f"{label}: {item!r} is not a module name like 'myapp.workers'")
        refusal = refused_module(prefix)
        if refusal is not None:
            raise ValueError(f"{label}: {item!r} cannot hold workers: {refusal}")
        prefixes.append(prefix)
    return prefixes


_SCALAR_CHECKS: dict[str, _Check] = {
    "dsn": _check_dsn,
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
    "processes": _check_positive_int,
}

#: Known keys of each table-valued option and the check applied to each key's value.
_TABLE_OPTIONS: dict[str, dict[str, _Check]] = {
    "notifier": {
        "type": _check_notifier_type,
        "beat_interval": _check_positive_number,
        "connect_timeout": _check_positive_number,
        "notify_timeout": _check_positive_number,
        "poll_interval": _check_positive_number,
        "secret": _check_non_empty_str,
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
        "timezone": _check_timezone,
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

#: Options whose values are merged key by key across configuration layers (``queues`` is
#: not: a higher layer's queues replace a lower layer's).
_MERGED_OPTIONS: frozenset[str] = frozenset(_TABLE_OPTIONS)


def _check_table(option: str, value: Any) -> dict[str, Any]:
    """Validate a plugin/notifier/metrics table and return a shallow copy of it."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{option} must be a table (dict), got {value!r}")
    checks = _TABLE_OPTIONS[option]
    for key, item in value.items():
        check = checks.get(key)
        if check is None:
            raise UnknownOptionError(f"{option}: {_unknown_option(key, checks)}")
        check(f"{option}.{key}", item)
    return dict(value)


def _normalise_metrics(value: Any) -> bool | dict[str, Any] | None:
    if isinstance(value, Mapping):
        return _check_table("metrics", value)
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"metrics must be true, false, None or a table, got {value!r}")
    return value


def _check_pool_sizes(min_size: int, max_size: int) -> None:
    if min_size > max_size:
        raise ValueError(
            f"pool_min_size ({min_size}) must not be greater than pool_max_size ({max_size})"
        )


# ---------------------------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------------------------

#: Keys a queue's meta may not use: the producer's own keyword arguments (the meta is passed
#: to it as keyword arguments, see producer_options), ``local_limit`` (written beside the meta
#: in the producer row) and ``notifier`` (added by ``check_queue``).
_RESERVED_META: frozenset[str] = frozenset(
    {
        "acker",
        "debounce_interval",
        "engine",
        "executor",
        "limit",
        "local_limit",
        "name",
        "node",
        "notifier",
        "paused",
        "poll_interval",
        "queue",
    }
)

#: Queue options oban-py hands to Oban Pro; not implemented here.
_QUEUE_NOT_IMPLEMENTED: frozenset[str] = frozenset({"global_limit", "partition", "rate_limit"})


def _check_queue_meta(label: str, value: Any) -> None:
    typed = isinstance(value, Mapping) and all(isinstance(key, str) for key in value)
    _require(label, "a table (dict) with string keys", value, typed=typed)
    reserved = sorted(_RESERVED_META.intersection(value))
    if reserved:
        raise ValueError(f"{label} must not use the reserved keys {', '.join(reserved)}")
    try:
        orjson.dumps(dict(value))
    except TypeError as error:
        raise TypeError(f"{label} must be JSON-serialisable: {error}") from None


#: The highest concurrency limit a queue takes (per node): far above what one process runs
#: well, low enough that a mistyped or hostile value cannot make a node start without bound.
MAX_QUEUE_LIMIT = 10_000


def _check_queue_limit(label: str, value: Any) -> None:
    _check_positive_int(label, value)
    if value > MAX_QUEUE_LIMIT:
        raise ValueError(f"{label} must be at most {MAX_QUEUE_LIMIT:,}, got {value!r}")


#: The settings a queue accepts, each with its check. Free-form data goes under ``meta``.
_QUEUE_CHECKS: dict[str, _Check] = {
    "debounce_interval": _check_non_negative_number,
    "limit": _check_queue_limit,
    "meta": _check_queue_meta,
    "paused": _check_bool,
}

#: Names accepted in a queue's settings table.
QUEUE_OPTIONS: frozenset[str] = frozenset(_QUEUE_CHECKS)


def _unknown_queue_option(label: str, key: object) -> ValueError:
    accepted = ", ".join(sorted(QUEUE_OPTIONS))
    if key in _QUEUE_NOT_IMPLEMENTED:
        return OptionNotImplementedError(
            f"{label}.{key} is not implemented yet (oban-py leaves it to Oban Pro); a queue "
            f"accepts {accepted}"
        )
    error = _unknown_option(key, QUEUE_OPTIONS, list_known=True)
    return UnknownOptionError(f"{label}: {error}; free-form queue data goes under 'meta'")


def _normalise_queue_name(name: Any) -> str:
    typed = isinstance(name, str)
    valid = typed and bool(name.strip())
    _require("queue name", "a non-empty string", name, typed=typed, valid=valid)
    stripped: str = name.strip()
    if len(stripped) > QUEUE_NAME_MAX_LENGTH:
        raise ValueError(
            f"queue name {stripped[:20]!r}... is too long "
            f"({len(stripped)} characters, the maximum is {QUEUE_NAME_MAX_LENGTH})"
        )
    return stripped


def _normalise_queue(name: str, value: Any) -> dict[str, Any]:
    label = f"queues.{name}"
    if _is_int(value):
        settings: dict[str, Any] = {"limit": value}
    elif isinstance(value, Mapping):
        settings = {"limit": DEFAULT_QUEUE_LIMIT, **value}
    else:
        raise TypeError(
            f"{label} must be a positive integer limit or a table with a 'limit' key, got {value!r}"
        )
    for key, item in settings.items():
        check = _QUEUE_CHECKS.get(key)
        if check is None:
            raise _unknown_queue_option(label, key)
        check(f"{label}.{key}", item)
    if "meta" in settings:
        settings["meta"] = dict(settings["meta"])
    return settings


def _normalise_queues(queues: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(queues, Mapping):
        raise TypeError(f"queues must be a table (dict) of queue name to limit, got {queues!r}")
    result: dict[str, dict[str, Any]] = {}
    for raw_name, value in queues.items():
        name = _normalise_queue_name(raw_name)
        if name in result:
            raise ValueError(f"queue {name!r} is defined more than once")
        result[name] = _normalise_queue(name, value)
    return result


def producer_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A queue's normalised settings as producer keyword arguments: ``meta`` is spread out,
    so its keys become the producer's meta (``QueueInfo.meta`` and the producer row).

    >>> producer_options({"limit": 5, "meta": {"region": "eu"}})
    {'limit': 5, 'region': 'eu'}
    """
    options = {key: value for key, value in settings.items() if key != "meta"}
    return {**options, **settings.get("meta", {})}


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
        _check_queue_limit(f"queues.{name}.limit", limit)
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


def _normalise_option(option: str, value: Any) -> Any:
    """``value`` checked (and for queues and tables normalised) as option ``option``."""
    if option == "queues":
        return _normalise_queues(value)
    if option == "metrics":
        return _normalise_metrics(value)
    if option == "worker_modules":
        return _normalise_worker_modules(option, value)
    if option in _TABLE_OPTIONS:
        return _check_table(option, value)
    _SCALAR_CHECKS[option](option, value)
    return value


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
    return {"type": raw}


def _parse_str(raw: str) -> str:
    return raw


def _parse_names(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


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
    "OBAN_PROCESSES": ("processes", _parse_int),
    "OBAN_WORKER_MODULES": ("worker_modules", _parse_names),
}


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    """Read the ``OBAN_*`` variables; unset or blank variables contribute nothing."""
    layer: dict[str, Any] = {}
    for var, (option, parse) in _ENV_VARS.items():
        raw = env.get(var)
        if raw is None or not raw.strip():
            continue
        try:
            layer[option] = _normalise_option(option, parse(raw.strip()))
        except (TypeError, ValueError) as exc:
            # A DSN may hold a password: its own error shows it masked, never the raw value.
            shown = "the value" if option == "dsn" else repr(raw)
            raise ValueError(f"{var}: {shown} is not valid: {exc}") from None
    return layer


# ---------------------------------------------------------------------------------------------
# Files and merging
# ---------------------------------------------------------------------------------------------


def _read_toml(config_path: str | os.PathLike[str] | None) -> tuple[Path, dict[str, Any]]:
    if config_path is None:
        path = Path.cwd() / CONFIG_FILE_NAME
        if not path.is_file():
            return path, {}
    else:
        path = Path(config_path)
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "Oban config file not found", str(path))
    try:
        with path.open("rb") as handle:
            return path, tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from exc


def _file_layer(config_path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The file's options, each checked; errors name the file."""
    path, data = _read_toml(config_path)
    layer: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _OPTION_NAMES:
            raise UnknownOptionError(f"{path}: {_unknown_option(key, _OPTION_NAMES)}")
        try:
            layer[key] = _normalise_option(key, value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{path}: {exc}") from None
    return layer


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


def _check_names(options: Iterable[str]) -> None:
    for key in options:
        if key not in _OPTION_NAMES:
            raise _unknown_option(key, _OPTION_NAMES)


def resolve(
    overrides: Mapping[str, Any],
    *,
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The options of a :class:`Config`: ``overrides`` over ``OBAN_*`` over the file.

    Every key of ``overrides`` counts, ``None`` included (:meth:`Config.load` drops ``None``
    first); callers pass only the options that were given.

    :raises ValueError: for an unknown option, naming the near match.
    """
    _check_names(overrides)
    file_layer = _file_layer(config_path)
    env_layer = _env_layer(os.environ if env is None else env)
    return _merge_layers([file_layer, env_layer, overrides])


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Config:
    """Validated settings for an Oban instance, exported as ``oban.Config``.

    :meth:`load` resolves them as ``Oban(...)`` and ``oban start`` do (keyword overrides over
    ``OBAN_*`` variables over ``oban.toml`` over the defaults); give the result to
    :meth:`Oban.from_config <oban.Oban.from_config>`. Built directly (every field is
    keyword-only) a config holds exactly what it is given. Construction normalises the queues
    (``{"default": 10}`` becomes ``{"default": {"limit": 10}}``) and raises ``TypeError`` for
    a value of the wrong type and ``ValueError`` for a wrong value, naming the option.

    >>> config = Config.load(queues={"default": 10})        # doctest: +SKIP
    >>> oban = Oban.from_config(config)                      # doctest: +SKIP
    """

    dsn: str | None = field(default=None, repr=False)
    """``postgresql://...`` or ``sqlite:///path.db``; ``None``: SQLite on ``./oban.db``
    (hidden from ``repr`` as it may hold a password)."""
    name: str = "Oban"
    """Instance name, used to tell several instances apart."""
    node: str | None = None
    """Node identifier; ``None`` lets the runtime pick one (e.g. the host name)."""
    prefix: str = "public"
    """Database schema holding the ``oban_*`` tables."""
    leadership: bool | None = None
    """Whether to take part in leader election; ``None`` means the runtime default."""
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Queue name to settings: ``limit`` (default 10), ``paused``, ``debounce_interval`` and
    ``meta`` (free-form data shown in ``QueueInfo.meta`` and the producer row)."""
    notifier: dict[str, Any] = field(default_factory=dict, repr=False)
    """Notifier settings: ``type``, optional timing options and ``secret`` (signs control
    signals; hidden from ``repr``)."""
    shutdown_grace_period: float | None = 15.0
    """Seconds to wait for running jobs on shutdown; ``None`` waits indefinitely."""
    leader: dict[str, Any] = field(default_factory=dict)
    """Leader election options: ``interval`` (the lease, in seconds; default 30)."""
    lifeline: dict[str, Any] = field(default_factory=dict)
    """Lifeline (orphan rescue) plugin options: ``interval`` (default 60), ``limit`` (5,000) and
    ``rescue_after``: seconds after which an executing job that no producer row knows (an
    Elixir node's) is rescued, default 3,600 as in Elixir's Lifeline. Jobs of known producers
    are rescued by heartbeat, never by ``rescue_after``."""
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
    processes: int = 1
    """How many node processes ``oban start`` runs under one supervisor (each a full node
    with its own producers and pool). An ``oban start`` setting only: ``Oban(...)`` refuses
    it, and an instance built from a config that has it runs one node."""
    worker_modules: list[str] | None = None
    """The modules a job's worker may be imported from, as prefixes (``["myapp"]`` allows
    ``myapp.jobs.Mailer``). ``None`` (the default) imports any worker a job names, except
    from the standard library, ``__main__`` modules and oban itself; registered workers (from
    modules already imported) always resolve. See docs/security.md."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Normalise the settings in place and check them.

        Called automatically on construction; call it again after mutating a config.  Nothing
        is modified when a check fails.

        :raises TypeError: a value of the wrong type, naming the option (``pruner.max_age``).
        :raises ValueError: an unknown option or a wrong value, naming it.
        """
        values = {f.name: _normalise_option(f.name, getattr(self, f.name)) for f in fields(self)}
        _check_pool_sizes(values["pool_min_size"], values["pool_max_size"])
        for name, value in values.items():
            setattr(self, name, value)

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
        :raises TypeError: for a value of the wrong type.
        :raises ValueError: for unknown options, malformed environment values or invalid
            settings.

        >>> Config.load(env={"OBAN_QUEUES": "default:5"}).queues   # doctest: +SKIP
        {'default': {'limit': 5}}
        """
        _check_names(overrides)
        given = {key: value for key, value in overrides.items() if value is not None}
        return cls(**resolve(given, config_path=config_path, env=env))

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
