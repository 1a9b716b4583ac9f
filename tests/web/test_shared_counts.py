"""The dashboard's job counts are shared by its requests (``create_app(counts_max_age=)``): a
count up to ``counts_max_age`` old is reused, an older one is shown while a fresh one runs in
the background, one older than ten times that is waited for, and an action through the
dashboard forgets it. On both engines, with real short intervals."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from oban import Job, Oban, worker
from oban.web import create_app
from tests.web.support import dash

MAX_AGE = 0.3


@worker(queue="counted")
class CountedWorker:
    async def process(self, job: Job) -> None:
        return None


def _available(html: str) -> int:
    found = re.search(r'data-count="available">([\d,]+)<', html)
    assert found, html[:400]
    return int(found.group(1).replace(",", ""))


def _count_calls(oban: Oban, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``count_jobs`` call the dashboard makes, appended as it starts."""
    calls: list[float] = []
    real = oban.count_jobs

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(asyncio.get_running_loop().time())
        return await real(*args, **kwargs)

    monkeypatch.setattr(oban, "count_jobs", counting)
    return calls


async def test_a_count_is_shared_then_refreshed_behind_the_page(
    oban: Oban, monkeypatch: pytest.MonkeyPatch
) -> None:
    await oban.enqueue_many([CountedWorker.new({"n": n}) for n in range(3)])
    calls = _count_calls(oban, monkeypatch)
    async with dash(oban=oban, counts_max_age=MAX_AGE) as web:
        first = (await web.get("/jobs")).text
        again = (await web.get("/jobs?state=available")).text
        assert len(calls) == 1, "a count younger than counts_max_age was not reused"
        assert _available(first) == _available(again) == 3

        await oban.enqueue(CountedWorker.new({"n": 3}))
        await asyncio.sleep(MAX_AGE + 0.1)
        # Older than counts_max_age: the page shows the count it has and counts anew behind it.
        stale = (await web.get("/jobs")).text
        assert _available(stale) == 3
        assert len(calls) == 2, "no background count was started"
        await asyncio.sleep(0.2)
        fresh = (await web.get("/jobs")).text
        assert _available(fresh) == 4, "the background count did not replace the old one"
        assert len(calls) == 2


async def test_requests_that_wait_for_a_count_share_one(
    oban: Oban, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_calls(oban, monkeypatch)
    async with dash(oban=oban, counts_max_age=MAX_AGE) as web:
        pages = await asyncio.gather(*(web.get("/jobs") for _ in range(5)))
        assert [page.status_code for page in pages] == [200] * 5
        assert len(calls) == 1, "concurrent first requests each counted"
        jobs = await oban.enqueue_many([CountedWorker.new({})])
        await web.post("/jobs/cancel", [("id", jobs[0].id)])  # forgets the count
        calls.clear()
        await asyncio.gather(*(web.get("/jobs") for _ in range(5)))
        assert len(calls) == 1, "concurrent requests after an action each counted"


async def test_a_count_older_than_ten_max_ages_is_waited_for(
    oban: Oban, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_calls(oban, monkeypatch)
    async with dash(oban=oban, counts_max_age=0.05) as web:
        assert _available((await web.get("/jobs")).text) == 0
        await oban.enqueue(CountedWorker.new({}))
        await asyncio.sleep(0.05 * 10 + 0.1)
        assert _available((await web.get("/jobs")).text) == 1, "a very old count was shown"
        assert len(calls) == 2


async def test_an_action_forgets_the_count(oban: Oban, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = await oban.enqueue_many([CountedWorker.new({"n": n}) for n in range(4)])
    async with dash(oban=oban, counts_max_age=60) as web:
        assert _available((await web.get("/jobs")).text) == 4
        cancelled = await web.post("/jobs/cancel", [("id", jobs[0].id), ("id", jobs[1].id)])
        assert cancelled.status_code == 200, cancelled.text
        assert _available((await web.get("/jobs")).text) == 2
        matching = await web.post("/jobs/cancel/matching", {"state": "available"})
        assert matching.status_code == 200, matching.text
        assert _available((await web.get("/jobs")).text) == 0


async def test_max_age_zero_counts_on_every_request(
    oban: Oban, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_calls(oban, monkeypatch)
    async with dash(oban=oban, counts_max_age=0) as web:
        await web.get("/jobs")
        await oban.enqueue(CountedWorker.new({}))
        assert _available((await web.get("/jobs")).text) == 1
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (3_601, ValueError), ("1", TypeError), (True, TypeError)]
)
def test_counts_max_age_is_checked(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="counts_max_age"):
        create_app("Oban", counts_max_age=value)


async def test_an_action_does_not_trust_an_old_count_that_says_nothing_matches(oban: Oban) -> None:
    async with dash(oban=oban, counts_max_age=60) as web:
        assert _available((await web.get("/jobs")).text) == 0  # shared: nothing available
        await oban.enqueue_many([CountedWorker.new({"n": n}) for n in range(2)])
        cancelled = await web.post("/jobs/cancel/matching", {"state": "available"})
        assert cancelled.status_code == 200, cancelled.text
        assert "Cancelled 2 of 2 matching jobs." in cancelled.text
