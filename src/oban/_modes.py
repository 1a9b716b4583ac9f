"""The testing mode switch, read by ``Oban.enqueue_many`` (set through ``oban.testing.mode``)."""

from __future__ import annotations

from contextvars import ContextVar

testing_mode: ContextVar[str | None] = ContextVar("oban_testing_mode", default=None)
