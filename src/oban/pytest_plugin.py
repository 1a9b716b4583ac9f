"""pytest fixtures for applications using oban.

Enable in ``conftest.py`` with ``pytest_plugins = ["oban.pytest_plugin"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import mode


@pytest.fixture
def oban_inline() -> Iterator[None]:
    """Enqueued jobs run at once, in the test, without a database."""
    with mode("inline"):
        yield


@pytest.fixture
def oban_manual() -> Iterator[None]:
    """Enqueued jobs are inserted; run them with ``drain_queue``."""
    with mode("manual"):
        yield
