"""The dashboard's pages and fragments over HTTP, mounted under a prefix, on both engines."""

from __future__ import annotations

import re
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from oban import Job, Oban
from oban.web import create_app
from tests.helpers import eventually, spy
from tests.web.support import BIG, PREFIX, RECORDED, dash, row_ids, seed

LINK = re.compile(r'(?:href|src|action|formaction|hx-get|hx-post)="([^"]*)"')


def links(html: str) -> list[str]:
    return [link.replace("&amp;", "&") for link in LINK.findall(html)]


async def test_every_page_and_fragment_answers_under_the_prefix(oban: Oban) -> None:
    seeded = await seed(oban)
    async with dash(oban=oban) as web:
        root = await web.get("/")
        assert root.status_code == 303
        assert root.headers["location"] == f"{PREFIX}/jobs"
        paths = [
            "/jobs",
            "/jobs/live",
            f"/jobs/{seeded.discarded}",
            f"/jobs/{seeded.discarded}/live",
            "/queues",
            "/queues/live",
            "/nodes",
            "/nodes/live",
            "/cron",
            "/cron/live",
            "/charts",
            "/charts/live?queue=beta",
            "/jobs/matching?state=discarded",
        ]
        for path in paths:
            response = await web.get(path)
            assert response.status_code == 200, (path, response.text[:300])
            assert response.headers["content-type"].startswith("text/html")
            # Every link stays under the mount point: none is absolute to the host's root.
            for link in links(response.text):
                assert link.startswith(f"{PREFIX}/"), (path, link)
        for page in [await web.get("/jobs"), await web.get("/charts")]:
            for asset in re.findall(r'(?:src|href)="([^"]*/static/[^"]*)"', page.text):
                served = await web.client.get(asset.replace("&amp;", "&"))
                assert served.status_code == 200, asset
                assert "immutable" in served.headers["cache-control"]
        assert (await web.get("/static/../_app.py")).status_code == 404
        assert (await web.get("/health")).json() == {"status": "ok"}
        assert (await web.get("/health?db=1")).json() == {"status": "ok", "database": "ok"}


async def test_counts_by_state_and_queue_in_the_sidebar(oban: Oban) -> None:
    seeded = await seed(oban)
    async with dash(oban=oban) as web:
        html = (await web.get("/jobs")).text
    for state, ids in seeded.ids.items():
        assert f'data-count="{state}">{len(ids)}<' in html, state
    assert f'data-count="all">{len(seeded.all())}<' in html
    assert ">beta<" in html and ">gamma<" in html


async def test_the_list_filters_by_what_the_url_says(oban: Oban) -> None:
    seeded = await seed(oban)

    async def listed(query: str) -> list[int]:
        response = await web.get(f"/jobs?{query}")
        assert response.status_code == 200, response.text[:500]
        # The live fragment polls with the same filters.
        assert f'hx-get="{PREFIX}/jobs/live?{query.replace("&", "&amp;")}"' in response.text
        return row_ids(response.text)

    async with dash(oban=oban) as web:
        assert await listed("state=discarded") == sorted(seeded.ids["discarded"], reverse=True)
        assert set(await listed("state=completed%2Cdiscarded")) == set(
            seeded.ids["completed"] + seeded.ids["discarded"]
        )
        gamma = await jobs(oban, await listed("queue=gamma"))
        assert gamma and all(job.queue == "gamma" for job in gamma)
        billing = await jobs(oban, await listed("worker=tests.web.workers.Billing"))
        assert seeded.big in [job.id for job in billing]
        assert all(job.worker == "tests.web.workers.Billing" for job in billing)
        urgent = await jobs(oban, await listed("tags=urgent"))
        assert urgent and all("urgent" in job.tags for job in urgent)
        # args as path=value pairs: nested dicts, JSON values, several pairs at once.
        seventh = (await oban.list_jobs(args={"user": {"id": 7}})).jobs
        assert await listed("args=user.id%3D7") == [seventh[0].id]
        pro_three = await listed("args=user.id%3D3+plan%3Dpro")
        assert pro_three == [j.id for j in (await oban.list_jobs(args={"user": {"id": 3}})).jobs]
        assert await listed("args=user.id%3D3+plan%3Dfree") == []
        assert await listed(f"args=nested.big%3D%5B{BIG}%5D") == [seeded.big]
        assert set(await listed("meta=recorded%3Dtrue")) == set(seeded.ids["completed"])
        # Text search: a piece of the worker name or of the args.
        assert set(await listed("q=MAILER")) == {
            j.id for j in (await oban.list_jobs(worker="tests.web.workers.Mailer")).jobs
        }
        assert await listed("q=%22job+17%22") == [
            j.id for j in (await oban.list_jobs(args={"note": "job 17"})).jobs
        ]

        # What cannot be a filter says why, and lists nothing.
        bad_state = await web.get("/jobs?state=finished")
        assert bad_state.status_code == 400
        assert "unknown state" in bad_state.text and row_ids(bad_state.text) == []
        bad_args = await web.get("/jobs?args=user.id")
        assert bad_args.status_code == 400
        assert "path=value" in bad_args.text


async def jobs(oban: Oban, ids: list[int]) -> list[Job]:
    found = (await oban.list_jobs(ids=ids, limit=1000)).jobs
    assert sorted(job.id for job in found if job.id) == sorted(ids)
    return found


async def test_load_more_follows_the_cursor_and_live_keeps_the_rows_shown(oban: Oban) -> None:
    inserted = await oban.enqueue_many(
        Job("tests.web.workers.Mailer", args={"n": n}, queue="paging") for n in range(120)
    )
    expected = sorted((job.id for job in inserted if job.id is not None), reverse=True)
    async with dash(oban=oban) as web:
        page = (await web.get("/jobs?queue=paging")).text
        shown = row_ids(page)
        while True:
            more = re.search(r'class="more" hx-get="([^"]+)"', page)
            if more is None:
                break
            assert "queue=paging" in more.group(1) and "after=" in more.group(1)
            page = (await web.client.get(more.group(1).replace("&amp;", "&"))).text
            shown += row_ids(page)
        assert shown == expected  # newest first, every job once
        live = await web.get("/jobs/live?queue=paging&limit=120")
        assert row_ids(live.text) == expected
        assert 'hx-swap-oob="true"' in live.text  # the sidebar's counts come along
        bad = await web.get("/jobs/more?after=not-a-cursor", headers={"HX-Request": "true"})
        assert bad.status_code == 400


async def test_job_detail_shows_timeline_json_errors_and_the_recorded_result(
    oban: Oban,
) -> None:
    seeded = await seed(oban)
    async with dash(oban=oban) as web:
        discarded = (await web.get(f"/jobs/{seeded.discarded}")).text
        completed = (await web.get(f"/jobs/{seeded.completed}")).text
        big = (await web.get(f"/jobs/{seeded.big}")).text
        missing = await web.get("/jobs/999999999")
        huge = await web.get(f"/jobs/{2**70}")
    for label in ("Inserted", "Attempt 1 failed", "Attempt 1 started on web-node", "Discarded"):
        assert label in discarded, label
    assert "RuntimeError: card declined" in discarded
    assert "Traceback (most recent call last)" in discarded
    assert "Completed" in completed
    recorded = re.search(r'id="job-recorded"><code>(.*?)</code>', completed, re.S)
    assert recorded is not None
    assert "&#34;total&#34;: " + str(RECORDED["total"]) in recorded.group(1)
    # Rendered by Python: exactly the stored integer, which a JavaScript number cannot hold.
    assert str(BIG) in big and str(BIG - 1) not in big
    assert missing.status_code == 404 and "no job" in missing.text
    assert huge.status_code == 404


async def test_queues_and_nodes_pages_list_every_node(make_oban: Any, oban: Oban) -> None:
    node = make_oban(node="web-node-1", queues={"alpha": 3, "omega": {"limit": 2, "paused": True}})
    await node.start()
    await oban.enqueue(Job("tests.web.workers.Mailer", queue="omega"))
    await eventually(lambda: _names(oban), message="the node's producer rows")
    async with dash(oban=oban) as web:
        queues = (await web.get("/queues")).text
        nodes = (await web.get("/nodes")).text
    alpha = _section(queues, "alpha")
    assert "web-node-1" in alpha and "0 / 3" in alpha and "running" in alpha
    omega = _section(queues, "omega")
    assert "paused" in omega and "Resume" in omega
    assert 'data-node="web-node-1"' in nodes
    assert "alpha" in nodes and "omega" in nodes


async def _names(oban: Oban) -> bool:
    return {info.queue for info in await oban.queues()} == {"alpha", "omega"}


def _section(html: str, queue: str) -> str:
    found = re.search(rf'<tbody class="queue" data-queue="{queue}">(.*?)</tbody>', html, re.S)
    assert found, f"queue {queue} is not on the page"
    return found.group(1)


async def test_no_inline_script_or_style_and_a_strict_policy(oban: Oban) -> None:
    seeded = await seed(oban)
    async with dash(oban=oban) as web:
        pages = [
            await web.get(path)
            for path in (
                "/jobs",
                f"/jobs/{seeded.discarded}",
                "/queues",
                "/nodes",
                "/cron",
                "/charts",
                "/jobs/matching?state=discarded",
            )
        ]
    for page in pages:
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "an inline script"
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page.text), "inline style or handler"
    async with dash(oban=oban, csp_nonce=lambda request: "n0nce") as web:
        page = await web.get("/jobs")
    assert "content-security-policy" not in page.headers  # the host sends its own
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert len(scripts) == 2 and all('nonce="n0nce"' in tag for tag in scripts)


async def test_an_instance_named_but_not_created_yet_is_a_503(oban: Oban) -> None:
    async with dash(oban="Later") as web:
        response = await web.get("/jobs")
        assert response.status_code == 503
        assert "Later" in response.text
        assert (await web.get("/health?db=1")).status_code == 503


async def test_mounted_in_a_plain_asgi_dispatcher_as_in_django(oban: Oban) -> None:
    """The recipe of docs/web.md for Django's ASGI application: a path dispatcher."""
    dashboard = create_app(oban)
    other = Starlette(routes=[])
    other.add_route("/{path:path}", lambda request: PlainTextResponse("django"))

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/oban" or path.startswith("/oban/")):
            scope = {**scope, "root_path": scope.get("root_path", "") + "/oban"}
            await dashboard(scope, receive, send)
        else:
            await other(scope, receive, send)

    import httpx

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        page = await client.get("/oban/jobs")
        assert page.status_code == 200
        assert all(link.startswith("/oban/") for link in links(page.text))
        assert (await client.get("/admin/")).text == "django"


async def test_an_empty_state_or_queue_is_answered_from_the_counts(oban: Oban) -> None:
    # Listing a state or queue without jobs would walk the whole table to find nothing: the
    # counts (exact for absent pairs) answer it instead.
    await oban.enqueue(Job("app.Web", queue="present"))
    calls = spy(oban, "list_jobs")
    async with dash(oban=oban) as web:
        assert (await web.get("/jobs?state=suspended")).status_code == 200
        assert (await web.get("/jobs?queue=absent")).status_code == 200
        assert calls == []
        page = await web.get("/jobs?queue=present")
        assert page.status_code == 200 and len(calls) == 1
