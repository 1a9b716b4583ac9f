"""The dashboard's actions over HTTP: each changes the database, and each is refused when it
must be (read-only, a denying resolver or ``can``, no CSRF token, another site), on both
engines."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.requests import Request

from oban import Oban, telemetry
from tests.helpers import eventually
from tests.web.support import PREFIX, dash, row_ids, seed, states_of

JOB_ROUTES = ("/jobs/cancel", "/jobs/retry", "/jobs/delete")
QUEUE_ROUTES = ("/queues/pause", "/queues/resume", "/queues/scale", "/queues/stop")


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """The ``oban.web.action`` events emitted during the test."""
    seen: list[dict[str, Any]] = []
    telemetry.attach("test-web-actions", ["oban.web.action"], lambda name, meta: seen.append(meta))
    try:
        yield seen
    finally:
        telemetry.detach("test-web-actions")


async def test_bulk_actions_change_the_database_and_are_audited(
    oban: Oban, events: list[dict[str, Any]]
) -> None:
    seeded = await seed(oban)
    discarded, available, cancelled = (
        seeded.ids["discarded"],
        seeded.ids["available"][:3],
        seeded.ids["cancelled"],
    )
    async with dash(oban=oban) as web:
        retried = await web.post("/jobs/retry", [("id", i) for i in discarded])
        assert retried.status_code == 200
        assert f"Retried {len(discarded)} of {len(discarded)}" in retried.text
        assert retried.headers["hx-trigger"] == "oban:refresh"
        assert set((await states_of(oban, discarded)).values()) == {"available"}

        cancel = await web.post("/jobs/cancel", [("id", i) for i in available])
        assert "Cancelled 3 of 3" in cancel.text
        assert set((await states_of(oban, available)).values()) == {"cancelled"}

        # A plain form POST (no JavaScript): the token in the form, then back to the list.
        next_page = f"{PREFIX}/jobs?state=cancelled"
        deleted = await web.post(
            "/jobs/delete", [*(("id", i) for i in cancelled), ("next", next_page)], htmx=False
        )
        assert deleted.status_code == 303
        assert deleted.headers["location"] == next_page
        assert set((await states_of(oban, cancelled)).values()) == {None}
        # Only a path within the dashboard is followed.
        elsewhere = await web.post(
            "/jobs/retry", [("id", seeded.completed), ("next", "//evil.example/")], htmx=False
        )
        assert elsewhere.headers["location"] == f"{PREFIX}/jobs"

    assert [(e["action"], e["ids"], e["count"]) for e in events[:3]] == [
        ("retry", sorted(discarded), len(discarded)),
        ("cancel", sorted(available), 3),
        ("delete", sorted(cancelled), len(cancelled)),
    ]
    assert all(e["user"] is None and e["queue"] is None for e in events)


async def test_a_bulk_action_is_capped(oban: Oban) -> None:
    seeded = await seed(oban)
    async with dash(oban=oban) as web:
        too_many = [("id", i) for i in range(1, 1002)]
        response = await web.post("/jobs/retry", too_many)
        assert response.status_code == 400
        assert "At most 1,000 jobs per action" in response.text
        flood = await web.post("/jobs/retry", [("id", i) for i in range(1, 5001)])
        assert flood.status_code == 400
        none = await web.post("/jobs/retry", [])
        assert none.status_code == 400
        junk = await web.post("/jobs/retry", [("id", "1; DROP TABLE oban_jobs")])
        assert junk.status_code == 400
    assert (await states_of(oban, seeded.ids["discarded"])) == {
        i: "discarded" for i in seeded.ids["discarded"]
    }


async def test_job_detail_delete_goes_back_to_the_list(oban: Oban) -> None:
    seeded = await seed(oban)
    async with dash(oban=oban) as web:
        page = (await web.get(f"/jobs/{seeded.completed}")).text
        assert 'name="redirect"' in page
        deleted = await web.post(
            "/jobs/delete", {"id": seeded.completed, "redirect": f"{PREFIX}/jobs"}
        )
    assert deleted.headers["hx-redirect"] == f"{PREFIX}/jobs"
    assert await oban.get_job(seeded.completed) is None


async def test_queue_actions_reach_the_nodes(
    make_oban: Any, oban: Oban, events: list[dict[str, Any]]
) -> None:
    node = make_oban(node="web-node-1", queues={"alpha": 2})
    await node.start()

    def alpha() -> Any:
        return node.check_queue("alpha")

    async with dash(oban=oban, resolver=lambda request: "ada") as web:
        paused = await web.post("/queues/pause", {"queue": "alpha"})
        assert paused.status_code == 200 and "Paused alpha on every node" in paused.text
        await eventually(lambda: alpha().paused, message="alpha paused")
        await web.post("/queues/resume", {"queue": "alpha", "node": "web-node-1"})
        await eventually(lambda: not alpha().paused, message="alpha resumed")
        scaled = await web.post("/queues/scale", {"queue": "alpha", "limit": "7"})
        assert "Scaled alpha to 7" in scaled.text
        await eventually(lambda: alpha().limit == 7, message="alpha scaled to 7")
        # Another node's name: this one is left alone.
        await web.post("/queues/pause", {"queue": "alpha", "node": "elsewhere"})
        bad = await web.post("/queues/scale", {"queue": "alpha", "limit": "0"})
        assert bad.status_code == 400 and "limit" in bad.text
        await web.post("/queues/stop", {"queue": "alpha", "node": "web-node-1"})
        await eventually(lambda: alpha() is None, message="alpha stopped")
    assert [(e["action"], e["queue"], e["node"], e["limit"], e["user"]) for e in events] == [
        ("pause", "alpha", None, None, "ada"),
        ("resume", "alpha", "web-node-1", None, "ada"),
        ("scale", "alpha", None, 7, "ada"),
        ("pause", "alpha", "elsewhere", None, "ada"),
        ("stop", "alpha", "web-node-1", None, "ada"),
    ]


async def test_read_only_renders_no_action_and_refuses_every_post(oban: Oban) -> None:
    seeded = await seed(oban)
    before = await states_of(oban, seeded.all())
    async with dash(oban=oban, read_only=True) as web:
        for path in ("/jobs", f"/jobs/{seeded.discarded}", "/queues"):
            html = (await web.get(path)).text
            assert "hx-post" not in html and 'method="post"' not in html, path
            assert 'name="id"' not in html
            assert "read-only" in html
        for route in JOB_ROUTES + QUEUE_ROUTES:
            refused = await web.post(route, {"id": seeded.discarded, "queue": "beta"})
            assert refused.status_code == 403, route
            assert "read-only" in refused.text
    assert await states_of(oban, seeded.all()) == before


async def test_a_resolver_that_finds_no_user_refuses_everything(oban: Oban) -> None:
    seeded = await seed(oban)

    async def nobody(request: Request) -> None:
        return None

    async with dash(oban=oban, resolver=nobody) as web:
        for path in ("/jobs", "/jobs/live", f"/jobs/{seeded.discarded}", "/queues", "/nodes"):
            assert (await web.get(path)).status_code == 403, path
        refused = await web.client.post(f"{PREFIX}/jobs/retry", data={"id": str(seeded.discarded)})
        assert refused.status_code == 403
    assert (await oban.get_job(seeded.discarded)).state == "discarded"  # type: ignore[union-attr]


async def test_can_decides_each_action(oban: Oban, events: list[dict[str, Any]]) -> None:
    seeded = await seed(oban)
    asked: list[tuple[Any, str]] = []

    def can(user: Any, action: str) -> bool:
        asked.append((user, action))
        return bool(user == "ada" and action == "retry")

    async with dash(oban=oban, resolver=lambda request: "ada", can=can) as web:
        page = (await web.get("/jobs")).text
        assert "action-retry" in page
        assert "action-delete" not in page and "action-cancel" not in page
        queues = (await web.get("/queues")).text
        assert "hx-post" not in queues
        denied = await web.post("/jobs/delete", {"id": seeded.discarded})
        assert denied.status_code == 403 and "may not delete" in denied.text
        assert (await web.post("/queues/pause", {"queue": "beta"})).status_code == 403
        allowed = await web.post("/jobs/retry", {"id": seeded.discarded})
        assert allowed.status_code == 200
    assert (await oban.get_job(seeded.discarded)).state == "available"  # type: ignore[union-attr]
    assert ("ada", "delete") in asked
    assert [(e["action"], e["user"]) for e in events] == [("retry", "ada")]


async def test_every_post_needs_the_csrf_token_and_this_site(oban: Oban) -> None:
    seeded = await seed(oban)
    target = seeded.discarded
    async with dash(oban=oban) as web:
        for route in JOB_ROUTES + QUEUE_ROUTES:
            refused = await web.post(route, {"id": target, "queue": "beta"}, token=False)
            assert refused.status_code == 403, route
            assert "CSRF token" in refused.text
        token = await web.token()
        wrong = await web.client.post(
            f"{PREFIX}/jobs/retry",
            data={"id": str(target)},
            headers={"X-CSRF-Token": token[::-1], "HX-Request": "true"},
        )
        assert wrong.status_code == 403
        # Without the cookie the token is worth nothing.
        fresh = await web.client.post(
            f"{PREFIX}/jobs/retry",
            data={"id": str(target)},
            headers={"X-CSRF-Token": token, "Cookie": "oban_web_csrf="},
        )
        assert fresh.status_code == 403
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            cross = await web.post("/jobs/retry", {"id": target}, headers=headers)
            assert cross.status_code == 403 and "cross-site" in cross.text
        assert (await oban.get_job(target)).state == "discarded"  # type: ignore[union-attr]
        same_site = await web.post(
            "/jobs/retry", {"id": target}, headers={"Origin": "http://testserver"}
        )
        assert same_site.status_code == 200
    assert (await oban.get_job(target)).state == "available"  # type: ignore[union-attr]


async def test_the_csrf_cookie_is_strict_and_scoped_to_the_mount(oban: Oban) -> None:
    async with dash(oban=oban) as web:
        page = await web.get("/jobs")
        cookie = page.headers["set-cookie"]
        token = re.search(r'name="oban-csrf-token" content="([^"]+)"', page.text)
        assert token and f"oban_web_csrf={token.group(1)}" in cookie
        for part in ("HttpOnly", "SameSite=strict", f"Path={PREFIX}"):
            assert part.lower() in cookie.lower(), part
        again = await web.get("/jobs")
        assert "set-cookie" not in again.headers  # one token per session
        assert row_ids(again.text) == []
