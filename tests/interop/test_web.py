"""The kit's Oban Web, seen in a real browser, lists a Python node's queues.

An Elixir node serves Oban Web (``exapp/scripts/web_node.exs``: the kit's ``web.exs`` with
node.exs's arguments) and leads; a Python node started with ``metrics=True`` gossips the
checks of its two queues, which Oban Met stores. Debian's Chromium, driven by Playwright,
opens the queues page filtered on the Python node and waits until the live page lists
exactly its queues, each with its running jobs over its limit, one node, and the scheduled
count that Oban Met's reporter on the Elixir leader made; then a queue's own page, which
names the Python node (``py-worker-1/oban``) with its executing count and limit. Both pages
are screenshotted (full page) into the test's ``tmp_path``; with ``OBAN_UPDATE_SCREENSHOTS=1``
the queues page also goes to ``docs/images/oban-web-python-queues.png``, which docs/elixir.md
shows.

Chromium (Debian's ``chromium``) and Python Playwright (the ``test`` extra) are needed:
without either the test fails, saying how to install it. Playwright's own browser download
(``playwright install``) is never used.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from oban import Oban
from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.helpers import eventually
from tests.interop.conftest import Mixed
from tests.interop.elixir import REPO_ROOT, ElixirNode
from tests.interop.support import with_output
from tests.interop.workers import echo

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

#: Debian's Chromium (its launcher script); Playwright drives it instead of a browser of its own.
UPDATE_VARIABLE = "OBAN_UPDATE_SCREENSHOTS"
# Read now: the session fixture in tests/conftest.py removes OBAN_* variables before any
# fixture of ours runs.
UPDATE_SCREENSHOTS = os.environ.get(UPDATE_VARIABLE) == "1"
DOCS_IMAGE = REPO_ROOT / "docs" / "images" / "oban-web-python-queues.png"

#: The Python node and its queues: distinctive names, limits and running jobs.
PY_NODE = "py-worker-1"
QUEUES = {"py_media": 6, "py_mailers": 10}
RUNNING = {"py_media": 3, "py_mailers": 1}
SCHEDULED = {"py_mailers": 4}
#: A queue of the Elixir node that serves Oban Web: the node filter leaves it out.
EX_QUEUE = "ex_reports"

WEB_SECONDS = 300
PAGE_TIMEOUT_MS = 30_000
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 1440, 400  # the full-page shot grows to the content


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright."""
    require_browser("test_web needs a browser")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _serving(web: ElixirNode, url: str) -> bool:
    """Whether Oban Web answers ``url``; an error when its node has exited."""
    if not web.running:
        raise AssertionError(f"the Oban Web node exited ({web.proc.returncode})")
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def _screenshot(page: Page, path: Path) -> bytes:
    """A full-page PNG of ``page``, saved at ``path``."""
    png = await page.screenshot(path=str(path), full_page=True, animations="disabled")
    assert len(png) > 10_000, f"{path} ({len(png)} bytes) is too small to show anything"
    return png


def _update_docs_image(png: bytes) -> None:
    DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    DOCS_IMAGE.write_bytes(png)


async def _start_python_node(make_oban: Callable[..., Oban]) -> tuple[Oban, list[int]]:
    """The Python node, with its sleeping jobs running and some scheduled ones waiting."""
    py = make_oban(name="Oban", node=PY_NODE, queues=QUEUES, metrics=True, leadership=False)
    await py.start()
    sleepers: list[int] = []
    for queue, count in RUNNING.items():
        for n in range(count):
            job = await py.enqueue(echo({"mode": "sleep", "ms": 120_000, "n": n}, queue=queue))
            assert job.id is not None
            sleepers.append(job.id)
    later = datetime.now(UTC) + timedelta(hours=1)
    for queue, count in SCHEDULED.items():
        for n in range(count):
            await py.enqueue(echo({"n": n}, queue=queue, scheduled_at=later))

    def running() -> set[int]:
        infos = [py.check_queue(queue) for queue in QUEUES]
        return {job_id for info in infos if info is not None for job_id in info.running}

    await eventually(
        lambda: running() == set(sleepers), timeout=10, message="the Python sleepers running"
    )
    return py, sleepers


async def _check_pages(browser: Browser, base: str, tmp_path: Path) -> bytes:
    """Wait for the queues page, then a queue's page, to show the Python node's queues;
    screenshot both into ``tmp_path`` and return the queues page's picture."""
    from playwright.async_api import expect

    context = await browser.new_context(
        viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT}, color_scheme="light"
    )
    try:
        page = await context.new_page()
        # Unfiltered, the list has the Elixir node's queue too.
        await page.goto(f"{base}/queues", wait_until="networkidle")
        await expect(page.locator(f"#queue-{EX_QUEUE}")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        # Filtered on the Python node (the filter matches the gossiped checks' node): its
        # queues alone. A live page: rows appear once Oban Met has stored the gossiped
        # checks, and the pending counts once its reporter has counted the jobs.
        await page.goto(f"{base}/queues?nodes={PY_NODE}", wait_until="networkidle")
        await expect(page.locator("#search-filter-nodes")).to_have_text(f"nodes:{PY_NODE}")
        for queue, limit in QUEUES.items():
            row = page.locator(f"#queue-{queue}")
            await expect(row.locator("[rel=name]")).to_have_text(queue, timeout=PAGE_TIMEOUT_MS)
            await expect(row.locator("[rel=utilization]")).to_contain_text(
                f"{RUNNING[queue]}/{limit}", timeout=PAGE_TIMEOUT_MS
            )
            await expect(row.locator("[rel=nodes]")).to_have_text("1")
            await expect(page.locator(f"#{queue}-sched")).to_have_text(
                str(SCHEDULED.get(queue, 0)), timeout=PAGE_TIMEOUT_MS
            )
        await expect(page.locator(f"#queue-{EX_QUEUE}")).to_have_count(0)
        await expect(page.locator("#queues-table li[id^=queue-]")).to_have_count(len(QUEUES))
        shot = await _screenshot(page, tmp_path / DOCS_IMAGE.name)

        # A queue's own page lists its instances: the Python node, running 3 of its limit.
        await page.locator("#queue-py_media a").first.click()
        await page.wait_for_url(f"{base}/queues/py_media")
        instance = page.locator("tr", has_text=f"{PY_NODE}/oban")
        await expect(instance).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        cells = instance.locator("td")  # node/name, activity, executing, limit, started, actions
        await expect(cells.nth(0)).to_have_text(f"{PY_NODE}/oban")
        await expect(cells.nth(2)).to_have_text(str(RUNNING["py_media"]), timeout=PAGE_TIMEOUT_MS)
        await expect(cells.nth(3)).to_have_text(str(QUEUES["py_media"]))
        await _screenshot(page, tmp_path / "oban-web-python-queue-detail.png")
        return shot
    finally:
        await context.close()


async def test_oban_web_shows_a_python_nodes_queues(browser: Browser, mixed: Mixed) -> None:
    elixir_kit, database, _pool, make_oban, node_log, tmp_path = mixed.parts()
    port = _free_port()
    base = f"http://127.0.0.1:{port}/oban"
    # Oban Web's node starts first and leads alone (the Python node stays out of the
    # election): Oban Met's reporter, which counts each queue's pending jobs, runs on the
    # leader only, and Python nodes gossip checks, not counts.
    async with elixir_kit.node(
        f"{EX_QUEUE}:3",
        database=database,
        log=node_log("web"),
        name="web-dash",
        script="web_node.exs",
        env={"PORT": str(port)},
        seconds=WEB_SECONDS,
    ) as web:
        with with_output(web.output):
            await eventually(
                lambda: _serving(web, base),
                timeout=60,
                interval=0.2,
                message=f"Oban Web serving {base}",
            )
            py, sleepers = await _start_python_node(make_oban)
            shot = await _check_pages(browser, base, tmp_path)

    for job_id in sleepers:
        await py.cancel_job(job_id)
    if UPDATE_SCREENSHOTS:
        _update_docs_image(shot)
