"""The Django app's settings: ``OBAN`` (the keys of ``oban.toml``), ``OBAN_DATABASE_ALIAS``,
``OBAN_ENQUEUE`` and ``OBAN_AUTODISCOVER``, read when first needed (so that a test's
``override_settings`` or pytest-django's test database is seen)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from ..._config import Config, _check_names, _env_layer, _merge_layers, _normalise_option

__all__ = [
    "database_alias",
    "enqueue_mode",
    "load_config",
    "worker_module_names",
]

#: libpq connection parameters a Django ``OPTIONS`` dict may carry over to oban's pool; the
#: other keys there (``pool``, ``server_side_binding``, ``isolation_level``,
#: ``assume_role``, ``cursor_factory``...) are Django's own.
_LIBPQ_OPTIONS = frozenset(
    {
        "application_name",
        "channel_binding",
        "connect_timeout",
        "gssencmode",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "options",
        "passfile",
        "requirepeer",
        "service",
        "sslcert",
        "sslcrl",
        "sslkey",
        "sslmode",
        "sslpassword",
        "sslrootcert",
        "target_session_attrs",
        "tcp_user_timeout",
    }
)

EnqueueMode = Literal["transaction", "on_commit"]


def database_alias() -> str:
    """``OBAN_DATABASE_ALIAS`` (default ``"default"``): the Django database oban uses.

    Raises:
        ImproperlyConfigured: no such alias in ``DATABASES``.
    """
    alias = getattr(settings, "OBAN_DATABASE_ALIAS", "default")
    if not isinstance(alias, str) or alias not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"OBAN_DATABASE_ALIAS is {alias!r}, which is not a key of DATABASES"
        )
    return alias


def enqueue_mode() -> EnqueueMode:
    """``OBAN_ENQUEUE``: ``"transaction"`` (default: a sync enqueue inserts on Django's
    connection, inside the current ``atomic()`` block) or ``"on_commit"`` (it inserts once that
    block commits, and never when it rolls back)."""
    mode = getattr(settings, "OBAN_ENQUEUE", "transaction")
    if mode not in ("transaction", "on_commit"):
        raise ImproperlyConfigured(
            f"OBAN_ENQUEUE is {mode!r}: use 'transaction' (insert inside the current atomic() "
            "block) or 'on_commit' (insert when it commits)"
        )
    return "on_commit" if mode == "on_commit" else "transaction"


def worker_module_names() -> list[str]:
    """``OBAN_AUTODISCOVER`` (default ``["workers"]``): the module of each installed app
    imported at startup, where its workers (and their cron entries) are declared."""
    names = getattr(settings, "OBAN_AUTODISCOVER", ["workers"])
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ImproperlyConfigured(
            f"OBAN_AUTODISCOVER must be a list of module names, got {names!r}"
        )
    return list(names)


def _oban_setting() -> dict[str, Any]:
    options = getattr(settings, "OBAN", {})
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f"OBAN must be a dict of oban.toml keys, got {type(options).__name__}"
        )
    return dict(options)


def dsn_for(alias: str) -> str:
    """An oban DSN for the Django database ``alias``: ``postgresql://...`` with the
    connection parameters of its settings (as they are now: pytest-django's test database
    included), or ``sqlite:///path``.

    Raises:
        ImproperlyConfigured: another database backend, or an in-memory SQLite database
            (which no second connection can see).
    """
    connection = connections[alias]
    return dsn_from(connection.vendor, connection.settings_dict, alias)


def dsn_from(vendor: str, params: Mapping[str, Any], alias: str = "default") -> str:
    """:func:`dsn_for` of a database whose backend is ``vendor`` and whose settings are
    ``params`` (an entry of ``DATABASES``)."""
    if vendor == "postgresql":
        query: dict[str, str] = {}
        for key, setting in (
            ("host", "HOST"),
            ("port", "PORT"),
            ("user", "USER"),
            ("password", "PASSWORD"),
        ):
            value = params.get(setting)
            if value:
                query[key] = str(value)
        for key, value in (params.get("OPTIONS") or {}).items():
            if key in _LIBPQ_OPTIONS and value is not None:
                query[key] = str(value)
        name = params.get("NAME") or ""
        return f"postgresql:///{quote(str(name), safe='')}?{urlencode(query)}"
    if vendor == "sqlite":
        name = str(params.get("NAME") or "")
        if not name or name == ":memory:" or "mode=memory" in name:
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}] is an in-memory SQLite database, which oban's nodes "
                "cannot share: give it a file (and TEST['NAME'] a file under pytest-django)"
            )
        return f"sqlite:///{os.path.abspath(name)}"
    raise ImproperlyConfigured(
        f"DATABASES[{alias!r}] uses the {vendor} backend: oban runs on PostgreSQL (with psycopg "
        "3: django.db.backends.postgresql) or SQLite"
    )


def load_config(**overrides: Any) -> Config:
    """The instance's settings: ``overrides`` (``manage.py oban`` flags) over ``OBAN_*``
    environment variables over ``settings.OBAN``; the DSN is that of ``OBAN_DATABASE_ALIAS``
    unless ``OBAN`` names one. ``oban.toml`` is not read: settings.py takes its place.

    Raises:
        ImproperlyConfigured: a wrong setting (an unknown key, a bad value: the message names
            it).
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        base = _oban_setting()
        _check_names(base)
        _check_names(given)
        layers = [{key: _normalise_option(key, value) for key, value in base.items()}]
        layers += [_env_layer(os.environ), given]
        merged = _merge_layers(layers)
        if merged.get("dsn") is None:
            merged["dsn"] = dsn_for(database_alias())
        return Config(**merged)
    except (TypeError, ValueError) as error:
        raise ImproperlyConfigured(f"OBAN: {error}") from error


def instance_name() -> str:
    """The instance's name as :func:`load_config` resolves it, read cheaply (every sync
    enqueue asks)."""
    return os.environ.get("OBAN_NAME", "").strip() or str(_oban_setting().get("name") or "Oban")


def jobs_table() -> str:
    """``oban_jobs`` as the model's ``db_table`` names it: in ``OBAN["prefix"]``, which is a
    PostgreSQL schema (``'"prefix"."oban_jobs"'`` by Django's quoting) or, on SQLite, a table
    name prefix (``prefix_oban_jobs``)."""
    prefix = os.environ.get("OBAN_PREFIX", "").strip() or str(
        _oban_setting().get("prefix") or "public"
    )
    if prefix == "public":
        return "oban_jobs"
    vendor = connections[database_alias()].vendor
    if vendor == "sqlite":
        return f"{prefix}_oban_jobs"
    return f'{prefix}"."oban_jobs'
