"""``oban web``'s options and the app it serves, without a server (the browser tests run the
real command)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from oban import Job, Oban
from oban._config import Config
from oban.web._command import build_standalone, web
from oban.web._security import is_loopback


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``uvicorn.run`` was called with, instead of serving."""
    calls: list[dict[str, Any]] = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    return calls


def _invoke(*args: str, tmp_path: Path) -> Any:
    dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
    if not (tmp_path / "jobs.db").exists():
        asyncio.run(_install(dsn))
    return CliRunner().invoke(web, ["--dsn", dsn, *args], catch_exceptions=False)


async def _install(dsn: str) -> None:
    oban = Oban(dsn=dsn, name="installer")
    try:
        await oban.nodes()  # the SQLite engine installs the schema on first use
    finally:
        await oban.stop()


def test_it_never_creates_a_database(served: list[dict[str, Any]], tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = CliRunner().invoke(web, ["--dsn", f"sqlite:///{missing}"])
    assert result.exit_code == 1
    assert f"no database at {missing}" in result.output
    assert not missing.exists() and served == []


def test_it_serves_on_loopback_by_default_and_warns_when_exposed_without_auth(
    served: list[dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="oban.web")
    result = _invoke(tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    assert served[-1]["host"] == "127.0.0.1" and served[-1]["port"] == 4000
    assert "http://127.0.0.1:4000/" in result.output
    assert not caplog.records

    result = _invoke("--host", "0.0.0.0", "--port", "8080", "--read-only", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    [warning] = caplog.records
    assert "0.0.0.0 without --basic-auth" in warning.getMessage()
    assert "cancel" not in warning.getMessage()  # read-only: it can only show
    caplog.clear()

    result = _invoke("--host", "::", "--basic-auth", "ada:secret", tmp_path=tmp_path)
    assert result.exit_code == 0, result.output
    assert "basic auth" in result.output and "secret" not in result.output
    assert not caplog.records


@pytest.mark.parametrize("value", ["ada", "ada:", ":secret"])
def test_basic_auth_needs_a_user_and_a_password(
    value: str, served: list[dict[str, Any]], tmp_path: Path
) -> None:
    result = _invoke("--basic-auth", value, tmp_path=tmp_path)
    assert result.exit_code == 2
    assert "expected user:password" in result.output
    assert served == []


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.org"]))


async def test_the_standalone_app_asks_for_the_password_and_serves_a_client(
    tmp_path: Path,
) -> None:
    dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
    async with Oban(dsn=dsn, name="seeder") as seeder:
        job = await seeder.enqueue(Job("tests.web.workers.Mailer", queue="beta"))
    config = Config.load(dsn=dsn)
    app = build_standalone(config, basic_auth=("ada", "s3cret"), read_only=True, refresh_default=5)
    good = base64.b64encode(b"ada:s3cret").decode()
    bad = base64.b64encode(b"ada:wrong").decode()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/jobs")).status_code == 401
            denied = await client.get("/jobs", headers={"Authorization": f"Basic {bad}"})
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"].startswith("Basic")
            assert (await client.get("/health")).status_code == 200  # for load balancers
            page = await client.get("/jobs", headers={"Authorization": f"Basic {good}"})
            assert page.status_code == 200
            assert f'data-job-id="{job.id}"' in page.text and "read-only" in page.text
    finally:
        await app.state.oban.stop()


def test_without_the_web_extra_it_imports_and_says_what_to_install() -> None:
    """``oban --help`` imports this module, so it must import without the extra."""
    code = (
        "import sys\n"
        "for name in ('starlette', 'uvicorn', 'jinja2'):\n"
        "    sys.modules[name] = None  # as if not installed\n"
        "from oban.web._command import web\n"
        "web(['--dsn', 'sqlite:///unused.db'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    assert "pip install 'oban[web]'" in result.stderr


def test_oban_web_lists_the_cron_entries_of_the_workers_it_discovers(tmp_path: Path) -> None:
    """A real ``oban web`` in the application's directory imports its cron workers as
    ``oban start`` does, so the cron page shows their entries."""
    from tests.web.test_browser import _free_port, _oban_web, _stop, _wait_until_serving

    (tmp_path / "nightly_jobs.py").write_text(
        "from oban import worker\n\n"
        "@worker(queue='reports', cron='17 3 * * *')\n"
        "class NightlyReport:\n"
        "    async def process(self, job):\n"
        "        return None\n"
    )
    dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
    asyncio.run(_install(dsn))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    proc = subprocess.Popen(
        [*_oban_web(), "--dsn", dsn, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_serving(proc, f"http://127.0.0.1:{port}/health")
        page = httpx.get(f"http://127.0.0.1:{port}/cron").text
    finally:
        assert _stop(proc) == 0
    assert "17 3 * * *" in page, page
    assert "nightly_jobs.NightlyReport" in page
