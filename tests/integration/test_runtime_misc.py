"""Assorted runtime options: scheduler timezone, @job cron entries, scale_queue options,
drain_queue's instance argument, paused queue defaults and the dispatcher option."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from oban import Job, Oban, worker
from oban.decorators import cron_entries, job
from oban.testing import drain_queue

DRAINED: list[int] = []


@worker(queue="misc_drain_q", oban="MiscDrain")
class MiscDrainWorker:
    async def process(self, job: Job) -> Any:
        DRAINED.append(job.args["n"])
        return None


def _scheduler(oban: Oban) -> Any:
    found = [plugin for plugin in oban._plugins if plugin.name == "scheduler"]
    assert found, f"no scheduler among {[p.name for p in oban._plugins]}"
    return found[0]


async def test_unknown_scheduler_timezone_is_rejected(pool: Any) -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        Oban(pool=pool, name="MiscBadTimezone", scheduler={"timezone": "Mars/Olympus"})


async def test_known_scheduler_timezone_is_accepted(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(name="MiscGoodTimezone", scheduler={"timezone": "Europe/Paris"})
    assert oban.config.scheduler["timezone"] == "Europe/Paris"


async def test_job_decorator_with_cron_is_inserted_by_the_scheduler(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    before = list(cron_entries)

    @job(queue="misc_cron_q", oban="MiscCron", cron="* * * * *")
    def misc_every_minute() -> None:
        return None

    try:
        added = [entry for entry in cron_entries if entry not in before]
        assert len(added) == 1
        entry = added[0]
        assert entry.worker is misc_every_minute.__oban_worker__
        assert entry.expression.source == "* * * * *"

        oban = make_oban(
            name="MiscCron", leadership=True, leader={"interval": 1}, notifier={"type": "poll"}
        )
        await oban.start()
        minute = datetime(2030, 5, 17, 12, 34, tzinfo=UTC)
        ids = await _scheduler(oban).evaluate(minute)
        assert len(ids) == 1

        rows = await sql(
            "SELECT worker, queue, state, meta FROM oban_jobs WHERE id = %s", (ids[0],)
        )
        assert len(rows) == 1
        worker_name, queue, state, meta = rows[0]
        assert worker_name.endswith("misc_every_minute")
        assert queue == "misc_cron_q"
        assert state == "available"
        assert meta["cron_name"] == entry.name
        assert meta["cron_at"] == "2030-05-17T12:34:00Z"

        # The same minute is not inserted twice.
        assert await _scheduler(oban).evaluate(minute) == []
        assert len(await sql("SELECT id FROM oban_jobs")) == 1
    finally:
        for added_entry in [e for e in cron_entries if e not in before]:
            cron_entries.remove(added_entry)


async def test_scale_queue_rejects_burst(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(name="MiscScale", queues={"misc_scale_q": 1}, notifier={"type": "poll"})
    await oban.start()
    with pytest.raises(ValueError, match="burst"):
        # Deliberately not an option of scale_queue: the runtime check is what is tested.
        await oban.scale_queue(queue="misc_scale_q", limit=2, **cast(dict[str, Any], {"burst": 3}))
    info = oban.check_queue("misc_scale_q")
    assert info is not None and info.limit == 1


async def test_drain_queue_takes_the_instance_positionally(
    make_oban: Callable[..., Oban],
) -> None:
    DRAINED.clear()
    oban = make_oban(name="MiscDrain")
    await oban.enqueue_many([MiscDrainWorker.new({"n": n}) for n in range(3)])
    assert "Oban" not in Oban._instances

    counts = await drain_queue("misc_drain_q", oban)

    assert counts["completed"] == 3
    assert sorted(DRAINED) == [0, 1, 2]


async def test_paused_queue_without_limit_gets_limit_ten(make_oban: Callable[..., Oban]) -> None:
    oban = make_oban(
        name="MiscPaused", queues={"misc_paused_q": {"paused": True}}, notifier={"type": "poll"}
    )
    await oban.start()
    info = oban.check_queue("misc_paused_q")
    assert info is not None
    assert info.limit == 10
    assert info.paused is True


async def test_custom_dispatcher_is_rejected(pool: Any) -> None:
    with pytest.raises(ValueError, match="dispatcher"):
        Oban(pool=pool, name="MiscDispatcher", dispatcher=object())
    assert "MiscDispatcher" not in Oban._instances
