"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against the app of
``tests/web/serve.py`` served by uvicorn in a subprocess (mounted at ``/admin/oban`` under a
strict nonce-based CSP, and read-only at ``/ro/oban``), with a node of this process running
queue ``alpha`` and jobs seeded in every state; on both engines. Then ``oban web`` itself,
with basic auth.

Every page a test opens is checked for Content-Security-Policy violations and console
errors: there must be none.

Chromium (``/usr/bin/chromium``) and Python Playwright (the ``test`` extra) are needed;
without either the tests fail saying how to install it (Playwright's own browser download is
never used). ``OBAN_UPDATE_SCREENSHOTS=1`` saves each page's screenshot to ``docs/images``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from oban.oban import _instances
from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.conftest import DSN
from tests.web.support import BIG, Seeded, seed

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
# Read now: the session fixture in tests/conftest.py removes OBAN_* variables.
UPDATE_SCREENSHOTS = os.environ.get("OBAN_UPDATE_SCREENSHOTS") == "1"
DOCS_IMAGES = REPO_ROOT / "docs" / "images"
ADMIN = "/admin/oban"
READ_ONLY = "/ro/oban"
TIMEOUT_MS = 10_000
NODE = "browser-node"
#: The test application (tests/web/serve.py).
SERVE = [sys.executable, "-m", "tests.web.serve"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; the tests fail (never skip) without it."""
    require_browser("the browser tests need")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


class LoopThread:
    """An event loop in a thread of its own, for the test's node and database calls while
    the (synchronous) browser API runs in the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Site:
    """The served dashboard, the node beside it and the seeded jobs."""

    base: str
    engine: str
    node: Oban
    seeded: Seeded
    loop: LoopThread
    dsn: str
    prefix: str

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    def state(self, job_id: int) -> str | None:
        job = self.run(self.node.get_job(job_id))
        return None if job is None else job.state.value

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s (last {value!r})")
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_serving(proc: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"the server exited ({proc.returncode}):\n{output}")
        try:
            if httpx.get(url, timeout=1.0).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """The dashboard served by uvicorn in a subprocess, a node of this process running queue
    ``alpha`` (limit 2) on the same database, and jobs in every state."""
    engine = str(request.param)
    loop = LoopThread()
    pool: AsyncConnectionPool[Any] | None = None
    prefix = f"w_{uuid.uuid4().hex[:12]}"
    node: Oban | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        if engine == "postgres":
            dsn = DSN
            pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False)
            loop.run(pool.open(wait=True, timeout=10))
            loop.run(schema.install(pool, prefix))
            options: dict[str, Any] = {"pool": pool, "prefix": prefix}
        else:
            dsn = f"sqlite:///{tmp_path_factory.mktemp('web') / 'jobs.db'}"
            prefix = "public"
            options = {"dsn": dsn}

        async def start_node() -> Oban:
            made = Oban(
                **options,
                name="Oban",
                node=NODE,
                queues={"alpha": 2},
                leadership=False,
                shutdown_grace_period=2.0,
            )
            await made.start()
            return made

        node = loop.run(start_node())
        seeded = loop.run(seed(node))
        port = _free_port()
        proc = subprocess.Popen(
            [*SERVE, "--dsn", dsn, "--prefix", prefix, "--port", str(port)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(proc, f"{base}{ADMIN}/health?db=1")
        yield Site(base, engine, node, seeded, loop, dsn, prefix)
    finally:
        if proc is not None:
            _stop(proc)
        if node is not None:
            loop.run(node.stop())
        if pool is not None:
            loop.run(_drop(pool, prefix))
            loop.run(pool.close())
        loop.close()
        _instances.clear()


async def _drop(pool: AsyncConnectionPool[Any], prefix: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')


@pytest.fixture
def console_errors() -> list[str]:
    """The console errors of the test's page (a test may take out those it caused)."""
    return []


@pytest.fixture
def page(browser: Browser, site: Site, console_errors: list[str]) -> Iterator[Page]:
    """A fresh browser page that records CSP violations and console errors; the test fails
    if there were any."""
    context = browser.new_context(base_url=site.base, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation', e =>"
        " window.__violations.push([e.violatedDirective, e.blockedURI,"
        " e.sourceFile + ':' + e.lineNumber + ':' + e.columnNumber].join(' ')));"
    )
    tab = context.new_page()
    problems = console_errors
    tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on("dialog", lambda dialog: dialog.accept())
    try:
        yield tab
        violations = tab.evaluate("window.__violations") if not tab.is_closed() else []
        assert violations == [], f"CSP violations: {violations}"
        assert problems == [], f"console errors: {problems}"
    finally:
        context.close()


def _shoot(page: Page, site: Site, name: str, tmp_path: Path) -> None:
    # caret="initial": hiding the caret leaves a style attribute on each input, which a live
    # refresh's swap then copies (and the page's policy refuses).
    png = page.screenshot(path=str(tmp_path / f"web-{name}.png"), full_page=True, caret="initial")
    assert len(png) > 10_000, "the screenshot is too small to show anything"
    if UPDATE_SCREENSHOTS and site.engine == "postgres":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        (DOCS_IMAGES / f"web-{name}.png").write_bytes(png)


def test_filter_survives_a_reload_and_the_job_detail_shows_everything(
    page: Page, site: Site, tmp_path: Path
) -> None:
    seeded = site.seeded
    page.goto(f"{ADMIN}/jobs")
    page.wait_for_selector("tr[data-job-id]")
    _shoot(page, site, "jobs", tmp_path)
    assert page.locator('[data-count="discarded"]').inner_text() == str(
        len(seeded.ids["discarded"])
    )

    page.click("#sidebar a:has-text('discarded')")
    page.wait_for_url("**state=discarded**")
    target = site.run(site.node.get_job(seeded.discarded))
    assert target is not None
    user_id = target.args["user"]["id"]
    page.fill("input[name=args]", f"user.id={user_id}")
    page.click(".filters button[type=submit]")
    page.wait_for_url(f"**args=user.id%3D{user_id}**")
    rows = page.locator("tr[data-job-id]")
    assert rows.evaluate_all("rows => rows.map(row => row.dataset.jobId)") == [
        str(seeded.discarded)
    ]

    page.reload()
    assert page.input_value("input[name=args]") == f"user.id={user_id}"
    assert "state=discarded" in page.url
    assert rows.evaluate_all("rows => rows.map(row => row.dataset.jobId)") == [
        str(seeded.discarded)
    ]

    page.click(f"tr[data-job-id='{seeded.discarded}'] a")
    page.wait_for_url(f"**/jobs/{seeded.discarded}")
    timeline = page.locator(".timeline").inner_text()
    for step in ("Inserted", "Attempt 1 failed", "Discarded"):
        assert step in timeline
    assert "RuntimeError: card declined" in page.locator(".error-entry pre").inner_text()
    _shoot(page, site, "job", tmp_path)

    page.goto(f"{ADMIN}/jobs/{seeded.big}")
    assert str(BIG) in page.locator("#job-args").inner_text()
    page.goto(f"{ADMIN}/jobs/{seeded.completed}")
    assert '"total": 3' in page.locator("#job-recorded").inner_text()


def test_bulk_retry_changes_the_database(page: Page, site: Site) -> None:
    retryable = site.seeded.ids["retryable"]
    page.goto(f"{ADMIN}/jobs?state=retryable")
    page.wait_for_selector("tr[data-job-id]")
    page.check("#select-all")
    assert page.inner_text("#selected-count") == f"{len(retryable)} selected"
    page.click("button.action-retry")  # its confirm dialog is accepted
    page.wait_for_selector(f"#flash:has-text('Retried {len(retryable)} of {len(retryable)}')")
    site.wait(lambda: {site.state(i) for i in retryable} == {"available"}, "jobs retried")
    # The list refreshes at once: the retried jobs are no longer retryable.
    page.wait_for_selector("tr.empty")


def test_queue_controls_reach_the_node(page: Page, site: Site, tmp_path: Path) -> None:
    def alpha() -> Any:
        return site.node.check_queue("alpha")

    page.goto(f"{ADMIN}/queues")
    node_row = page.locator(f"tbody[data-queue='alpha'] tr[data-node='{NODE}']")
    node_row.wait_for()
    _shoot(page, site, "queues", tmp_path)

    node_row.locator("button.action-pause").click()
    site.wait(lambda: alpha().paused, "alpha paused on the node")

    def alpha_rows() -> list[tuple[str, str, bool]]:
        infos = site.run(site.node.queues())
        return [(i.queue, i.node, i.paused) for i in infos if i.queue == "alpha"]

    # The producer row records the pause a moment after the node applies it.
    site.wait(lambda: any(paused for _q, _n, paused in alpha_rows()), "the pause in the row")
    assert alpha_rows() == [("alpha", NODE, True)]
    node_row.locator("button.action-resume").wait_for()  # the page shows it paused

    node_row.locator("button.action-resume").click()
    site.wait(lambda: not alpha().paused, "alpha resumed")
    node_row.locator("input[name=limit]").fill("5")
    node_row.locator("button.action-scale").click()
    site.wait(lambda: alpha().limit == 5, "alpha scaled to 5")

    page.goto(f"{ADMIN}/nodes")
    page.locator(f"tr[data-node='{NODE}']").wait_for()
    _shoot(page, site, "nodes", tmp_path)


def test_bulk_action_on_every_matching_job(page: Page, site: Site, tmp_path: Path) -> None:
    scheduled = site.seeded.ids["scheduled"]
    page.goto(f"{ADMIN}/jobs?state=scheduled")
    button = page.locator("#matching button[data-matching-verb='cancel']")
    button.wait_for()
    assert page.locator("#matching [data-matching]").get_attribute("data-matching") == str(
        len(scheduled)
    )
    assert "takes the newest 1,000" in page.inner_text("#matching")  # the cap, said
    _shoot(page, site, "jobs-matching", tmp_path)
    button.click()  # its confirm dialog is accepted
    done = len(scheduled)
    page.wait_for_selector(f"#flash:has-text('Cancelled {done} of {done} matching jobs')")
    site.wait(lambda: {site.state(i) for i in scheduled} == {"cancelled"}, "jobs cancelled")
    # The list refreshes at once, and the bar counts again: nothing is scheduled now.
    page.wait_for_selector("tr.empty")
    page.wait_for_selector("#matching [data-matching='0']")


def test_cron_page_shows_each_entry_and_a_new_run(page: Page, site: Site, tmp_path: Path) -> None:
    page.goto(f"{ADMIN}/cron")
    rows = page.locator("tr[data-cron]")
    rows.first.wait_for()
    assert rows.count() == 2
    digest = page.locator("tr[data-cron]:has-text('30 6 * * MON-FRI')")
    name = digest.get_attribute("data-cron")
    assert name and "none in the table" in digest.inner_text()
    assert digest.locator("[data-next-run] time").inner_text().startswith("in ")
    # A run appears with the next live refresh, linked to its job.
    minute = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime())
    run = site.run(
        site.node.enqueue(
            Job(
                "app.workers.WeekdayDigest",
                queue="digests",
                meta={"cron": True, "cron_name": name, "cron_at": minute},
            )
        )
    )
    digest.locator(f"[data-last-run] a[href$='/jobs/{run.id}']").wait_for()
    assert "available" in digest.locator("[data-last-run]").inner_text()
    _shoot(page, site, "cron", tmp_path)


def test_charts_render_and_follow_the_live_refresh(page: Page, site: Site, tmp_path: Path) -> None:
    page.goto(f"{ADMIN}/charts")
    for chart in ("#chart-throughput", "#chart-latency"):
        page.locator(f"{chart} canvas").wait_for()
    throughput = "window.obanCharts['chart-throughput']"
    assert page.evaluate(f"{throughput}.data[0].length") == 60  # a minute each, for an hour
    completed = page.evaluate(f"{throughput}.data[1].reduce((sum, n) => sum + (n || 0), 0)")
    assert completed >= len(site.seeded.ids["completed"])
    assert page.evaluate("window.obanCharts['chart-latency'].series.length") == 5  # x + 4
    _shoot(page, site, "charts", tmp_path)

    # The live refresh fetches the fragment again, and the charts are drawn anew from it.
    page.evaluate(f"{throughput}.seen = true")
    with page.expect_response(lambda response: "/charts/live" in response.url):
        pass
    page.wait_for_function(f"{throughput} && !{throughput}.seen")
    assert page.evaluate(f"{throughput}.data[0].length") == 60

    page.select_option("select[name=queue]", "beta")
    page.wait_for_url("**/charts?queue=beta")
    page.locator("#chart-throughput canvas").wait_for()
    assert "beta" in (page.text_content("#chart-panel h2") or "")
    with page.expect_response(lambda response: "/charts/live" in response.url) as polled:
        pass
    assert "queue=beta" in polled.value.url


def test_read_only_refuses_a_direct_post(page: Page, site: Site, console_errors: list[str]) -> None:
    discarded = site.seeded.ids["discarded"][-1]
    page.goto(f"{READ_ONLY}/jobs?state=discarded")
    page.wait_for_selector("tr[data-job-id]")
    assert page.locator("button.action, input[name=id]").count() == 0
    status = page.evaluate(
        """async ([url, id]) => {
            const token = document.querySelector('meta[name="oban-csrf-token"]').content;
            const response = await fetch(url, {
                method: "POST",
                headers: {
                    "X-CSRF-Token": token,
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                body: "id=" + id,
            });
            return response.status;
        }""",
        [f"{READ_ONLY}/jobs/delete", discarded],
    )
    assert status == 403
    assert site.state(discarded) == "discarded"
    # The browser logs the refusal; it is the only console error.
    assert console_errors == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ]
    console_errors.clear()


def test_live_refresh_shows_a_new_job_and_stops_when_off(page: Page, site: Site) -> None:
    polls: list[str] = []

    def on_request(request: Request) -> None:
        if "/jobs/live" in request.url:
            polls.append(request.url)

    page.on("request", on_request)
    page.goto(f"{ADMIN}/jobs?queue=live")
    page.select_option("#refresh", "1")
    page.wait_for_selector("tr.empty")
    first = site.run(site.node.enqueue(Job("tests.web.workers.Mailer", queue="live")))
    page.wait_for_selector(f"tr[data-job-id='{first.id}']", timeout=5_000)
    assert polls and all("queue=live" in url for url in polls)

    # Hidden tab: no polls.
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    page.wait_for_timeout(300)  # a poll already in flight may still finish
    before = len(polls)
    page.wait_for_timeout(2_000)
    assert len(polls) == before, "polled while the tab was hidden"
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    site.wait(lambda: len(polls) > before, "a poll once visible again", timeout=5)

    page.select_option("#refresh", "0")
    assert page.inner_text("#live-status") == "paused"
    page.wait_for_timeout(300)
    stopped = len(polls)
    second = site.run(site.node.enqueue(Job("tests.web.workers.Mailer", queue="live")))
    page.wait_for_timeout(2_000)
    assert len(polls) == stopped, "polled with refresh off"
    assert page.locator(f"tr[data-job-id='{second.id}']").count() == 0
    # The choice is remembered.
    page.reload()
    assert page.input_value("#refresh") == "0"


def _oban_web() -> list[str]:
    """``oban web``, as a user runs it (``python -m oban`` is the ``oban`` script). Until
    ``oban.cli`` lists the command, the same click command is run directly."""
    from oban.cli import main

    if "web" in main.commands:
        return [sys.executable, "-m", "oban", "web"]
    return [sys.executable, "-c", "from oban.web._command import web; web()"]


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """``oban web --basic-auth`` serving a PostgreSQL schema with one job; yields its URL
    and the job's id."""
    loop = LoopThread()
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(DSN, min_size=1, max_size=2, open=False)
    prefix = f"w_{uuid.uuid4().hex[:12]}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        loop.run(pool.open(wait=True, timeout=10))
        loop.run(schema.install(pool, prefix))

        async def enqueue() -> int:
            client = Oban(pool=pool, prefix=prefix, name="standalone-seeder")
            job = await client.enqueue(Job("tests.web.workers.Mailer", queue="solo"))
            assert job.id is not None
            return job.id

        job_id = loop.run(enqueue())
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
        env["OBAN_WEB_BASIC_AUTH"] = "ada:s3cret"  # not on the command line, where ps shows it
        proc = subprocess.Popen(
            [*_oban_web(), "--dsn", DSN, "--prefix", prefix, "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(proc, f"{base}/health")
        yield base, job_id
        assert _stop(proc) == 0, "oban web did not exit 0 on SIGTERM"
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert f"oban web | schema '{prefix}'" in output, output
        assert "s3cret" not in output and "WARNING" not in output, output
    finally:
        if proc is not None:
            _stop(proc)
        loop.run(_drop(pool, prefix))
        loop.run(pool.close())
        loop.close()
        _instances.clear()


def test_oban_web_serves_the_dashboard_behind_basic_auth(
    browser: Browser, standalone: tuple[str, int]
) -> None:
    base, job_id = standalone
    assert httpx.get(f"{base}/jobs").status_code == 401
    assert httpx.get(f"{base}/jobs", auth=("ada", "wrong")).status_code == 401
    assert httpx.get(f"{base}/health?db=1").json()["database"] == "ok"

    context = browser.new_context(http_credentials={"username": "ada", "password": "s3cret"})
    try:
        tab = context.new_page()
        problems: list[str] = []
        tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        tab.goto(base)
        tab.wait_for_selector(f"tr[data-job-id='{job_id}']", timeout=TIMEOUT_MS)
        assert tab.url == f"{base}/jobs"
        assert problems == []
    finally:
        context.close()


def test_live_refresh_holds_while_older_search_matches_show(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    """A search the dashboard runs in windows (here of 5 ids, one per request, in a server
    of its own): "Search older jobs" reaches an older match, and live refresh (1 s) then
    holds rather than search from the newest job again and drop it."""
    needle = f"zebra-{uuid.uuid4().hex[:8]}"
    match = site.run(
        site.node.enqueue(Job("tests.web.workers.Mailer", queue="scanq", args={"to": needle}))
    )
    site.run(
        site.node.enqueue_many(
            [Job("tests.web.workers.Mailer", queue="scanq", args={"n": n}) for n in range(12)]
        )
    )
    port = _free_port()
    proc = subprocess.Popen(
        [*SERVE, "--dsn", site.dsn, "--prefix", site.prefix, "--port", str(port), "--small-scans"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    context = browser.new_context(base_url=f"http://127.0.0.1:{port}")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        _wait_until_serving(proc, f"http://127.0.0.1:{port}{ADMIN}/health")
        tab = context.new_page()
        tab.goto(f"{ADMIN}/jobs?q={needle}")
        tab.select_option("#refresh", "1")
        assert "No match yet" in tab.inner_text("#job-list")
        for _ in range(10):
            if tab.locator(f"tr[data-job-id='{match.id}']").count():
                break
            tab.click("button.more")
            tab.wait_for_load_state("networkidle")
        else:
            raise AssertionError("Search older jobs never reached the match")
        tab.wait_for_timeout(2_500)  # two refresh intervals
        assert tab.locator(f"tr[data-job-id='{match.id}']").count() == 1, "the match was dropped"
        assert tab.inner_text("#live-status") == "paused while older matches are shown"
    finally:
        context.close()
        _stop(proc)
