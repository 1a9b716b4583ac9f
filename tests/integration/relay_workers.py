"""Workers of the relay tests (a module of their own: `oban start` children import them)."""

from __future__ import annotations

import asyncio
from typing import Any

from oban import Cancel, Job, job, worker


@worker(queue="relay")
class Echo:
    async def process(self, job: Job) -> Any:
        await asyncio.sleep(float(job.args.get("sleep", 0)))
        return job.args.get("value")


@worker(queue="relay")
class SyncEcho:
    def process(self, job: Job) -> Any:
        return job.args.get("value")


@worker(queue="relay", max_attempts=3)
class FailTwice:
    """Fails its first two attempts, then returns its attempt number."""

    async def process(self, job: Job) -> Any:
        if job.attempt < 3:
            raise ValueError(f"attempt {job.attempt} fails")
        return job.attempt

    def backoff(self, job: Job) -> float:
        return 0.05


@worker(queue="relay", max_attempts=1)
class Explode:
    def process(self, job: Job) -> Any:
        raise RuntimeError("exploded")


@worker(queue="relay")
class Refuse:
    async def process(self, job: Job) -> Any:
        return Cancel("not today")


@worker(queue="relay")
class Unrecordable:
    async def process(self, job: Job) -> Any:
        return object()


@job(queue="relay")
def multiply(a: int, b: int, timeout: int = 0) -> int:
    """Has a parameter named like a relay setting: it stays the function's."""
    return a * b + timeout
