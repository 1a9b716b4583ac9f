"""The Django project's tests run in a pytest session of their own, once per engine:
``make test`` runs ``pytest tests/django_project --ds=project.settings_pg`` and again with
``project.settings_sqlite`` (pytest-django configures Django once per session). The main
session leaves this directory out (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.django_project.support import HERE, node_env


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run_dir = os.environ.get("OBAN_DJANGO_DIR")
    if run_dir and Path(run_dir).name.startswith("oban-django-"):
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _stop_oban(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Close the connections oban opened on the test database before pytest-django drops
    it."""
    yield
    from oban.contrib.django import reset

    with django_db_blocker.unblock():
        reset()


@pytest.fixture(autouse=True)
def _empty_jobs(request: pytest.FixtureRequest) -> None:
    """Django's flush leaves oban's (unmanaged) tables alone: every test starts with none."""
    if request.node.get_closest_marker("django_db"):
        with connection.cursor() as cur:
            cur.execute("DELETE FROM oban_jobs")


@pytest.fixture
def node() -> Iterator[subprocess.Popen[str]]:
    """``manage.py oban start`` on the test database, stopped (SIGTERM) after the test."""
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "oban", "start", "--log-level", "INFO"],
        cwd=HERE,
        env=node_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        proc.output = output  # type: ignore[attr-defined]
