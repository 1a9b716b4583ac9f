"""Workers for bench_isolation.py (a module, so isolated children can import them)."""

from __future__ import annotations

from oban import Job, worker


@worker(queue="threads")
class ThreadNoop:
    def process(self, job: Job) -> None:
        return None


@worker(queue="processes", isolation="process")
class ProcessNoop:
    def process(self, job: Job) -> None:
        return None
