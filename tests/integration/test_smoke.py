from collections.abc import Callable
from typing import Any

from oban import Job, Oban, worker
from tests.helpers import eventually

SEEN: list[int] = []


@worker(queue="default")
class Smoke:
    async def process(self, job: Job) -> None:
        SEEN.append(job.args["n"])


async def test_job_runs_and_completes(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    oban = make_oban(queues={"default": 2})
    async with oban:
        job = await Smoke.enqueue({"n": 1})
        await eventually(lambda: 1 in SEEN, message="job executed")
        await eventually(
            lambda: sql("SELECT state FROM oban_jobs WHERE id = %s", (job.id,)),
        )

        async def completed() -> bool:
            rows: list[tuple[str]] = await sql(
                "SELECT state::text FROM oban_jobs WHERE id = %s", (job.id,)
            )
            return rows[0][0] == "completed"

        await eventually(completed)
