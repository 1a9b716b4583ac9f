"""The dashboard's tests run on both engines, with the conformance suite's fixtures: a fresh
PostgreSQL schema or a fresh SQLite file per test."""

from __future__ import annotations

# The engine-parametrised fixtures of tests/conformance, shared rather than copied.
from tests.conformance.conftest import engine, make_oban, oban, sql  # noqa: F401
