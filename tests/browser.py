"""Debian's Chromium driven by Playwright, shared by the dashboard's browser tests
(tests/web) and the Oban Web test (tests/interop): where it is, how it is started, and a
failure (never a skip) that says how to install what is missing."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing_browser() -> list[str]:
    """What a test lacks to drive a browser, each with how to install it."""
    missing: list[str] = []
    if importlib.util.find_spec("playwright") is None:
        missing.append(
            "Python Playwright is not installed: `make setup` installs it (the test extra of "
            "pyproject.toml), or `.venv/bin/pip install playwright`"
        )
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(
            f"Chromium is missing at {CHROMIUM}: install Debian's with `apt-get install -y "
            "--no-install-recommends chromium` (.ci/run does); `playwright install` cannot "
            "download a browser here"
        )
    return missing


def require_browser(who: str) -> None:
    """Fail the test (``who`` needs a browser) when :func:`missing_browser` finds a gap."""
    missing = missing_browser()
    if missing:
        pytest.fail(f"{who}: " + "; ".join(missing), pytrace=False)
