"""Smoke-test the oban package as a user installs it (from the wheel, not the source tree).

Run by ``.ci/package-check`` with the python of a fresh virtualenv that has only the built
wheel (and its dependencies) installed:

    python -I .ci/smoke_installed.py path/to/src/oban [--expect-version X.Y.Z]

It checks that

* ``oban`` is imported from that virtualenv's site-packages, not from the source tree, and is
  not an editable install;
* every module of the installed package imports cleanly, except the modules listed in
  ``OPTIONAL``, which may fail only with an ImportError naming their missing dependency;
* ``py.typed`` is present;
* every file under the source ``src/oban`` (SQL files, templates, ``py.typed``, ... and the
  modules themselves) exists in the installed package with identical content.

It prints a summary and exits non-zero naming every problem found.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import pkgutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

# Modules whose dependency is not installed with plain ``pip install oban``: module -> the
# top-level package it needs. Such a module must import cleanly when the dependency is there,
# and otherwise fail with an ImportError that names it (never anything else).
OPTIONAL: dict[str, str] = {
    "oban.mypy": "mypy",  # the mypy plugin, loaded by the user's mypy
    "oban.telemetry.otel": "opentelemetry",  # the [otel] extra
    "oban.pytest_plugin": "pytest",  # loaded by the user's own test suite
    # the [web] extra: the dashboard (oban.web itself and its `oban web` command import
    # without it, so that `oban --help` works)
    "oban.web._app": "starlette",
    "oban.web._render": "jinja2",
    "oban.web._security": "starlette",
    "oban.web._views": "jinja2",
    # oban.contrib.django: the django extra
    "oban.contrib.django._schema": "django",
    "oban.contrib.django.admin": "django",
    "oban.contrib.django.apps": "django",
    "oban.contrib.django.conf": "django",
    "oban.contrib.django.management.commands.oban": "django",
    "oban.contrib.django.migrations.0001_initial": "django",
    "oban.contrib.django.migrations.0002_unique_index": "django",
    "oban.contrib.django.migrations.0003_job": "django",
    "oban.contrib.django.models": "django",
    "oban.contrib.django.tasks": "django",
}

# Importing ``oban.__main__`` would run the CLI; it is exercised with ``python -m oban``.
RUN_NOT_IMPORTED = frozenset({"oban.__main__"})

# Build by-products that are never part of the package.
SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = frozenset({".pyc", ".pyo"})


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.problems.append(message)
        print(f"FAIL: {message}", flush=True)


def exception_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or while handling, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def names_missing_dependency(error: BaseException, dependency: str) -> bool:
    """Whether ``error`` is an ImportError caused by ``dependency`` (or a submodule) missing."""
    if not isinstance(error, ImportError):
        return False
    for link in exception_chain(error):
        if isinstance(link, ModuleNotFoundError) and link.name is not None:
            if link.name == dependency or link.name.startswith(f"{dependency}."):
                return True
    return False


def dependency_installed(dependency: str) -> bool:
    try:
        return importlib.util.find_spec(dependency) is not None
    except (ImportError, ValueError):
        return False


def check_location(report: Report, source: Path) -> Path:
    """Import oban and check it comes from this virtualenv's site-packages; return its dir."""
    import oban

    package = Path(oban.__file__).resolve().parent
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    print(f"oban {oban.__version__} imported from {package}")
    if sys.prefix == sys.base_prefix:
        report.fail(f"not running in a virtualenv (sys.prefix {sys.prefix})")
    if package.is_relative_to(source.resolve()) or package == source.resolve():
        report.fail(f"oban was imported from the source tree {package}, not the installed wheel")
    if not package.is_relative_to(purelib):
        report.fail(f"oban was imported from {package}, outside site-packages {purelib}")
    # pip records how it installed a distribution; an editable install points at the tree.
    direct_url = importlib.metadata.distribution("oban").read_text("direct_url.json")
    if direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"):
        report.fail("oban is an editable install; the check needs the built wheel")
    return package


def check_version(report: Report, expected: str | None) -> None:
    import oban

    installed = importlib.metadata.version("oban")
    if expected is not None and installed != expected:
        report.fail(f"installed distribution is oban {installed}, expected {expected}")
    if oban.__version__ != installed:
        report.fail(f"oban.__version__ is {oban.__version__}, the distribution says {installed}")


def check_imports(report: Report) -> int:
    """Import every module of the installed package; return how many imported."""
    import oban

    walk_errors: list[str] = []
    names = sorted(
        {info.name for info in pkgutil.walk_packages(oban.__path__, "oban.", walk_errors.append)}
        | {"oban"}
    )
    for name in walk_errors:
        report.fail(f"cannot walk package {name}")
    imported = 0
    for name in names:
        if name in RUN_NOT_IMPORTED:
            continue
        try:
            importlib.import_module(name)
        except Exception as error:  # every failure is judged below, none is skipped silently
            dependency = OPTIONAL.get(name)
            if dependency is None:
                report.fail(f"import {name}: {type(error).__name__}: {error}")
            elif dependency_installed(dependency):
                report.fail(
                    f"import {name}: {type(error).__name__}: {error} "
                    f"(its optional dependency {dependency} is installed)"
                )
            elif not names_missing_dependency(error, dependency):
                report.fail(
                    f"import {name}: expected an ImportError naming the missing optional "
                    f"dependency {dependency}, got {type(error).__name__}: {error}"
                )
            else:
                report.skipped.append(f"{name}: needs {dependency}, not installed ({error})")
        else:
            imported += 1
    for name in sorted(set(OPTIONAL) - set(names)):
        report.notes.append(f"{name} is listed in OPTIONAL but is not in the package any more")
    return imported


def check_main(report: Report) -> None:
    """``python -m oban`` runs the CLI (``oban/__main__.py``)."""
    result = subprocess.run(
        [sys.executable, "-I", "-m", "oban", "version"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        report.fail(f"python -m oban version exited {result.returncode}: {result.stderr.strip()}")


def source_files(source: Path) -> list[Path]:
    """Every file of the source package, relative to it, build by-products left out."""
    return sorted(
        path.relative_to(source)
        for path in source.rglob("*")
        if path.is_file()
        and path.suffix not in SKIPPED_SUFFIXES
        and not SKIPPED_DIRS.intersection(path.relative_to(source).parts)
    )


def check_files(report: Report, source: Path, package: Path) -> tuple[int, int]:
    """Every source file is installed, byte for byte; return (data files, python files)."""
    if not (package / "py.typed").is_file():
        report.fail("py.typed is missing from the installed package (PEP 561 marker)")
    files = source_files(source)
    if not files:
        report.fail(f"no files found under the source package {source}")
    data = python = 0
    for relative in files:
        installed = package / relative
        shown = f"oban/{relative.as_posix()}"
        if not installed.is_file():
            report.fail(f"missing from the installed package: {shown}")
        elif installed.read_bytes() != (source / relative).read_bytes():
            report.fail(f"differs from the source tree: {shown}")
        elif relative.suffix == ".py":
            python += 1
        else:
            data += 1
    return data, python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the source package directory (src/oban)")
    parser.add_argument("--expect-version", help="the version pyproject.toml declares")
    options = parser.parse_args()
    source: Path = options.source
    if not (source / "__init__.py").is_file():
        parser.error(f"{source} is not the oban source package")

    report = Report()
    package = check_location(report, source)
    check_version(report, options.expect_version)
    imported = check_imports(report)
    check_main(report)
    data, python = check_files(report, source, package)

    for skipped in report.skipped:
        print(f"optional module not imported: {skipped}")
    for note in report.notes:
        print(f"note: {note}")
    print(
        f"smoke: {imported} modules imported, {len(report.skipped)} optional ones skipped; "
        f"{data} data files and {python} python files identical to {source}"
    )
    if report.problems:
        sys.stdout.flush()  # the summary above first, then the problems
        print(f"smoke: FAILED, {len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems:
            print(f"  - {problem}", file=sys.stderr)
        if any(problem.startswith("missing from") for problem in report.problems):
            print(
                "  hint: package data is declared in [tool.setuptools.package-data] "
                "of pyproject.toml",
                file=sys.stderr,
            )
        return 1
    print("smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
