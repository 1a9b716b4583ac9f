"""``Oban.crons`` and ``Oban.job_stats`` on both engines: cron entries with their last and next
runs, and finished jobs per bucket and queue with wait and run percentiles.

Jobs are inserted through the public API and finished with one plain UPDATE both engines
accept, at times the test chooses (whole milliseconds, which both engines keep exactly).
Expected figures are worked out here from those times, never from the implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from oban import CronInfo, Job, JobStat, JobStats, Oban, decorators, job, worker
from oban._scheduler import cron_job
from oban.worker import worker_name

#: The instance name the cron workers below belong to (no other test declares any for it).
CRONS = "conf-stats-crons"


@worker(oban=CRONS, queue="reports", priority=2, tags=["nightly"], cron="0 3 * * *")
class NightlyReport:
    async def process(self, job: Job) -> None:
        return None


@worker(oban=CRONS, cron={"expr": "*/15 * * * *", "timezone": "America/New_York"})
class QuarterHour:
    async def process(self, job: Job) -> None:
        return None


@job(oban=CRONS, queue="cleanup", cron="@hourly")
def sweep() -> None:
    return None


def _entry(target: Any) -> Any:
    cls = getattr(target, "__oban_worker__", target)
    [entry] = [e for e in decorators.cron_entries if e.worker is cls]
    return entry


def _stamp(moment: datetime) -> str:
    """A UTC time as text both engines store in a timestamp column (milliseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# ---------------------------------------------------------------------------------------------
# crons
# ---------------------------------------------------------------------------------------------


async def test_crons_lists_each_entry_with_its_last_and_next_run(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(name=CRONS, scheduler={"timezone": "Europe/Paris"})
    nightly = _entry(NightlyReport)
    midnight = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
    runs = [midnight - timedelta(days=days) for days in (1, 2, 3)]
    # The newest run is inserted first: "last" follows meta.cron_at, not the id.
    inserted = await oban.enqueue_many([cron_job(nightly, at) for at in runs])
    await oban.enqueue(NightlyReport.new({}))  # not inserted by the scheduler: no cron meta
    # Another entry's jobs do not count as this one's.
    await oban.enqueue(cron_job(_entry(sweep), datetime.now(UTC).replace(second=0)))

    before = datetime.now(UTC)
    found = await oban.crons()
    after = datetime.now(UTC)

    assert [info.worker for info in found] == [
        worker_name(NightlyReport),
        worker_name(QuarterHour),
        worker_name(sweep),
    ]
    report, quarter, hourly = found
    assert isinstance(report, CronInfo)
    assert report.name == nightly.name and report.expression == "0 3 * * *"
    assert report.queue == "reports" and report.args == {}
    assert report.options["priority"] == 2 and report.options["tags"] == ["nightly"]
    assert "queue" not in report.options
    assert report.timezone == "Europe/Paris"  # the scheduler's, the entry has none
    assert report.last_job is not None and report.last_job.id == inserted[0].id
    assert report.last_job.meta["cron_at"] == runs[0].strftime("%Y-%m-%dT%H:%M:%SZ")
    paris = ZoneInfo("Europe/Paris")
    assert report.next_at in {_next_three_am(moment, paris) for moment in (before, after)}

    assert quarter.timezone == "America/New_York" and quarter.queue == "default"
    assert quarter.last_job is None
    assert quarter.next_at in {_next_quarter(moment) for moment in (before, after)}

    assert hourly.queue == "cleanup" and hourly.expression == "@hourly"
    assert hourly.last_job is not None and hourly.last_job.worker == worker_name(sweep)
    assert hourly.next_at is not None and hourly.next_at.minute == 0


def _next_three_am(moment: datetime, zone: ZoneInfo) -> datetime:
    local = moment.astimezone(zone)
    candidate = local.replace(hour=3, minute=0, second=0, microsecond=0)
    if candidate <= local:
        candidate += timedelta(days=1)  # wall-clock arithmetic: 03:00 the next day
    return candidate.astimezone(UTC)


def _next_quarter(moment: datetime) -> datetime:
    start = moment.replace(second=0, microsecond=0)
    return start + timedelta(minutes=15 - start.minute % 15)


async def test_crons_lists_only_the_instances_own_entries(
    make_oban: Callable[..., Oban],
) -> None:
    assert await make_oban(name="conf-stats-no-crons").crons() == []


# ---------------------------------------------------------------------------------------------
# job_stats
# ---------------------------------------------------------------------------------------------


async def _finish(
    oban: Oban,
    sql: Callable[..., Any],
    queue: str,
    state: str,
    finished: datetime,
    *,
    wait: float | None,
    run: float = 0.0,
) -> int:
    """A job of ``queue`` that ended in ``state`` at ``finished``, having waited ``wait``
    seconds to start (``None``: it never started) and run ``run`` seconds."""
    inserted = await oban.enqueue(Job("tests.StatsWorker", queue=queue))
    assert inserted.id is not None
    attempted = None if wait is None else finished - timedelta(seconds=run)
    scheduled = (attempted or finished) - timedelta(seconds=wait or 0)
    await sql(
        oban,
        f"UPDATE oban_jobs SET state = %s, scheduled_at = %s, attempted_at = %s, "
        f"attempt = %s, {state}_at = %s WHERE id = %s",
        (
            state,
            _stamp(scheduled),
            None if attempted is None else _stamp(attempted),
            0 if attempted is None else 1,
            _stamp(finished),
            inserted.id,
        ),
    )
    return inserted.id


def _group(stats: JobStats, at: datetime | None, queue: str | None) -> JobStat:
    [found] = [g for g in stats.groups if g.at == at and g.queue == queue]
    return found


async def test_job_stats_counts_and_percentiles_per_bucket_and_queue(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    later = minute + timedelta(minutes=1)
    for n in range(1, 5):  # waits 0.1 .. 0.4 s, runs 1 .. 4 s
        at = minute + timedelta(seconds=10 * n)
        await _finish(oban, sql, "alpha", "completed", at, wait=n / 10, run=float(n))
    await _finish(oban, sql, "beta", "discarded", later + timedelta(seconds=10), wait=2.0)
    await _finish(oban, sql, "beta", "cancelled", later + timedelta(seconds=20), wait=None)
    # Finished before the window, or not finished: not counted.
    await _finish(oban, sql, "alpha", "completed", minute - timedelta(hours=2), wait=1.0)
    await oban.enqueue(Job("tests.StatsWorker", queue="alpha"))

    stats = await oban.job_stats()

    assert stats.bucket == 60
    assert stats.until - stats.since == timedelta(hours=1)
    assert stats.since <= minute and datetime.now(UTC) < stats.until
    assert stats.until.second == 0 and not stats.truncated
    assert stats.complete_since == stats.since
    alpha = _group(stats, minute, "alpha")
    assert (alpha.completed, alpha.discarded, alpha.cancelled) == (4, 0, 0)
    # Nearest rank: the p50 of four values is the second, the p95 the fourth.
    assert _close((alpha.wait_p50, alpha.wait_p95), (0.2, 0.4))
    assert _close((alpha.run_p50, alpha.run_p95), (2.0, 4.0))
    assert _group(stats, minute, None) == JobStat(
        at=minute, queue=None, completed=4, **_times(alpha)
    )
    beta = _group(stats, later, "beta")
    assert (beta.completed, beta.discarded, beta.cancelled) == (0, 1, 1)
    # The cancelled job never started: only the discarded one waited; neither completed.
    assert _close((beta.wait_p50, beta.wait_p95), (2.0, 2.0))
    assert (beta.run_p50, beta.run_p95) == (None, None)

    total = stats.total()
    assert (total.completed, total.discarded, total.cancelled, total.finished) == (4, 1, 1, 6)
    # Waits 0.1, 0.2, 0.3, 0.4, 2.0: ranks 3 and 5.
    assert _close((total.wait_p50, total.wait_p95), (0.3, 2.0))
    assert _close((total.run_p50, total.run_p95), (2.0, 4.0))
    assert stats.total("beta").finished == 2 and stats.total("gamma").finished == 0
    assert stats.queues() == ["alpha", "beta"]

    series = stats.series("alpha")
    assert len(series) == 60 and series[0].at == stats.since
    assert [point.at for point in series] == [stats.since + timedelta(minutes=n) for n in range(60)]
    assert {point.at: point.completed for point in series if point.completed} == {minute: 4}
    assert sum(point.finished for point in stats.series()) == 6


def _close(found: tuple[float | None, ...], expected: tuple[float, ...]) -> bool:
    """Whether each of ``found`` is ``expected``'s (both engines keep milliseconds)."""
    return all(f is not None and abs(f - e) < 1e-6 for f, e in zip(found, expected, strict=True))


def _times(stat: JobStat) -> dict[str, Any]:
    return {
        "wait_p50": stat.wait_p50,
        "wait_p95": stat.wait_p95,
        "run_p50": stat.run_p50,
        "run_p95": stat.run_p95,
    }


async def test_job_stats_of_an_empty_table(oban: Oban) -> None:
    stats = await oban.job_stats(window=600, bucket=120)
    assert stats.groups == [] and not stats.truncated
    assert stats.total() == JobStat(at=None, queue=None)
    assert len(stats.series()) == 5
    assert all(point.finished == 0 for point in stats.series())


async def test_job_stats_reads_at_most_limit_jobs_and_says_from_when_it_is_whole(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    for n in range(1, 5):
        await _finish(oban, sql, "alpha", "completed", minute + timedelta(seconds=10 * n), wait=0)
    await _finish(oban, sql, "beta", "discarded", minute + timedelta(seconds=70), wait=0)
    await _finish(oban, sql, "beta", "cancelled", minute + timedelta(seconds=80), wait=None)

    stats = await oban.job_stats(limit=3)

    # The newest three: the cancelled, the discarded and the last completed job (at +40 s),
    # so the figures are whole from the bucket after the one that holds +40 s.
    assert stats.truncated
    assert stats.complete_since == minute + timedelta(minutes=1)
    total = stats.total()
    assert (total.completed, total.discarded, total.cancelled) == (1, 1, 1)
    assert (await oban.job_stats(limit=6)).total().finished == 6
    assert not (await oban.job_stats(limit=7)).truncated


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"window": 100, "bucket": 60}, ValueError),
        ({"bucket": 0}, ValueError),
        ({"window": 2 * 86_400, "bucket": 60}, ValueError),
        ({"limit": 0}, ValueError),
        ({"window": True}, TypeError),
        ({"bucket": 1.5}, TypeError),
    ],
)
async def test_job_stats_checks_its_arguments(
    oban: Oban, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await oban.job_stats(**kwargs)
