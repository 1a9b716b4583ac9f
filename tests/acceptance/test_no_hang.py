"""No hang, ever: a fixture that fails halfway releases what it opened, a test that hangs fails
within its timeout naming itself, and a thread left running cannot hang the exit.

Each scenario runs a small test file in a pytest of its own (a subprocess, with this suite's
fixtures loaded as plugins), so the hang or failure is the inner run's, and this test asserts
on how that run ended: its outcome, its output and how long it took.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.pgserver import PrivateServer

ROOT = Path(__file__).resolve().parents[2]


def _inner_pytest(
    tmp_path: Path, source: str, *, timeout: float, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``source`` as a test file in its own pytest; returns the result and its duration."""
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(textwrap.dedent(source))
    command = [
        sys.executable,
        *("-m", "pytest", str(test_file), "-p", "no:cacheprovider", "-q"),
        *("-p", "tests.conftest", "-p", "tests.conformance.conftest"),
        *("-c", os.devnull, "--rootdir", str(tmp_path)),
        *("-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"),
        *("-o", f"timeout={timeout}", "-rfE"),
    ]
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=ROOT,
        # A wide terminal, so the short summary always carries each failure's reason.
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,  # far beyond what any scenario needs: a hang here fails this test
        check=False,
    )
    return result, time.monotonic() - started


FAILING_INSTALL = """
    import pytest
    from oban import schema

    opened = []


    @pytest.fixture(params=["{fixture}"])
    def which(request):
        return request.param


    @pytest.fixture
    def engine():
        return "postgres"


    @pytest.fixture(autouse=True)
    def install_fails_after_the_pool_is_open(monkeypatch):
        async def install(pool, prefix, *args, **kwargs):
            opened.append(pool)
            raise RuntimeError("injected: the schema install failed")

        monkeypatch.setattr(schema, "install", install)


    async def test_needs_the_schema({fixture}):
        raise AssertionError("never reached: the fixture's setup fails")


    def test_the_pool_was_closed():
        assert len(opened) == 1
        assert opened[0].closed, "the fixture left its pool open"
"""


def test_a_schema_install_failing_after_the_pool_opened_releases_the_pool(
    tmp_path: Path,
) -> None:
    for fixture in ("make_oban", "prefix"):
        source = FAILING_INSTALL.replace("{fixture}", fixture)
        if fixture == "prefix":  # tests/conftest.py's prefix uses the pool fixture's pool
            source = source.replace(
                '    @pytest.fixture\n    def engine():\n        return "postgres"\n', ""
            )
        result, took = _inner_pytest(tmp_path, source, timeout=30)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "ERROR" in output and "test_needs_the_schema" in output, output
        assert "injected: the schema install failed" in output, output
        assert "1 passed, 1 error" in output, output  # test_the_pool_was_closed passed
        assert took < 60, f"{fixture}: the failing setup took {took:.1f}s\n{output}"


SERVER_DIES_DURING_INSTALL = """
    import os
    import signal
    from pathlib import Path

    import pytest
    from oban import schema

    real_install = schema.install


    @pytest.fixture
    def engine():
        return "postgres"


    @pytest.fixture(scope="session")
    def dsn():
        return os.environ["INNER_DSN"]


    @pytest.fixture(autouse=True)
    def server_dies_during_install(monkeypatch):
        async def install(pool, prefix, *args, **kwargs):
            # The postmaster and its backends at once: a backend outlives a killed postmaster
            # for a while, and could finish the install on its already open connection.
            postmaster = int(os.environ["INNER_PG_PID"])
            children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text()
            for pid in [postmaster, *map(int, children.split())]:
                os.kill(pid, signal.SIGKILL)
            await real_install(pool, prefix, *args, **kwargs)

        monkeypatch.setattr(schema, "install", install)


    async def test_needs_the_schema(make_oban):
        raise AssertionError("never reached: the fixture's setup fails")
"""


def test_a_server_crash_during_the_schema_install_fails_the_test_without_a_hang(
    tmp_path: Path, private_pg: PrivateServer
) -> None:
    """The incident this suite once had: the server went away between opening the pool and
    installing the schema, and the run hung in teardown for over ten minutes."""
    assert private_pg.pid is not None
    env = {"INNER_DSN": private_pg.dsn, "INNER_PG_PID": str(private_pg.pid)}
    result, took = _inner_pytest(tmp_path, SERVER_DIES_DURING_INSTALL, timeout=60, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "ERROR" in output and "test_needs_the_schema" in output, output
    # The server's own failure is what is reported (which one depends on when the kill lands:
    # AdminShutdown, OperationalError, ...), not a cleanup error hiding it.
    assert re.search(r"psycopg\.(errors\.)?\w+: ", output), output
    assert "from pytest-timeout" not in output, output  # it failed of its own accord
    assert took < 60, f"the failing setup took {took:.1f}s\n{output}"


HANGS = """
    import asyncio
    import time

    import pytest


    @pytest.fixture
    async def hangs_in_teardown():
        yield
        await asyncio.Event().wait()


    @pytest.fixture
    def blocks_in_setup():
        time.sleep(3600)


    async def test_hang_in_teardown(hangs_in_teardown):
        pass


    def test_hang_in_setup(blocks_in_setup):
        pass


    async def test_hang_in_call():
        await asyncio.Event().wait()
"""


def test_a_hang_in_setup_call_or_teardown_fails_within_the_timeout_naming_the_test(
    tmp_path: Path,
) -> None:
    result, took = _inner_pytest(tmp_path, HANGS, timeout=2)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    summary = {
        line.split(" - ")[0].split("::")[-1]: line
        for line in output.splitlines()
        if line.startswith(("FAILED", "ERROR")) and "test_inner.py::" in line
    }
    timeout = "Failed: Timeout (>2.0s) from pytest-timeout"
    assert summary["test_hang_in_call"].startswith("FAILED"), output
    assert summary["test_hang_in_setup"].startswith("ERROR"), output
    assert summary["test_hang_in_teardown"].startswith("ERROR"), output
    assert all(timeout in line for line in summary.values()), output
    assert ">       time.sleep(3600)" in output, output  # the traceback shows where it hung
    assert took < 45, f"three 2 s timeouts took {took:.1f}s\n{output}"


LEAKS_A_THREAD = """
    import threading


    def test_leaves_a_thread_blocked_forever():
        threading.Thread(target=threading.Event().wait, name="stuck-forever").start()
"""


def test_a_thread_left_blocked_cannot_hang_the_exit(tmp_path: Path) -> None:
    result, took = _inner_pytest(tmp_path, LEAKS_A_THREAD, timeout=10)
    output = result.stdout + result.stderr
    assert "1 passed" in output, output
    assert "thread(s) left running by the tests would hang the exit" in output, output
    assert "--- thread 'stuck-forever' ---" in output, output
    assert result.returncode != 0, output  # a leak is a failure, even if every test passed
    assert took < 45, f"the run took {took:.1f}s to exit\n{output}"
