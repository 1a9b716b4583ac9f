"""A filter no index serves (a text search, tags, a worker; args and meta on SQLite) over many
jobs is searched in windows of job ids for a bounded time per request: the page ends where
the search did, says so, and "Search older jobs" goes on from there. On both engines.

The window, the time per request and the size from which the dashboard searches this way are
the dashboard's module constants, set small here (a window of 10 ids, one window per request,
from 20 jobs on) so that a few dozen jobs show the behaviour a million would."""

from __future__ import annotations

import html as htmllib
import re

import pytest

from oban import Job, Oban, worker
from oban.web import _app
from tests.web.support import PREFIX, dash, row_ids, run_sql, states_of


@worker(queue="scan_q")
class ScanWorker:
    async def process(self, job: Job) -> None:
        return None


@pytest.fixture
def small_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_app, "SCAN_WINDOW", 10)
    monkeypatch.setattr(_app, "SCAN_ABOVE", 20)
    monkeypatch.setattr(_app, "SCAN_SECONDS", 0.0)


async def _jobs(oban: Oban, count: int, needle_every: int) -> tuple[list[int], list[int]]:
    """``count`` jobs, every ``needle_every``-th with ``"needle"`` in its args; (all ids,
    needle ids), oldest first."""
    jobs = await oban.enqueue_many(
        [
            ScanWorker.new({"n": n, "word": "needle" if n % needle_every == 0 else "hay"})
            for n in range(count)
        ]
    )
    ids = [job.id for job in jobs if job.id is not None]
    assert ids == list(range(ids[0], ids[0] + count)), "ids are not consecutive"
    return ids, [ids[n] for n in range(count) if n % needle_every == 0]


def _more(page: str) -> str | None:
    found = re.search(r'class="more" hx-get="([^"]+)"', page)
    return htmllib.unescape(found.group(1)).removeprefix(PREFIX) if found else None


@pytest.mark.usefixtures("small_scans")
async def test_a_rare_search_ends_each_page_where_it_searched_and_goes_on(oban: Oban) -> None:
    ids, needles = await _jobs(oban, 45, needle_every=15)  # needles at n = 0, 15, 30
    async with dash(oban=oban) as web:
        first = (await web.get("/jobs?q=needle")).text
        pages = [first]
        more = _more(first)
        while more is not None:
            fragment = (await web.get(more, headers={"HX-Request": "true"})).text
            pages.append(fragment)
            more = _more(fragment)
            assert len(pages) < 20, "the search never ends"

    # One window of 10 ids per request: 45 jobs take 5 requests, each showing its window's
    # needles, and together every needle once, newest first.
    assert len(pages) == 5
    assert [job_id for page in pages for job_id in row_ids(page)] == sorted(needles, reverse=True)
    top = ids[-1] + 1
    for page in pages[:-1]:
        assert f'data-searched-to="{top - 10}"' in page
        # The next job to search is top - 11: every job newer than it was searched.
        assert f"searched the jobs newer than #{top - 11}." in page
        assert "Search older jobs" in page
        top -= 10
    assert "data-searched-to" not in pages[-1] and _more(pages[-1]) is None
    # The first window (n = 35..44) holds no needle: the page says it searched, not "none".
    assert row_ids(first) == [] and "No match yet" in first and "No jobs match" not in first
    # What "Search older jobs" brings, rows or not, holds live refresh (it would start over).
    assert all("data-scanned" in page for page in pages[1:])
    assert "data-scanned" not in first


@pytest.mark.usefixtures("small_scans")
async def test_an_indexed_filter_or_a_small_state_is_not_searched_in_windows(oban: Oban) -> None:
    _ids, needles = await _jobs(oban, 45, needle_every=15)
    # 3 jobs discarded: a filter within that state reads them through the state index.
    await run_sql(oban, f"UPDATE oban_jobs SET state = 'discarded' WHERE id IN {tuple(needles)}")
    async with dash(oban=oban) as web:
        small = (await web.get("/jobs?q=needle&state=discarded")).text
        queue_only = (await web.get("/jobs?queue=scan_q")).text
    assert row_ids(small) == sorted(needles, reverse=True)
    assert "data-searched-to" not in small and _more(small) is None
    assert len(row_ids(queue_only)) == 45 and "data-searched-to" not in queue_only


@pytest.mark.usefixtures("small_scans")
async def test_the_matching_bar_and_action_say_how_far_they_searched(oban: Oban) -> None:
    ids, _needles = await _jobs(oban, 45, needle_every=4)  # n = 0, 4, ..., 44: 12 needles
    async with dash(oban=oban) as web:
        bar = (await web.get("/jobs/matching?q=needle", headers={"HX-Request": "true"})).text
        # One window: n = 35..44 holds the needles 36, 40 and 44.
        assert 'data-matching="3+"' in bar
        assert f'data-searched-to="{ids[-1] + 1 - 10}"' in bar
        assert "older ones not searched yet" in bar
        assert "Cancel all 3+" in bar

        # The action searches every job (no time limit): all 12 matches, not the bar's 3.
        cancelled = await web.post("/jobs/cancel/matching", {"q": "needle"})
        assert cancelled.status_code == 200, cancelled.text
        assert "Cancelled 12 of 12 matching jobs." in cancelled.text
    states = await states_of(oban, ids)
    assert {i for i, state in states.items() if state == "cancelled"} == {
        ids[n] for n in range(0, 45, 4)
    }


@pytest.mark.usefixtures("small_scans")
async def test_searching_past_the_oldest_job_says_nothing_older_matches(oban: Oban) -> None:
    ids, _needles = await _jobs(oban, 25, needle_every=100)  # one needle: n = 0, the oldest
    await run_sql(oban, f"UPDATE oban_jobs SET args = '{{}}' WHERE id = {ids[0]}")  # none left
    async with dash(oban=oban) as web:
        page = (await web.get("/jobs?q=needle")).text
        more = _more(page)
        fragments = []
        while more is not None:
            fragments.append((await web.get(more, headers={"HX-Request": "true"})).text)
            more = _more(fragments[-1])
    assert row_ids(page) == [] and len(fragments) == 2
    assert "No older job matches these filters." in fragments[-1]
    assert "data-scanned" in fragments[-1]
