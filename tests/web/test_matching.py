"""Actions on every job that matches the jobs page's filters, over HTTP, on both engines: the
right jobs change and no other, at most 1,000 per request, refused in read-only mode, by
``can``, without the CSRF token and from another site, and audited like the other actions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from oban import Job, Oban, telemetry
from tests.web.support import PREFIX, dash, seed, states_of

ROUTES = ("/jobs/retry/matching", "/jobs/cancel/matching", "/jobs/delete/matching")


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    telemetry.attach("test-web-matching", ["oban.web.action"], lambda name, meta: seen.append(meta))
    try:
        yield seen
    finally:
        telemetry.detach("test-web-matching")


def _buttons(html: str) -> list[str]:
    return re.findall(r'data-matching-verb="(\w+)"', html)


def _count(html: str) -> str | None:
    found = re.search(r'data-matching="([^"]*)"', html)
    return found.group(1) if found else None


async def test_the_bar_counts_the_matching_jobs_and_offers_what_applies(oban: Oban) -> None:
    seeded = await seed(oban)
    async with dash(oban=oban) as web:
        page = (await web.get("/jobs?state=retryable")).text
        assert f'hx-get="{PREFIX}/jobs/matching?state=retryable"' in page
        retryable = (await web.get("/jobs/matching?state=retryable", headers=_htmx())).text
        completed = (await web.get("/jobs/matching?state=completed", headers=_htmx())).text
        available = (await web.get("/jobs/matching?state=available", headers=_htmx())).text
        nothing = (await web.get("/jobs/matching?queue=absent", headers=_htmx())).text
        unfiltered = (await web.get("/jobs/matching", headers=_htmx())).text
        plain = (await web.get("/jobs")).text
    assert _count(retryable) == str(len(seeded.ids["retryable"]))
    assert _buttons(retryable) == ["retry", "cancel", "delete"]
    assert "Retry all 2" in retryable and "at most 1,000" in retryable
    # The form carries the filters, so the action acts on what the bar counted.
    assert 'name="state" value="retryable"' in retryable
    assert _count(completed) == "4" and _buttons(completed) == ["retry", "delete"]
    assert _buttons(available) == ["cancel", "delete"]
    assert _count(nothing) == "0" and _buttons(nothing) == []
    assert "No job matches" in nothing
    assert unfiltered.strip() == "" and 'id="matching"' not in plain


def _htmx() -> dict[str, str]:
    return {"HX-Request": "true"}


async def test_an_action_on_all_matching_jobs_changes_those_and_no_other(
    oban: Oban, events: list[dict[str, Any]]
) -> None:
    seeded = await seed(oban)
    everything = seeded.all()
    before = await states_of(oban, everything)
    async with dash(oban=oban) as web:
        retried = await web.post("/jobs/retry/matching", {"state": "discarded"})
        assert retried.status_code == 200, retried.text
        assert "Retried 2 of 2 matching jobs." in retried.text
        assert retried.headers["hx-trigger"] == "oban:refresh"
        after_retry = await states_of(oban, everything)
        assert {i for i in everything if after_retry[i] != before[i]} == set(
            seeded.ids["discarded"]
        )
        assert {after_retry[i] for i in seeded.ids["discarded"]} == {"available"}

        # Every job of queue gamma that is not finished; finished ones and beta's stay.
        gamma = {job.id for job in (await oban.list_jobs(queue="gamma", limit=100)).jobs if job.id}
        cancelled = await web.post("/jobs/cancel/matching", {"queue": "gamma"})
        assert cancelled.status_code == 200
        after_cancel = await states_of(oban, everything)
        unfinished = ("available", "scheduled", "retryable", "suspended", "executing")
        expected = {i for i in gamma if after_retry[i] in unfinished}
        assert expected and {i for i in everything if after_cancel[i] != after_retry[i]} == expected
        assert {after_cancel[i] for i in expected} == {"cancelled"}

        # args and state together, as a plain form post (no JavaScript).
        listed = (await oban.list_jobs(args={"plan": "pro"}, limit=100)).jobs
        pro = {job.id for job in listed if job.id}
        back = f"{PREFIX}/jobs?state=cancelled"
        deleted = await web.post(
            "/jobs/delete/matching",
            {"state": "cancelled", "args": "plan=pro", "next": back},
            htmx=False,
        )
        assert deleted.status_code == 303 and deleted.headers["location"] == back
        after_delete = await states_of(oban, everything)
        gone = {i for i in everything if after_delete[i] is None}
        assert gone == {i for i in pro if after_cancel[i] == "cancelled"}
        assert gone and all(after_delete[i] == after_cancel[i] for i in set(everything) - gone)

    assert [(e["action"], e["filters"], e["count"]) for e in events] == [
        ("retry", "state=discarded", 2),
        ("cancel", "queue=gamma", len(expected)),
        ("delete", "args=plan%3Dpro&state=cancelled", len(gone)),
    ]
    assert sorted(events[0]["ids"]) == sorted(seeded.ids["discarded"])
    assert all(e["queue"] is None and e["user"] is None for e in events)


async def test_an_action_on_all_matching_jobs_is_capped_at_1000_newest_first(
    oban: Oban,
) -> None:
    inserted = await oban.enqueue_many(
        [Job("tests.web.workers.Mailer", args={"n": n}, queue="flood") for n in range(1_005)]
    )
    ids = sorted(job.id for job in inserted if job.id is not None)
    async with dash(oban=oban) as web:
        bar = (await web.get("/jobs/matching?queue=flood", headers=_htmx())).text
        assert _count(bar) == "1000+" and "Cancel all 1,000+" in bar
        first = await web.post("/jobs/cancel/matching", {"queue": "flood"})
        assert "Cancelled 1,000 of 1,000 matching jobs." in first.text
        assert "More match" in first.text
        states = await states_of(oban, ids)
        assert [i for i in ids if states[i] == "available"] == ids[:5]  # the oldest five
        second = await web.post("/jobs/cancel/matching", {"queue": "flood"})
        assert "Cancelled 5 of 5 matching jobs." in second.text
        assert "More match" not in second.text
        # Cancelled now: a cancel finds nothing it applies to.
        third = await web.post("/jobs/cancel/matching", {"queue": "flood"})
        assert "Cancelled 0 of 0 matching jobs." in third.text
    assert set((await states_of(oban, ids)).values()) == {"cancelled"}


async def test_read_only_renders_no_bar_and_refuses_the_actions(oban: Oban) -> None:
    seeded = await seed(oban)
    before = await states_of(oban, seeded.all())
    async with dash(oban=oban, read_only=True) as web:
        page = (await web.get("/jobs?state=discarded")).text
        assert 'id="matching"' not in page
        bar = (await web.get("/jobs/matching?state=discarded", headers=_htmx())).text
        assert "<form" not in bar
        for route in ROUTES:
            refused = await web.post(route, {"state": "discarded"})
            assert refused.status_code == 403, route
            assert "read-only" in refused.text
    assert await states_of(oban, seeded.all()) == before


async def test_can_and_the_csrf_checks_apply(oban: Oban, events: list[dict[str, Any]]) -> None:
    seeded = await seed(oban)
    before = await states_of(oban, seeded.all())

    def can(user: Any, action: str) -> bool:
        return action == "retry"

    async with dash(oban=oban, resolver=lambda request: "ada", can=can) as web:
        bar = (await web.get("/jobs/matching?state=discarded", headers=_htmx())).text
        assert _buttons(bar) == ["retry"]
        denied = await web.post("/jobs/delete/matching", {"state": "discarded"})
        assert denied.status_code == 403 and "may not delete" in denied.text
        no_token = await web.post("/jobs/retry/matching", {"state": "discarded"}, token=False)
        assert no_token.status_code == 403 and "CSRF token" in no_token.text
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            cross = await web.post("/jobs/retry/matching", {"state": "discarded"}, headers=headers)
            assert cross.status_code == 403 and "cross-site" in cross.text
        unfiltered = await web.post("/jobs/retry/matching", {})
        assert unfiltered.status_code == 400 and "needs a filter" in unfiltered.text
        bad = await web.post("/jobs/retry/matching", {"state": "finished"})
        assert bad.status_code == 400 and "unknown state" in bad.text
        assert await states_of(oban, seeded.all()) == before
        allowed = await web.post("/jobs/retry/matching", {"state": "discarded"})
        assert allowed.status_code == 200
    assert [(e["action"], e["user"], e["count"]) for e in events] == [("retry", "ada", 2)]
