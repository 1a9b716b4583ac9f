"""The dashboard mounted in a Litestar application, with the recipe of docs/web.md, on both
engines: pages, links, static files, fragments and an action all work under the mount point,
and the application's own routes beside it."""

from __future__ import annotations

import re
from typing import Any

import httpx
from litestar import Litestar, asgi, get
from litestar.types import Receive, Scope, Send

from oban import Oban
from oban.web import create_app
from tests.web.support import seed, states_of

LINK = re.compile(r'(?:href|src|action|formaction|hx-get|hx-post)="([^"]*)"')


def litestar_app(oban: Oban) -> Litestar:
    """docs/web.md's recipe, as it is written there."""
    # (Any: Litestar's ASGI types and Starlette's are not the same to a type checker.)
    dashboard: Any = create_app(oban)

    @asgi("/admin/oban", is_mount=True, copy_scope=True)
    async def oban_dashboard(scope: Scope, receive: Receive, send: Send) -> None:
        # Litestar gives a mounted app the path after the mount point, with a "/" added, and
        # no root_path: the dashboard builds its links from root_path.
        root = scope.get("root_path", "") + "/admin/oban"
        path = root + (scope["path"].rstrip("/") or "/")
        await dashboard({**scope, "root_path": root, "path": path}, receive, send)

    @get("/")
    async def home() -> str:
        return "the application"

    return Litestar(route_handlers=[oban_dashboard, home])


async def test_the_dashboard_mounted_in_litestar(oban: Oban) -> None:
    seeded = await seed(oban)
    app: Any = litestar_app(oban)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        root = await client.get("/admin/oban")
        assert root.status_code == 303 and root.headers["location"] == "/admin/oban/jobs"
        first = await client.get("/admin/oban/jobs")
        # The CSRF cookie is scoped to the mount point.
        assert "path=/admin/oban;" in first.headers["set-cookie"].lower()
        for path in ("/jobs", f"/jobs/{seeded.discarded}", "/queues", "/cron", "/charts"):
            page = await client.get(f"/admin/oban{path}")
            assert page.status_code == 200, (path, page.text[:300])
            for link in LINK.findall(page.text):
                assert link.startswith("/admin/oban/"), (path, link)
        page = await client.get("/admin/oban/jobs?state=discarded")
        for asset in re.findall(r'(?:src|href)="([^"]*/static/[^"]*)"', page.text):
            assert (await client.get(asset.replace("&amp;", "&"))).status_code == 200, asset
        live = await client.get(
            "/admin/oban/jobs/live?state=discarded", headers={"HX-Request": "true"}
        )
        assert live.status_code == 200 and f'data-job-id="{seeded.discarded}"' in live.text

        token = re.search(r'name="oban-csrf-token" content="([^"]+)"', page.text)
        assert token is not None
        retried = await client.post(
            "/admin/oban/jobs/retry/matching",
            data={"state": "discarded"},
            headers={"X-CSRF-Token": token.group(1), "HX-Request": "true"},
        )
        assert retried.status_code == 200, retried.text
        assert (await client.get("/")).text == "the application"
    assert set((await states_of(oban, seeded.ids["discarded"])).values()) == {"available"}
