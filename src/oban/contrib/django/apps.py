"""The Django app ``oban.contrib.django`` (label ``oban``)."""

from __future__ import annotations

import logging

from django.apps import AppConfig
from django.core import checks
from django.utils.module_loading import autodiscover_modules

logger = logging.getLogger("oban.django")


class ObanConfig(AppConfig):
    name = "oban.contrib.django"
    label = "oban"
    verbose_name = "Oban"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ... import _hooks, _instances
        from . import _async_enqueuer, _instance_for, _sync_enqueuer
        from .conf import worker_module_names

        for module in worker_module_names():
            autodiscover_modules(module)
        _hooks.sync_enqueuer[:] = [_sync_enqueuer]
        _hooks.async_enqueuer[:] = [_async_enqueuer]
        _instances.instance_factory[:] = [_instance_for]
        checks.register(_check_settings, "oban")
        if _uses_task_backend():
            from . import tasks  # noqa: F401  (registers the worker that runs tasks)
        if _close_old_connections not in _hooks.job_hooks:
            _hooks.job_hooks.append(_close_old_connections)
            _hooks.async_job_hooks.append(_aclose_old_connections)


def _check_settings(app_configs: object = None, **kwargs: object) -> list[checks.CheckMessage]:
    """``manage.py check``: OBAN and the other settings can be read (oban.E001)."""
    from django.core.exceptions import ImproperlyConfigured

    from .conf import enqueue_mode, load_config, worker_module_names

    try:
        load_config()
        enqueue_mode()
        worker_module_names()
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="oban.E001")]
    return []


def _uses_task_backend() -> bool:
    from django.conf import settings

    backends = getattr(settings, "TASKS", None) or {}
    return any(
        isinstance(options, dict) and str(options.get("BACKEND", "")).startswith(__package__ or "")
        for options in backends.values()
    )


def _close_old_connections() -> None:
    """What Django does at each request's start and end, around each job run in a thread:
    drop connections past ``CONN_MAX_AGE`` or left broken by the previous job."""
    from django.db import close_old_connections

    close_old_connections()


async def _aclose_old_connections() -> None:
    """The same around an async job, in the thread where its ``sync_to_async`` ORM calls
    run."""
    from asgiref.sync import sync_to_async
    from django.db import close_old_connections

    await sync_to_async(close_old_connections, thread_sensitive=True)()
