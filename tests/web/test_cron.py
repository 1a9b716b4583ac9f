"""The cron page over HTTP, on both engines: every cron entry of the instance, with the job it
inserts, its last run (the newest job it inserted) and its next run."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from oban import Job, Oban, decorators, worker
from oban._scheduler import cron_job
from oban.worker import worker_name
from tests.web.support import PREFIX, dash, row_ids

#: The instance the cron workers below belong to (no other test declares any for it).
NAME = "web-cron-page"


@worker(oban=NAME, queue="digests", max_attempts=3, cron="30 6 * * MON-FRI")
class WeekdayDigest:
    async def process(self, job: Job) -> None:
        return None


@worker(oban=NAME, cron={"expr": "*/10 * * * *", "timezone": "Asia/Tokyo"})
class TenMinutes:
    async def process(self, job: Job) -> None:
        return None


def _row(html: str, name: str) -> str:
    found = re.search(rf'<tr data-cron="{name}">(.*?)</tr>', html, re.S)
    assert found, f"cron {name} is not on the page"
    return found.group(1)


async def test_the_cron_page_lists_every_entry_with_its_last_and_next_run(
    make_oban: Callable[..., Oban],
) -> None:
    oban = make_oban(name=NAME)
    [digest] = [e for e in decorators.cron_entries if e.worker is WeekdayDigest]
    [ten] = [e for e in decorators.cron_entries if e.worker is TenMinutes]
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    older, newest = await oban.enqueue_many(
        [cron_job(digest, minute - timedelta(days=2)), cron_job(digest, minute - timedelta(days=1))]
    )
    await oban.cancel_many_jobs([newest])

    async with dash(oban=oban) as web:
        page = await web.get("/cron")
        live = await web.get("/cron/live", headers={"HX-Request": "true"})
        history = re.search(r'class="history" href="([^"]+)"', page.text)
        assert history is not None
        runs = await web.client.get(history.group(1).replace("&amp;", "&"))

    assert page.status_code == 200 and live.status_code == 200
    assert 'aria-current="page">Cron<' in page.text
    assert f'hx-get="{PREFIX}/cron/live"' in page.text
    row = _row(page.text, digest.name)
    assert "30 6 * * MON-FRI" in row and worker_name(WeekdayDigest) in row
    assert ">digests<" in row and "&#34;max_attempts&#34;: 3" in row and ">UTC<" in row
    # The last run is the newest job the entry inserted, linked, with its state.
    assert f'href="{PREFIX}/jobs/{newest.id}"' in row and "state-cancelled" in row
    assert re.search(r"data-next-run><time title=\"\d{4}-\d\d-\d\d 06:30:00 UTC\">in ", row)
    # "all runs": the jobs page filtered by the entry's name lists both of its jobs.
    assert row_ids(runs.text) == [newest.id, older.id]

    other = _row(live.text, ten.name)
    assert "*/10 * * * *" in other and ">Asia/Tokyo<" in other and ">default<" in other
    assert "none in the table" in other
    assert "<html" not in live.text  # a fragment


async def test_an_instance_without_cron_entries_says_so(make_oban: Callable[..., Oban]) -> None:
    # Its own name: other test modules declare cron workers for "Oban".
    async with dash(oban=make_oban(name="web-cron-none")) as web:
        page = await web.get("/cron")
    assert page.status_code == 200
    assert "No cron entries" in page.text
