"""``MyApp.Echo`` for Python nodes: a top-level module ``MyApp`` with a class ``Echo``, so the
worker string is Elixir's (see ``tests/interop/workers.py``)."""

from __future__ import annotations

from tests.interop.workers import EchoWorker

from oban import worker


@worker(queue="py", max_attempts=3)
class Echo(EchoWorker):
    """Runs the jobs either language inserts for ``MyApp.Echo``."""
