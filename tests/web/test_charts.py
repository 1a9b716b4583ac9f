"""The charts page over HTTP, on both engines: the last hour's throughput and wait/run times per
minute, of every queue or one, as data the page's script draws, and a table per queue."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from oban import Oban
from tests.web.support import PREFIX, dash, seed


def _charts(page: str) -> dict[str, dict[str, Any]]:
    """Each chart's data, by element id, as the page's script reads it."""
    found = re.findall(r'<div class="chart" id="([^"]+)" data-chart=\'([^\']*)\'', page)
    return {name: json.loads(html.unescape(data)) for name, data in found}


def _sums(chart: dict[str, Any]) -> dict[str, float]:
    return {s["label"]: sum(v or 0 for v in s["values"]) for s in chart["series"]}


async def test_the_charts_page_shows_the_last_hour_per_minute(oban: Oban) -> None:
    seeded = await seed(oban)
    async with dash(oban=oban) as web:
        page = await web.get("/charts")
        beta = await web.get("/charts/live?queue=beta", headers={"HX-Request": "true"})
        assets = [
            await web.client.get(src.replace("&amp;", "&"))
            for src in re.findall(r'(?:src|href)="([^"]*/static/[^"]*)"', page.text)
        ]
    assert page.status_code == 200 and beta.status_code == 200
    assert 'aria-current="page">Charts<' in page.text
    assert f'hx-get="{PREFIX}/charts/live"' in page.text
    charts = _charts(page.text)
    assert set(charts) == {"chart-throughput", "chart-latency"}
    throughput, latency = charts["chart-throughput"], charts["chart-latency"]
    assert len(throughput["x"]) == 60 and throughput["x"] == latency["x"]
    assert all(b - a == 60 for a, b in zip(throughput["x"], throughput["x"][1:], strict=False))
    assert throughput["unit"] == "jobs per minute"
    assert _sums(throughput) == {
        "completed": len(seeded.ids["completed"]),
        "discarded": len(seeded.ids["discarded"]),
        "cancelled": len(seeded.ids["cancelled"]),
    }
    # The seed's jobs were due 2 minutes ago, started 30 s ago and finished 5 s ago.
    waits = [v for s in latency["series"] if s["label"] == "wait p50" for v in s["values"] if v]
    runs = [v for s in latency["series"] if s["label"] == "run p95" for v in s["values"] if v]
    assert waits and all(85 < v < 95 for v in waits)
    assert runs and all(20 < v < 30 for v in runs)
    # The table: one row per queue in which jobs finished, then every queue.
    assert re.findall(r'<tr data-queue="([^"]*)"', page.text) == ["beta", "gamma", ""]
    finished = await oban.list_jobs(queue="beta", state=["completed"], limit=100)
    assert _sums(_charts(beta.text)["chart-throughput"])["completed"] == len(finished.jobs)
    assert "<html" not in beta.text
    for asset in assets:
        assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert any("uplot" in str(a.url) for a in assets)


async def test_a_queue_without_jobs_and_an_empty_table(oban: Oban) -> None:
    async with dash(oban=oban) as web:
        page = await web.get("/charts?queue=nothing-here")
    assert page.status_code == 200
    assert "No job finished in the last hour" in page.text
    assert '<option value="nothing-here" selected>' in page.text
    charts = _charts(page.text)
    assert _sums(charts["chart-throughput"]) == {"completed": 0, "discarded": 0, "cancelled": 0}
    assert all(v is None for s in charts["chart-latency"]["series"] for v in s["values"])


async def test_the_charts_page_keeps_the_policy(oban: Oban) -> None:
    async with dash(oban=oban, csp_nonce=lambda request: "n0nce") as web:
        page = (await web.get("/charts")).text
    scripts = re.findall(r"<script[^>]*>", page)
    assert len(scripts) == 4 and all('nonce="n0nce"' in tag and "src=" in tag for tag in scripts)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page)
