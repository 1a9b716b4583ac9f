"""Workers for bench_relay.py (a module, so that an ``oban start`` node can import them).

Only names every version of oban has (``Job``, ``Record``, ``worker``): the drain comparison
runs them on an older tree too.
"""

from __future__ import annotations

import time

from oban import Job, Record, worker


@worker(queue="bench", name="bench_relay.Stamp")
class Stamp:
    """Records when ``process`` started: ``time.perf_counter()``, CLOCK_MONOTONIC on Linux,
    one clock for every process of the machine, so another process can subtract its own."""

    async def process(self, job: Job) -> Record:
        return Record(time.perf_counter())


@worker(queue="bench", name="bench_relay.Noop")
class Noop:
    async def process(self, job: Job) -> None:
        return None
