"""Helpers of the Django project's tests: run manage.py on the session's test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection

HERE = Path(__file__).resolve().parent


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def node_env() -> dict[str, str]:
    """The environment of a ``manage.py`` this test session spawns: the session's settings
    and its test database (pytest-django renamed it in this process only)."""
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = os.environ["DJANGO_SETTINGS_MODULE"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite":
        env["OBAN_DJANGO_SQLITE"] = name
    else:
        env["OBAN_DJANGO_DB"] = name
    return env


def manage(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=HERE,
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
