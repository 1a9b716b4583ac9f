"""A small application written against the public API, type-checked by mypy (with the
``oban.mypy`` plugin) and by pyright in ``tests/unit/test_typing.py``. ``assert_type`` makes
each checker confirm the exact type it sees, not just the absence of an error."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, assert_type

from oban import Cancel, Job, Oban, Record, Snooze, job, worker
from oban.decorators import JobOptions


@worker(queue="mailers", max_attempts=5)
class SendReceipt:
    """An async class worker."""

    RETRIES = 3

    async def process(self, job: Job) -> Snooze | Cancel | None:
        if job.args.get("later"):
            return Snooze(5)
        if job.args.get("drop"):
            return Cancel("dropped")
        return None


@worker(queue="reports")
class BuildReport:
    """A sync class worker with the optional callbacks."""

    def process(self, job: Job) -> Record:
        return Record({"rows": len(job.args)})

    def backoff(self, job: Job) -> int:
        return 2 * job.attempt

    def timeout(self, job: Job) -> float | None:
        return 30.0


@job(queue="media")
def resize(path: str, width: int = 800) -> tuple[str, int]:
    """A plain function worker."""
    return path, width


@job(queue="media")
async def transcode(path: str, *, codec: str = "h264") -> str:
    """An async function worker."""
    return f"{path}.{codec}"


async def enqueue_everything(oban: Oban) -> list[Job]:
    built = SendReceipt.new({"to": "ada@example.com"}, scheduled_in=60, priority=1)
    assert_type(built, Job)
    receipt = await SendReceipt.enqueue({"to": "ada@example.com"})
    assert_type(receipt, Job)
    report = await BuildReport.enqueue({"month": 11}, scheduled_in=timedelta(hours=1))
    # Every Job field is a typed per-job option; a dict of them can be passed along.
    options: JobOptions = {"priority": 3, "state": "scheduled", "tags": ["monthly"]}
    again = BuildReport.new({"month": 12}, **options)

    small = resize.new("/tmp/cat.png", width=200)
    assert_type(small, Job)
    large = await resize.enqueue("/tmp/dog.png")
    video = await transcode.enqueue("/tmp/a.mov", codec="av1")

    # The decorated functions stay callable with their own types.
    assert_type(resize("/tmp/x.png"), tuple[str, int])
    assert_type(await transcode("/tmp/b.mov"), str)

    # Inside the caller's transaction: build with new(), insert with the instance.
    in_tx = await oban.enqueue(resize.new("/tmp/tx.png"), conn=None)
    many = await oban.enqueue_many([SendReceipt.new({"n": n}) for n in range(3)])
    return [built, receipt, report, again, small, large, video, in_tx, *many]


async def instances() -> None:
    # A decorated class still builds instances with their own methods. (Under pyright the
    # decorated name is a ``WorkerClass``, not a class, so it cannot be used as an annotation:
    # docs/workers.md, "Type checking".)
    outcome = await SendReceipt().process(Job("x.Y"))
    assert_type(outcome, Snooze | Cancel | None)
    report = BuildReport()
    assert_type(report.backoff(Job("x.Y")), int)
    limits: Any = SendReceipt.RETRIES
    assert limits == 3


async def results(oban: Oban) -> None:
    # Awaitable results (docs/results.md): the value is whatever process returned.
    value = await BuildReport.relay({"month": 11}, timeout=5.0, queue="reports")
    sized = await resize.relay("/tmp/dog.png", width=64)
    receipt = await SendReceipt.enqueue({"to": "ada@example.com"})
    outcome = await oban.wait_for(receipt, timeout=1.0, with_retries=True)
    assert_type(outcome.state, str)
    assert_type(outcome.done, bool)
    many = await oban.await_many([receipt, 42], poll_interval=0.1)
    assert_type(many[0].error, str | None)
    direct = await oban.relay(resize.new("/tmp/cat.png"), timeout=None)
    assert (value, sized, direct) is not None
