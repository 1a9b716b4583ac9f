"""Users' editors: an example application type-checks under mypy --strict (with the
``oban.mypy`` plugin) and under pyright (basedpyright), and mistakes in it are reported."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "typing" / "example_app.py"
BIN = Path(sys.executable).parent

MISTAKES = textwrap.dedent(
    """
    from oban import Job, job, worker


    @worker(queue="x")
    class Mailer:
        def process(self, job: Job) -> None: ...


    @job()
    def add(a: int, b: int = 2) -> int:
        return a + b


    Mailer.new({}, 1)
    add.new("one")
    add.enqueue(1, 2, 3)
    Mailer.new({}, shedule_in=60)


    @worker(queue="x", max_attempt=5)
    class Typo:
        def process(self, job: Job) -> None: ...
    """
)


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed: run `make setup` (it is in the test extra)")
        return found
    return str(path)


def _mypy(target: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\nplugins = oban.mypy\n")
    return subprocess.run(
        [
            _tool("mypy"),
            *("--config-file", str(config), "--cache-dir", str(tmp_path / "cache")),
            *("--no-error-summary", str(target)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _pyright(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("basedpyright"), "--pythonpath", sys.executable, "--level", "error", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=target.parent,
    )


def test_example_app_is_clean_under_mypy_strict(tmp_path: Path) -> None:
    result = _mypy(EXAMPLE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Twice: the second run reads the plugin-built methods back from mypy's cache.
    again = _mypy(EXAMPLE, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


def test_example_app_is_clean_under_pyright() -> None:
    result = _pyright(EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


def test_mistakes_are_reported_by_both_checkers(tmp_path: Path) -> None:
    app = tmp_path / "mistakes.py"
    app.write_text(MISTAKES)
    by_mypy = _mypy(app, tmp_path).stdout
    # "positional": new() has typed keywords (JobOptions) since options are checked.
    assert 'Too many positional arguments for "new" of "Mailer"' in by_mypy, by_mypy
    assert 'incompatible type "str"; expected "int"' in by_mypy, by_mypy
    assert 'Too many arguments for "enqueue"' in by_mypy, by_mypy
    assert 'Unexpected keyword argument "shedule_in" for "new" of "Mailer"' in by_mypy, by_mypy
    assert 'Unexpected keyword argument "max_attempt" for "worker"' in by_mypy, by_mypy
    by_pyright = _pyright(app).stdout
    assert "5 errors" in by_pyright, by_pyright
    assert 'No parameter named "shedule_in"' in by_pyright, by_pyright
    assert 'No parameter named "max_attempt"' in by_pyright, by_pyright


def test_without_the_plugin_mypy_cannot_see_new(tmp_path: Path) -> None:
    """Why the plugin exists: mypy ignores a class decorator's return type."""
    app = tmp_path / "plain.py"
    app.write_text(
        "from oban import Job, worker\n\n\n@worker()\nclass W:\n"
        "    def process(self, job: Job) -> None: ...\n\n\nW.new({})\n"
    )
    config = tmp_path / "plain.ini"
    config.write_text("[mypy]\nstrict = True\n")
    result = subprocess.run(
        [_tool("mypy"), "--config-file", str(config), "--cache-dir", str(tmp_path / "c"), str(app)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert '"type[W]" has no attribute "new"' in result.stdout, result.stdout
