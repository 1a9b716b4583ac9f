"""A tour of oban: workers defined, jobs enqueued, executed, retried, snoozed, recorded.

Run with ``make demo``. With no configuration it runs on the embedded SQLite engine (a
database file in a temporary directory): nothing else to install. Set OBAN_DSN to a
``postgresql://`` DSN to run it on PostgreSQL instead (schema ``oban_demo``, or OBAN_PREFIX).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import warnings
from pathlib import Path

from oban import Cancel, Oban, Record, Snooze, job, schema, worker
from oban.worker import UnimportableWorkerWarning

# The workers below live in this script's __main__, which other processes cannot import; oban
# warns about that at enqueue. This demo runs its queues in this same process, so it is fine.
warnings.filterwarnings("ignore", category=UnimportableWorkerWarning)

DSN = os.environ.get("OBAN_DSN")
# A schema of its own (OBAN_PREFIX), so a run cannot disturb anything else in the database.
PREFIX = os.environ.get("OBAN_PREFIX", "oban_demo")
START = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - START:5.2f}s] {message}", flush=True)


@worker(queue="mailers", max_attempts=5)
class WelcomeEmail:
    """An async worker."""

    async def process(self, job):
        await asyncio.sleep(0.05)
        say(f"WelcomeEmail sent to {job.args['to']} (job {job.id}, attempt {job.attempt})")


@worker(queue="default", max_attempts=3)
class FlakyPayment:
    """Fails on its first attempt, succeeds on the retry."""

    def backoff(self, job):
        return 1  # retry after one second instead of the default ~17 s

    def process(self, job):  # a plain sync method: runs in a thread
        if job.attempt == 1:
            say(f"FlakyPayment attempt {job.attempt}: the gateway timed out, raising")
            raise ConnectionError("payment gateway timed out")
        say(f"FlakyPayment attempt {job.attempt}: charged {job.args['cents']} cents")


@worker(queue="default")
class WaitForStock:
    async def process(self, job):
        if job.meta.get("snoozed", 0) == 0:
            say("WaitForStock: nothing in stock, snoozing for 1 s")
            return Snooze(1)
        say("WaitForStock: stock arrived, done")


@worker(queue="default")
class Obsolete:
    async def process(self, job):
        return Cancel("the order was withdrawn")


@job(queue="default")
def add(a: int, b: int = 2) -> Record:
    say(f"add({a}, {b}) = {a + b}")
    return Record({"sum": a + b})


async def main() -> None:
    pool = None
    if DSN and DSN.startswith(("postgres://", "postgresql://")):
        pool = await Oban.create_pool(dsn=DSN)
        await schema.install(pool, PREFIX)
        async with pool.connection() as conn:
            await conn.execute(f"TRUNCATE {PREFIX}.oban_jobs")
        oban = Oban(pool=pool, prefix=PREFIX, queues={"default": 5, "mailers": 10})
        say(f"PostgreSQL, schema {PREFIX}")
    else:
        path = Path(tempfile.mkdtemp(prefix="oban-demo-")) / "jobs.db"
        oban = Oban(dsn=f"sqlite:///{path}", queues={"default": 5, "mailers": 10})
        say(f"SQLite, {path}")

    async with oban:
        say("enqueueing jobs")
        await oban.enqueue_many(
            *(WelcomeEmail.new({"to": f"user{i}@example.com"}) for i in range(3))
        )
        payment = await FlakyPayment.enqueue({"cents": 1999})
        stock = await WaitForStock.enqueue({"sku": "ABC-1"})
        cancelled = await Obsolete.enqueue({})
        total = await add.enqueue(3, b=4)

        ids = [payment.id, stock.id, cancelled.id, total.id]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            jobs = [await oban.get_job(i) for i in ids]
            if all(j is not None and j.state in ("completed", "cancelled") for j in jobs):
                break
            await asyncio.sleep(0.2)

        print()
        for j in [await oban.get_job(i) for i in ids]:
            assert j is not None
            line = (
                f"job {j.id:>3} {j.worker.rsplit('.', 1)[-1]:<13} {j.state:<10} attempt {j.attempt}"
            )
            if j.errors:
                line += f", errors: {[e['error'].splitlines()[-1] for e in j.errors]}"
            if j.meta.get("recorded"):
                line += f", recorded: {j.recorded}"
            if j.meta.get("snoozed"):
                line += f", snoozed {j.meta['snoozed']}x"
            print(line)
    print()
    if pool is not None:
        print(
            f"see these jobs: oban web --dsn <the DSN> --prefix {PREFIX}  (pip install 'oban[web]')"
        )
        await pool.close()
    else:
        print(f"see these jobs: oban web --dsn sqlite:///{path}  (pip install 'oban[web]')")


if __name__ == "__main__":
    asyncio.run(main())
