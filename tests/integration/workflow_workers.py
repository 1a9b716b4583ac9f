"""Workers of the workflow tests. Each step writes to :data:`LEDGER` when it starts and when it
ends (the nodes of these tests run in the test's process)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from oban import Job, Oban, worker

#: (workflow id, step name, "start" | "end", monotonic time)
LEDGER: list[tuple[str, str, str, float]] = []
#: Steps of barrier tests wait on this before they end.
BARRIER: asyncio.Event | None = None


def note(job: Job, event: str) -> None:
    LEDGER.append((job.meta["workflow_id"], job.meta["name"], event, time.monotonic()))


@worker(queue="wf")
class Step:
    """Sleeps ``sleep`` seconds and returns ``value`` (default: its name)."""

    async def process(self, job: Job) -> Any:
        note(job, "start")
        await asyncio.sleep(float(job.args.get("sleep", 0)))
        if BARRIER is not None and job.args.get("barrier"):
            await BARRIER.wait()
        note(job, "end")
        return job.args.get("value", job.meta["name"])


@worker(queue="wf", max_attempts=1)
class Fail:
    async def process(self, job: Job) -> Any:
        note(job, "start")
        raise RuntimeError("step failed")


@worker(queue="wf")
class Gather:
    """Returns the values of its dependencies, as it read them."""

    async def process(self, job: Job) -> Any:
        note(job, "start")
        results = await Oban.get_instance(job.meta.get("oban", "Oban")).workflow_results(job)
        note(job, "end")
        return results
