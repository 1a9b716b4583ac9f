from collections.abc import Callable
from typing import Any

from oban import Job, Oban, worker
from tests.helpers import eventually

RAN: list[int | None] = []


@worker(queue="conf-smoke")
class ConfSmoke:
    async def process(self, job: Job) -> None:
        RAN.append(job.id)


async def test_enqueue_run_and_backdate(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], backdate: Callable[..., Any]
) -> None:
    oban = make_oban(queues={"conf-smoke": 2})
    async with oban:
        job = await ConfSmoke.enqueue({"n": 1})
        assert job.id is not None
        job_id = job.id

        async def done() -> bool:
            current = await oban.get_job(job_id)
            assert current is not None
            return current.state == "completed"

        await eventually(done)
        await backdate(oban, job.id, "completed_at", 3600)
        rows = await sql(oban, "SELECT state FROM oban_jobs WHERE id = %s", (job.id,))
        assert rows[0][0] == "completed"
        assert job.id in RAN
