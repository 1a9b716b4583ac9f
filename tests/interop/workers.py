"""The Python side of the kit's worker ``MyApp.Echo`` (``exapp/lib/ex_app.ex``).

Elixir stores a job's worker as its module name, ``"MyApp.Echo"``. The Python twin claims that
name with ``@worker(name="MyApp.Echo")``, so a Python node resolves jobs either language
inserted to :class:`Echo`, whatever module it lives in. Like the Elixir worker it appends a
row to ``exec_log`` (the execution ledger: job, language, attempt, args, meta, queue) and then
acts on ``args["mode"]``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Unpack

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from oban import Cancel, Job, Record, worker
from oban.decorators import JobOptions

#: The worker string both languages use.
ECHO = "MyApp.Echo"

LEDGER_INSERT = (
    "INSERT INTO exec_log (job_id, lang, attempt, args, meta, queue) "
    "VALUES (%s, 'py', %s, %s, %s, %s)"
)


class _Ledger:
    """Where Python runs are logged: the test's database (set by the ``pool`` fixture)."""

    pool: AsyncConnectionPool[Any] | None = None


ledger = _Ledger()


def echo(args: dict[str, Any], **options: Unpack[JobOptions]) -> Job:
    """A ``MyApp.Echo`` job, for either language's node: how Python builds a job for a worker
    it may not have (an Elixir one), by its worker string. Elixir's default of 3 attempts."""
    options.setdefault("max_attempts", 3)
    return Job(ECHO, args=args, **options)


class EchoWorker:
    """``fail`` raises; ``fail_once`` raises on the first attempt; ``record`` returns
    ``Record({"echo": args, "lang": "python"})``; ``sleep`` sleeps ``args["ms"]`` ms, or until
    the job is cancelled (Elixir kills its sleeping job on a cancel); anything else completes.
    Retries come a second later, as the Elixir worker's ``backoff/1`` says."""

    async def process(self, job: Job) -> Any:
        await _log(job)
        mode = job.args.get("mode")
        if mode == "fail":
            raise RuntimeError(f"py boom {job.id}")
        if mode == "fail_once" and job.attempt == 1:
            raise RuntimeError(f"py fail once {job.id}")
        if mode == "record":
            return Record({"echo": job.args, "lang": "python"})
        if mode == "sleep":
            return await _sleep(job, job.args.get("ms", 500) / 1000)
        return None

    def backoff(self, job: Job) -> int:
        return 1


@worker(name=ECHO, queue="py", max_attempts=3)
class Echo(EchoWorker):
    """Runs the jobs either language inserts for ``MyApp.Echo``."""


async def _sleep(job: Job, seconds: float) -> Cancel | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if job.cancelled():
            return Cancel("cancelled while sleeping")
        await asyncio.sleep(0.01)
    return None


async def _log(job: Job) -> None:
    if ledger.pool is None:
        raise RuntimeError("workers.ledger.pool is not set: the interop pool fixture sets it")
    async with ledger.pool.connection() as conn:
        await conn.execute(
            LEDGER_INSERT, (job.id, job.attempt, Jsonb(job.args), Jsonb(job.meta), job.queue)
        )
