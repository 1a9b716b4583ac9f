from oban import worker
from tests.helpers import eventually

RAN: list[int] = []


@worker(queue="conf-smoke")
class ConfSmoke:
    async def process(self, job):
        RAN.append(job.id)


async def test_enqueue_run_and_backdate(make_oban, sql, backdate):
    oban = make_oban(queues={"conf-smoke": 2})
    async with oban:
        job = await ConfSmoke.enqueue({"n": 1})

        async def done():
            current = await oban.get_job(job.id)
            return current.state == "completed"

        await eventually(done)
        await backdate(oban, job.id, "completed_at", 3600)
        rows = await sql(oban, "SELECT state FROM oban_jobs WHERE id = %s", (job.id,))
        assert rows[0][0] == "completed"
        assert job.id in RAN
