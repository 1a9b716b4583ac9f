"""Side-by-side benchmark: this repository's oban (PostgreSQL and SQLite) vs oban-py 0.7.0 vs
pgqueuer 1.6.0.

One command (``make bench``, or ``.venv/bin/python bench/run.py``; ``--help`` lists the flags):

1. creates (once; reused when present with the right versions) a virtual environment per peer
   under ``/tmp/oban-bench-venvs`` with a Python 3.12 interpreter (pyenv's by default):
   ``obanpy`` with ``oban==0.7.0`` and ``pgqueuer`` with ``pgqueuer[asyncpg,psycopg]==1.6.0``;
   our package runs with the interpreter that runs this script (the project's ``.venv``);
2. drops and re-creates one PostgreSQL database per library (``oban_bench_ours``,
   ``oban_bench_obanpy``, ``oban_bench_pgqueuer``) next to the database of the DSN
   (``OBAN_BENCH_DSN``, default ``postgresql://postgres@127.0.0.1:5432/test``) and installs
   each library's schema there with its own installer; our SQLite engine ("ours-sqlite") needs
   no server: it gets a new database file per workload run in a temporary directory
   (``--sqlite-dir``), removed at the end unless ``--keep-sqlite``;
3. runs every workload for every library, workload by workload, each in a fresh process of
   the library's driver (``bench/drivers/``), which prints one JSON line;
4. checks each library's tables from this process after every run (on top of the driver's
   own checks), and prints tables of jobs/s, latency percentiles, CPU per job and peak RSS
   with the ratios ours / each peer and ours-sqlite / ours. Exits 1 if any run failed or any
   check did not hold.

Two large workloads run for ours and ours-sqlite only (``--skip-large`` leaves them out,
``--large-only`` runs just them and the plain run they are compared with): the c=20 run with
1,000,000 finished jobs in the table (inserted with one set-based statement, not timed),
printed with its ratio to the plain c=20 run, and a 100,000-job run that samples the process's
current RSS every 10,000 jobs, printed with the growth between 10,000 and 100,000.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

BENCH_DIR = Path(__file__).resolve().parent
DRIVERS = BENCH_DIR / "drivers"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_VENV_ROOT = Path("/tmp/oban-bench-venvs")
PEER_PYTHON = (3, 12)


# The libraries


@dataclass
class Library:
    key: str  # what --only takes
    label: str
    driver: str
    family: str  # "oban", "sqlite" (oban_jobs) or "pgqueuer": how run.py checks the tables
    database: str | None = None  # the PostgreSQL database; None for SQLite (a file per run)
    venv: str | None = None  # directory under the venv root; None: this interpreter
    requirement: str | None = None
    distribution: str | None = None
    also_needs: tuple[str, ...] = ()  # other distributions the venv must have
    version: str | None = None
    python: str = sys.executable
    driver_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def libraries(args: argparse.Namespace) -> list[Library]:
    oban_extra = [] if args.debounce_ms is None else ["--debounce-ms", str(args.debounce_ms)]
    return [
        Library(
            key="ours",
            label="ours",
            driver="oban_driver.py",
            database=f"{args.db_prefix}ours",
            family="oban",
            driver_args=["--library", "ours", *oban_extra],
        ),
        Library(
            key="ours-sqlite",
            label="ours-sqlite",
            driver="oban_sqlite_driver.py",
            family="sqlite",
            driver_args=["--library", "ours-sqlite", *oban_extra],
        ),
        Library(
            key="obanpy",
            label="oban-py 0.7.0",
            driver="oban_driver.py",
            database=f"{args.db_prefix}obanpy",
            family="oban",
            venv="obanpy",
            requirement="oban==0.7.0",
            distribution="oban",
            version="0.7.0",
            driver_args=["--library", "oban-py", *oban_extra],
        ),
        Library(
            key="pgq",
            label="pgqueuer 1.6.0",
            driver="pgqueuer_driver.py",
            database=f"{args.db_prefix}pgqueuer",
            family="pgqueuer",
            venv="pgqueuer",
            requirement="pgqueuer[asyncpg,psycopg]==1.6.0",
            distribution="pgqueuer",
            also_needs=("asyncpg", "psycopg"),
            version="1.6.0",
            driver_args=[
                "--library",
                "pgqueuer",
                "--driver",
                args.pgq_driver,
                "--limit-mode",
                args.pgq_limit_mode,
            ],
        ),
    ]


# Virtual environments for the peers


def find_peer_python(explicit: str | None) -> str:
    """A Python 3.12 interpreter: --peer-python, else pyenv's newest 3.12.x, else python3.12."""
    if explicit:
        return explicit
    roots = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(Path(os.environ["PYENV_ROOT"]))
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            roots.append(Path(out.stdout.strip()))
    roots.append(Path.home() / ".pyenv")
    wanted = ".".join(map(str, PEER_PYTHON))
    for root in roots:
        candidates = sorted(
            (root / "versions").glob(f"{wanted}.*"),
            key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")],
        )
        for candidate in reversed(candidates):
            python = candidate / "bin" / "python"
            if python.exists():
                return str(python)
    found = shutil.which(f"python{wanted}")
    if found:
        return found
    raise SystemExit(
        f"ERROR: no Python {wanted} found (oban-py 0.7.0 needs it): install it with "
        f"`pyenv install {wanted}` or pass --peer-python /path/to/python{wanted}"
    )


def venv_state(python: Path, *dists: str) -> tuple[tuple[int, int], list[str | None]] | None:
    """((major, minor), installed version of each of ``dists`` or None), or None if unusable."""
    if not python.exists():
        return None
    probe = (
        "import importlib.metadata as m, json, sys\n"
        "def v(d):\n    try:\n        return m.version(d)\n"
        "    except m.PackageNotFoundError:\n        return None\n"
        "print(json.dumps([sys.version_info[:2], [v(d) for d in sys.argv[1:]]]))"
    )
    out = subprocess.run(
        [str(python), "-c", probe, *dists], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        return None
    (major, minor), versions = json.loads(out.stdout)
    return (major, minor), versions


def pip_install(python: Path) -> list[str]:
    return [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]


def ensure_venv(lib: Library, root: Path, args: argparse.Namespace) -> None:
    """Point ``lib.python`` at a venv with the pinned version, creating it when needed."""
    assert lib.venv and lib.distribution and lib.requirement
    path = root / lib.venv
    python = path / "bin" / "python"
    dists = (lib.distribution, *lib.also_needs)
    state = venv_state(python, *dists)
    ready = (
        state is not None
        and state[0] == PEER_PYTHON
        and state[1][0] == lib.version
        and None not in state[1]
    )
    if not ready:
        if args.skip_install:
            raise SystemExit(
                f"ERROR: --skip-install, but {path} is not a Python "
                f"{'.'.join(map(str, PEER_PYTHON))} venv with {lib.requirement} (found {state})"
            )
        if state is None or state[0] != PEER_PYTHON:
            if path.exists():
                if not (path / "pyvenv.cfg").exists():
                    raise SystemExit(f"ERROR: {path} exists and is not a venv; remove it")
                print(f"  {path}: wrong interpreter ({state}), re-creating", flush=True)
                shutil.rmtree(path)
            peer_python = find_peer_python(args.peer_python)
            print(f"  creating {path} with {peer_python}", flush=True)
            subprocess.run([peer_python, "-m", "venv", str(path)], check=True)
        print(f"  installing {lib.requirement} into {path}", flush=True)
        subprocess.run([*pip_install(python), lib.requirement], check=True)
        state = venv_state(python, *dists)
        if state is None or state[1][0] != lib.version or None in state[1]:
            raise SystemExit(f"ERROR: {path}: {lib.requirement} did not install ({state})")
    lib.python = str(python)


def project_dependencies() -> list[str]:
    with open(BENCH_DIR.parent / "pyproject.toml", "rb") as file:
        return list(tomllib.load(file)["project"]["dependencies"])


def ensure_ours_venv(lib: Library, root: Path, args: argparse.Namespace) -> None:
    """--same-python: ours in a Python 3.12 venv with only its runtime dependencies installed
    and the repository's ``src`` on PYTHONPATH (nothing is built or written in the repo)."""
    path = root / "ours-deps"
    python = path / "bin" / "python"
    stamp = path / "bench-requirements.txt"
    wanted = "\n".join(project_dependencies()) + "\n"
    state = venv_state(python, "psycopg", "psycopg-pool", "orjson")
    ready = (
        state is not None
        and state[0] == PEER_PYTHON
        and None not in state[1]
        and stamp.exists()
        and stamp.read_text() == wanted
    )
    if not ready:
        if args.skip_install:
            raise SystemExit(f"ERROR: --skip-install, but {path} is not ready (found {state})")
        if state is None or state[0] != PEER_PYTHON:
            if path.exists():
                if not (path / "pyvenv.cfg").exists():
                    raise SystemExit(f"ERROR: {path} exists and is not a venv; remove it")
                shutil.rmtree(path)
            peer_python = find_peer_python(args.peer_python)
            print(f"  creating {path} with {peer_python}", flush=True)
            subprocess.run([peer_python, "-m", "venv", str(path)], check=True)
        print(f"  installing our runtime dependencies into {path}", flush=True)
        subprocess.run([*pip_install(python), *project_dependencies()], check=True)
        stamp.write_text(wanted)
    lib.python = str(python)
    lib.env = {"PYTHONPATH": str(BENCH_DIR.parent / "src")}


def check_ours() -> str:
    """The oban this interpreter imports should be this repository's (src/oban)."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("oban")
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    src = BENCH_DIR.parent / "src" / "oban"
    if origin is None or src.resolve() not in origin.parents:
        raise SystemExit(
            f"ERROR: {sys.executable} imports oban from {origin}, not from {src}; "
            "run this with the project's virtualenv (make setup; .venv/bin/python bench/run.py)"
        )
    return importlib.metadata.version("oban")


# Databases


def database_url(dsn: str, dbname: str) -> str:
    """A postgresql:// URL for ``dbname`` on the server of ``dsn`` (asyncpg takes URLs only)."""
    params = conninfo_to_dict(dsn)
    user = quote(str(params.get("user") or os.environ.get("PGUSER") or "postgres"), safe="")
    password = params.get("password")
    auth = user + (f":{quote(str(password), safe='')}" if password else "")
    host = str(params.get("host") or "127.0.0.1")
    host = f"[{host}]" if ":" in host else host
    port = params.get("port") or 5432
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"


def recreate_databases(dsn: str, names: list[str]) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


_CHECKPOINT = {"allowed": True}


def checkpoint(dsn: str) -> None:
    """CHECKPOINT the server before a measured PostgreSQL run, so that no run pays for the
    WAL the steps before it wrote (a checkpoint falling inside one library's run but not
    another's skews their ratio). Best effort: without the right to checkpoint (superuser or
    pg_checkpoint), says so once and goes on."""
    if not _CHECKPOINT["allowed"]:
        return
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.Error as error:
        _CHECKPOINT["allowed"] = False
        print(f"  (no CHECKPOINT before runs: {str(error).strip()})", flush=True)


SQLITE_URL = "sqlite:///"  # + an absolute path: sqlite:////tmp/.../run20-1.db


def sqlite_file(url: str) -> Path:
    return Path(url.removeprefix(SQLITE_URL))


def oban_states(
    rows: list[Any],
    expected: int,
    final: bool,
    front: list[Any] | None = None,
    finished: dict[str, int] | None = None,
) -> str | None:
    """``rows``: (state, count, min attempt, max attempt) of the workload's jobs; ``front``:
    (state, count) of the finished jobs in front of them, which must be as ``fill`` left them
    (``finished``, state -> count)."""
    found = {state: (count, lo, hi) for state, count, lo, hi in rows}
    want = {"completed": (expected, 1, 1)} if final else {"available": (expected, 0, 0)}
    if found != want:
        return f"oban_jobs (state: count, attempts): {found}"
    if finished is not None and dict(front or []) != finished:
        return f"the finished jobs in front (state: count) were {finished}, now {dict(front or [])}"
    return None


def external_check(
    lib: Library,
    url: str,
    expected: int,
    final: bool,
    after_id: int = 0,
    finished: dict[str, int] | None = None,
) -> str | None:
    """Look at the library's tables from here; None if they hold what the workload promised.

    oban (both, and ours on SQLite, read with the stdlib sqlite3 module): ``oban_jobs`` has
    exactly ``expected`` rows, all ``available`` with attempt 0 after an enqueue/fill, all
    ``completed`` with attempt 1 after a run. With ``finished`` (the run with finished jobs in
    the table), that holds for the rows after ``after_id``, and the rows up to it are still
    the finished jobs ``fill`` reported, state by state.
    pgqueuer: after an enqueue/fill, ``pgqueuer`` has exactly ``expected`` ``queued`` rows; after
    a run it is empty and ``pgqueuer_log`` has ``expected`` ``queued``, ``picked`` and
    ``successful`` rows, each for ``expected`` distinct job ids, and no other status.
    """
    jobs = "SELECT state{}, count(*), min(attempt), max(attempt) FROM oban_jobs WHERE id > {}"
    front = "SELECT state{}, count(*) FROM oban_jobs WHERE id <= {} GROUP BY state"
    if lib.family == "sqlite":
        path = sqlite_file(url)
        if not path.exists():
            return f"{path} does not exist"
        conn = sqlite3.connect(path, timeout=30)
        try:
            rows = conn.execute(jobs.format("", "?") + " GROUP BY state", (after_id,)).fetchall()
            done = conn.execute(front.format("", "?"), (after_id,)).fetchall()
        finally:
            conn.close()
        return oban_states(rows, expected, final, done, finished)
    with psycopg.connect(url, autocommit=True) as conn:
        if lib.family == "oban":
            rows = conn.execute(
                jobs.format("::text", "%s") + " GROUP BY state", (after_id,)
            ).fetchall()
            done = conn.execute(front.format("::text", "%s"), (after_id,)).fetchall()
            return oban_states(rows, expected, final, done, finished)
        queue = dict(
            conn.execute("SELECT status::text, count(*) FROM pgqueuer GROUP BY 1").fetchall()
        )
        rows = conn.execute(
            "SELECT status::text, count(*), count(DISTINCT job_id) FROM pgqueuer_log GROUP BY 1"
        ).fetchall()
        logged = {status: (count, distinct) for status, count, distinct in rows}
        if final:
            statuses = ("queued", "picked", "successful")
            ok = not queue and logged == {s: (expected, expected) for s in statuses}
        else:
            ok = queue == {"queued": expected}
        return None if ok else f"pgqueuer {queue}, pgqueuer_log (status: rows, jobs) {logged}"


# Running the drivers


@dataclass
class Step:
    key: str  # bulk, single, run20, run100, stream, latency, raw20, raw100
    label: str
    workload: str
    count: int
    extra: list[str]
    fill: bool = False  # pre-insert ``count`` jobs in a separate process first
    final: bool = False  # jobs end completed (vs available)
    only: tuple[str, ...] = ()  # restricted to these libraries (raw baselines, large workloads)
    baseline_for: str | None = None  # a raw baseline: the key of the run step it bounds
    fill_extra: list[str] = field(default_factory=list)  # options of the ``fill`` process
    large: str | None = None  # "finished" or "rss": one of the two large workloads
    compare_to: str | None = None  # "finished": the key of the plain run it is compared with
    finished: int = 0  # "finished": the finished jobs in the table


OURS = ("ours", "ours-sqlite")


def count_label(n: int) -> str:
    """1,000,000 -> "1M", 100,000 -> "100k", others with thousands separators."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def plain_run(args: argparse.Namespace, c: int, only: tuple[str, ...] = ()) -> Step:
    return Step(
        f"run{c}",
        f"run {args.run:,} no-op jobs, c={c}",
        "run",
        args.run,
        ["--concurrency", str(c)],
        fill=True,
        final=True,
        only=only,
    )


def large_steps(args: argparse.Namespace) -> list[Step]:
    """The two large workloads (ours and ours-sqlite only): the run with finished jobs in the
    table and the RSS-growth run."""
    c = args.large_concurrency
    return [
        Step(
            f"run{c}finished",
            f"run {args.run:,} no-op jobs, c={c}, {count_label(args.finished)} finished in table",
            "run",
            args.run,
            ["--concurrency", str(c), "--finished", str(args.finished)],
            fill=True,
            final=True,
            only=OURS,
            fill_extra=["--finished", str(args.finished)],
            large="finished",
            compare_to=f"run{c}",
            finished=args.finished,
        ),
        Step(
            "rss",
            f"RSS over {args.rss_jobs:,} no-op jobs, c={c}",
            "rss",
            args.rss_jobs,
            ["--concurrency", str(c)],
            fill=True,
            final=True,
            only=OURS,
            large="rss",
        ),
    ]


def plan(args: argparse.Namespace) -> list[Step]:
    if args.large_only:  # the plain run that the finished one is compared with, then both
        return [plain_run(args, args.large_concurrency, OURS), *large_steps(args)]
    steps = [
        Step("bulk", f"bulk enqueue {args.bulk:,} (1 call)", "bulk", args.bulk, []),
        Step("single", f"single enqueue x{args.single:,}", "single", args.single, []),
    ]
    concurrencies = list(args.concurrency)
    if not args.skip_large and args.large_concurrency not in concurrencies:
        concurrencies.append(args.large_concurrency)  # the finished run's comparison
    for c in concurrencies:
        raws = [("raw", "psycopg", "ours")] if "raw" in args.only else []
        if "raw" in args.only and "ours-sqlite" in args.only:
            raws.append(("sqliteraw", "sqlite3", "ours-sqlite"))
        for key, client, lib_key in raws:
            steps.append(
                Step(
                    f"{key}{c}",
                    f"raw {client} claim+complete, batch {c}",
                    "raw",
                    args.run,
                    ["--concurrency", str(c)],
                    fill=True,
                    final=True,
                    only=(lib_key,),
                    baseline_for=f"run{c}",
                )
            )
        steps.append(plain_run(args, c))
    calls = -(-args.stream // args.stream_batch)
    steps.append(
        Step(
            "stream",
            f"enqueue {calls}x{args.stream_batch} while running, c={args.stream_concurrency}",
            "stream",
            args.stream,
            ["--batch", str(args.stream_batch), "--concurrency", str(args.stream_concurrency)],
            final=True,
        )
    )
    steps.append(
        Step(
            "latency",
            f"insert-to-start latency, idle, c={args.latency_concurrency}",
            "latency",
            args.latency,
            ["--gap-ms", str(args.latency_gap_ms), "--concurrency", str(args.latency_concurrency)],
            final=True,
        )
    )
    if not args.skip_large:
        steps += large_steps(args)
    return steps


def child_env(lib: Library) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(lib.env)
    return env


def call_driver(
    lib: Library, url: str, workload: str, count: int, extra: list[str], timeout: float
) -> dict[str, Any]:
    command = [
        lib.python,
        str(DRIVERS / lib.driver),
        "--dsn",
        url,
        "--workload",
        workload,
        "--count",
        str(count),
        "--timeout",
        str(timeout),
        *lib.driver_args,
        *extra,
    ]
    try:
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout + 120,
            env=child_env(lib),
            cwd=BENCH_DIR,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"driver did not exit within {timeout + 120:.0f}s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    data: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if out.returncode != 0 and "error" not in data:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        data["error"] = f"driver exited with status {out.returncode}: {tail}"
    if out.returncode != 0 and out.stderr.strip():
        sys.stderr.write(out.stderr)
    return data


def describe(data: dict[str, Any]) -> str:
    if "error" in data:
        return f"FAILED: {data['error']}"
    text = (
        f"{data['jobs']:>6} jobs in {data['seconds']:7.3f}s = {data['jobs_per_s']:>9,.0f} jobs/s, "
        f"CPU {data['cpu_ms_per_job']:.3f} ms/job, RSS {data['rss_mb']:.1f} MB"
    )
    if "latency_ms" in data:
        lat = data["latency_ms"]
        text += f", p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} ms"
    if "limit" in data:
        text += f" [{data['limit']}]"
    if "finished" in data:
        text += f", {data['finished']:,} finished in table"
        if data.get("prefill_s") is not None:
            text += f" (pre-insert {data['prefill_s']:.1f}s, not timed)"
    if "rss" in data:
        first, last = rss_points(data)
        text += (
            f", RSS {first[1]:.1f} MB after {first[0]:,} jobs, {last[1]:.1f} MB after "
            f"{last[0]:,} ({last[1] - first[1]:+.1f} MB)"
        )
    return text


def rss_points(data: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The first and the last sample ([jobs, RSS MB, peak MB]) of an ``rss`` run."""
    samples = data["rss"]["samples"]
    return samples[0], samples[-1]


def median_run(runs: list[dict[str, Any]], latency: bool) -> dict[str, Any]:
    """The run with the median jobs/s (the median p50 for the latency workload)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    if latency:
        ok.sort(key=lambda r: r["latency_ms"]["p50"])
    else:
        ok.sort(key=lambda r: r["jobs_per_s"])
    return ok[(len(ok) - 1) // 2]


# Tables


def fmt_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "| " + " | ".join(cells) + " |"

    sep = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return "\n".join([line(header), sep, *(line(row) for row in rows)])


def ratio(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or peer == 0:
        return ""
    return f"{ours / peer:.2f}"


def ratio_columns(libs: list[Library]) -> list[tuple[str, str, str]]:
    """(header, numerator key, denominator key): ours / each peer, then ours-sqlite / ours."""
    keys = {lib.key for lib in libs}
    columns = []
    if "ours" in keys:
        columns += [
            (f"ours / {lib.label.split()[0]}", "ours", lib.key)
            for lib in libs
            if lib.key not in ("ours", "ours-sqlite")
        ]
        if "ours-sqlite" in keys:
            columns.append(("ours-sqlite / ours", "ours-sqlite", "ours"))
    return columns


def metric_table(
    title: str,
    steps: list[Step],
    libs: list[Library],
    results: dict[tuple[str, str], dict[str, Any]],
    value: Callable[[dict[str, Any]], float | None],
    fmt: Callable[[float], str],
) -> str:
    columns = ratio_columns(libs)
    header = ["workload", *(lib.label for lib in libs), *(c[0] for c in columns)]
    rows = []
    for step in steps:
        cells, values = [step.label], {}
        for lib in libs:
            data = results.get((step.key, lib.key))
            v = value(data) if data and "error" not in data else None
            values[lib.key] = v
            cells.append("FAILED" if data and "error" in data else ("" if v is None else fmt(v)))
        cells += [ratio(values[a], values[b]) for _, a, b in columns]
        rows.append(cells)
    return f"{title}\n\n{fmt_table(header, rows)}"


def latency_table(
    steps: list[Step], libs: list[Library], results: dict[tuple[str, str], dict[str, Any]]
) -> str | None:
    columns = ratio_columns(libs)
    header = ["latency ms, p50 / p99", *(lib.label for lib in libs), *(c[0] for c in columns)]
    rows = []
    names = {"single": "{}: one call", "latency": "{}"}
    for step in steps:
        if step.key not in names:
            continue
        cells, values = [names[step.key].format(step.label)], {}
        for lib in libs:
            data = results.get((step.key, lib.key))
            lat = data.get("latency_ms") if data else None
            values[lib.key] = lat
            cells.append(f"{lat['p50']:.2f} / {lat['p99']:.2f}" if lat else "FAILED")
        for _, num, den in columns:
            a, b = values[num], values[den]
            cells.append(
                f"{ratio(a['p50'], b['p50'])} / {ratio(a['p99'], b['p99'])}" if a and b else ""
            )
        rows.append(cells)
    if not rows:
        return None
    return "Latency percentiles (lower is better)\n\n" + fmt_table(header, rows)


def baseline_table(
    steps: list[Step], libs: list[Library], results: dict[tuple[str, str], dict[str, Any]]
) -> str | None:
    """Each raw loop against the run cells of the libraries on the same database engine."""
    rows = []
    for step in steps:
        if step.baseline_for is None:
            continue
        raw = results.get((step.key, step.only[0]))
        if not raw or "error" in raw:
            continue
        sqlite = step.only[0] == "ours-sqlite"
        cells = [step.label, f"{raw['jobs_per_s']:,.0f}"]
        for lib in libs:
            run = results.get((step.baseline_for, lib.key))
            ok = run and "error" not in run and (lib.family == "sqlite") == sqlite
            cells.append(ratio(run["jobs_per_s"], raw["jobs_per_s"]) if ok else "")  # type: ignore[index]
        rows.append(cells)
    if not rows:
        return None
    header = ["database limit (no library)", "jobs/s", *(f"{lib.label} run / raw" for lib in libs)]
    return (
        "Raw baseline: one connection claiming B jobs and completing them, two statements per\n"
        "batch, no library: psycopg on the ours database, the stdlib sqlite3 on a new file; the\n"
        "ratio is each library's run jobs/s at concurrency B over the loop on its own database\n\n"
        + fmt_table(header, rows)
    )


def finished_table(
    steps: list[Step], libs: list[Library], results: dict[tuple[str, str], dict[str, Any]]
) -> str | None:
    """Each library's run with finished jobs in the table against its plain run."""
    out = []
    for step in steps:
        if step.large != "finished" or step.compare_to is None:
            continue
        plain = next((s for s in steps if s.key == step.compare_to), None)
        rows = []
        for lib in libs:
            big = results.get((step.key, lib.key))
            if big is None:
                continue
            base = results.get((step.compare_to, lib.key))
            ok = "error" not in big
            base_ok = base is not None and "error" not in base
            prefill = big.get("prefill_s") if ok else None
            rows.append(
                [
                    lib.label,
                    f"{base['jobs_per_s']:,.0f}" if base_ok else "FAILED",  # type: ignore[index]
                    f"{big['jobs_per_s']:,.0f}" if ok else "FAILED",
                    ratio(big["jobs_per_s"], base["jobs_per_s"]) if ok and base_ok else "",  # type: ignore[index]
                    f"{big['cpu_ms_per_job']:.3f}" if ok else "",
                    f"{prefill:.1f}" if prefill is not None else "",
                ]
            )
        if not rows:
            continue
        finished = step.label.rsplit(", ", 1)[-1]  # "1M finished in table"
        header = [
            "library",
            f"{plain.label if plain else step.compare_to}, jobs/s",
            f"{finished}, jobs/s",
            "ratio",
            "CPU ms/job",
            "pre-insert s (not timed)",
        ]
        out.append(
            f"The run with {finished} ({step.finished:,} completed, discarded and cancelled\n"
            "jobs of the same queue and worker, finished over the last hour, in front of the\n"
            "available ones) against the plain run of the same library; target ratio ~1.0\n\n"
            + fmt_table(header, rows)
        )
    return "\n\n".join(out) or None


RSS_PEAK_TARGET_MB = 60.0  # a node running 10,000 jobs
RSS_GROWTH_TARGET_MB = 5.0  # from 10,000 to 100,000 jobs


def rss_table(
    steps: list[Step], libs: list[Library], results: dict[tuple[str, str], dict[str, Any]]
) -> str | None:
    """The RSS-growth run: current RSS after the first tenth of the jobs and after all."""
    step = next((s for s in steps if s.large == "rss"), None)
    if step is None:
        return None
    rows, series = [], []
    first_n = last_n = None
    for lib in libs:
        data = results.get((step.key, lib.key))
        if data is None:
            continue
        if "error" in data:
            rows.append([lib.label, "FAILED", *[""] * 7])
            continue
        first, last = rss_points(data)
        first_n, last_n = int(first[0]), int(last[0])
        growth = last[1] - first[1]
        met = first[2] < RSS_PEAK_TARGET_MB and growth < RSS_GROWTH_TARGET_MB
        rows.append(
            [
                lib.label,
                f"{data['jobs_per_s']:,.0f}",
                f"{data['rss']['before_mb']:.1f}",
                f"{first[1]:.1f}",
                f"{last[1]:.1f}",
                f"{growth:+.1f}",
                f"{first[2]:.1f}",
                f"{data['rss_mb']:.1f}",
                "yes" if met else "NO",
            ]
        )
        samples = " ".join(f"{sample[1]:.1f}" for sample in data["rss"]["samples"])
        series.append(f"  {lib.label}: every {data['rss']['every']:,} jobs: {samples} MB")
    if not rows:
        return None
    a = f"{first_n:,}" if first_n else "first tenth"
    b = f"{last_n:,}" if last_n else "all"
    header = [
        "library",
        "jobs/s",
        "RSS at start",
        f"RSS after {a}",
        f"RSS after {b}",
        f"growth {a} -> {b}",
        f"peak after {a}",
        "peak at end",
        "targets met",
    ]
    return (
        f"{step.label}: the process's RSS in MB (VmRSS from /proc/self/status, read in a job\n"
        "handler every tenth of the jobs; peak = VmHWM at that point, and ru_maxrss at the end).\n"
        f"Targets: peak after {a} < {RSS_PEAK_TARGET_MB:.0f} MB, growth "
        f"< {RSS_GROWTH_TARGET_MB:.0f} MB\n\n"
        + fmt_table(header, rows)
        + "\n\n"
        + "\n".join(series)
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gb() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        return f"{kib / 1024 / 1024:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        return "RAM unknown"


# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="divide every job count by 10")
    parser.add_argument(
        "--only",
        help="comma-separated subset of: ours, ours-sqlite, obanpy, pgq, raw (the psycopg "
        "baseline, and the sqlite3 one with ours-sqlite); default: all of them, or "
        "ours,ours-sqlite with --large-only",
    )
    large = parser.add_mutually_exclusive_group()
    large.add_argument(
        "--skip-large",
        action="store_true",
        help="leave out the two large workloads (the run with --finished finished jobs in the "
        "table, and the --rss-jobs RSS-growth run)",
    )
    large.add_argument(
        "--large-only",
        action="store_true",
        help="run only the two large workloads and the plain run the first is compared with",
    )
    parser.add_argument(
        "--skip-install",
        action="store_true",
        help="do not create or update the peer venvs; fail if they are not ready",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    parser.add_argument("--venv-root", type=Path, default=DEFAULT_VENV_ROOT)
    parser.add_argument("--peer-python", help="Python 3.12 for the peer venvs (default: pyenv's)")
    parser.add_argument(
        "--same-python",
        action="store_true",
        help="run ours on the peers' Python 3.12 too (a /tmp venv with our dependencies and "
        "src/ on PYTHONPATH) instead of the interpreter running this script",
    )
    parser.add_argument("--db-prefix", default="oban_bench_", help="prefix of the databases")
    parser.add_argument(
        "--sqlite-dir",
        type=Path,
        help="where ours-sqlite's temporary directory of database files goes (default: the "
        "system's temporary directory, $TMPDIR or /tmp)",
    )
    parser.add_argument(
        "--keep-sqlite", action="store_true", help="keep ours-sqlite's database files at the end"
    )
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument("--bulk", type=int, default=10_000, help="jobs in one bulk enqueue")
    parser.add_argument("--single", type=int, default=2_000, help="single enqueue calls")
    parser.add_argument("--run", type=int, default=10_000, help="pre-inserted jobs to run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--stream", type=int, default=5_000, help="jobs enqueued while running")
    parser.add_argument("--stream-batch", type=int, default=100)
    parser.add_argument("--stream-concurrency", type=int, default=20)
    parser.add_argument("--latency", type=int, default=200, help="jobs for the latency test")
    parser.add_argument("--latency-gap-ms", type=float, default=10.0)
    parser.add_argument("--latency-concurrency", type=int, default=20)
    parser.add_argument(
        "--finished",
        type=int,
        default=1_000_000,
        help="finished jobs in the table for the large run (ours, ours-sqlite)",
    )
    parser.add_argument(
        "--rss-jobs",
        type=int,
        default=100_000,
        help="jobs of the RSS-growth run (ours, ours-sqlite)",
    )
    parser.add_argument(
        "--large-concurrency", type=int, default=20, help="queue limit of the two large runs"
    )
    parser.add_argument(
        "--debounce-ms",
        type=float,
        help="queue debounce_interval for both oban implementations (default: their own)",
    )
    parser.add_argument("--pgq-driver", choices=("asyncpg", "psycopg"), default="asyncpg")
    parser.add_argument(
        "--pgq-limit-mode",
        choices=("worker", "entrypoint", "none"),
        default="worker",
        help="pgqueuer's concurrency C: run(max_concurrent_tasks=C), the entrypoint's "
        "concurrency_limit=C, or no limit (diagnostic)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    args = parser.parse_args(argv)
    if args.only is None:
        args.only = "ours,ours-sqlite" if args.large_only else "ours,ours-sqlite,obanpy,pgq,raw"
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.only) - {"ours", "ours-sqlite", "obanpy", "pgq", "raw"}
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}")
    if args.large_only and not set(args.only) & set(OURS):
        parser.error("--large-only runs ours and ours-sqlite only: --only names neither")
    if args.quick:
        for name in ("bulk", "single", "run", "stream", "latency", "finished", "rss_jobs"):
            setattr(args, name, max(1, getattr(args, name) // 10))
    if args.rss_jobs < 10:
        parser.error("--rss-jobs: at least 10 (the RSS is sampled every tenth of the jobs)")
    return args


class Targets:
    """Where each library's driver points: its PostgreSQL database, or for ours-sqlite a new
    file per workload run (``<step>-<run>.db``; a run's ``fill`` and ``run`` share it) in a
    temporary directory."""

    def __init__(self, urls: dict[str, str], sqlite_dir: Path | None) -> None:
        self.urls = urls
        self.sqlite_dir = sqlite_dir

    def url(self, lib: Library, name: str) -> str:
        if lib.family != "sqlite":
            return self.urls[lib.key]
        assert self.sqlite_dir is not None
        return f"{SQLITE_URL}{self.sqlite_dir / f'{name}.db'}"


def main(args: argparse.Namespace) -> int:
    dsn = os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN)
    libs = [lib for lib in libraries(args) if lib.key in args.only]
    if "raw" in args.only and not any(lib.key == "ours" for lib in libs):
        libs.insert(0, next(lib for lib in libraries(args) if lib.key == "ours"))
    started = datetime.now(UTC)

    print(f"oban side-by-side benchmark, {started:%Y-%m-%d %H:%M:%S} UTC", flush=True)
    versions: dict[str, str] = {}
    ours_keys = [lib.key for lib in libs if lib.key in ("ours", "ours-sqlite")]
    if ours_keys:
        version = check_ours()
        versions.update(dict.fromkeys(ours_keys, version))
    for lib in libs:
        if lib.venv:
            ensure_venv(lib, args.venv_root, args)
        elif args.same_python:
            ensure_ours_venv(lib, args.venv_root, args)
    databases = [lib.database for lib in libs if lib.database]
    urls = {lib.key: database_url(dsn, lib.database) for lib in libs if lib.database}
    server = recreate_databases(dsn, databases) if databases else None

    print(f"  CPU: {cpu_model()}, nproc {os.cpu_count()}, {memory_gb()}")
    if server:
        print(f"  PostgreSQL {server} ({dsn}); databases {', '.join(databases)}")
    sqlite_dir = None
    if any(lib.family == "sqlite" for lib in libs):
        if args.sqlite_dir:
            args.sqlite_dir.mkdir(parents=True, exist_ok=True)
        sqlite_dir = Path(tempfile.mkdtemp(prefix="oban-bench-sqlite-", dir=args.sqlite_dir))
        kept = "kept" if args.keep_sqlite else "removed at the end"
        print(f"  ours-sqlite: a new database file per run in {sqlite_dir} ({kept})")
    for lib in libs:
        print(f"  {lib.label}: {lib.python}")
    mode = "quick run (counts / 10)" if args.quick else "full run"
    if args.repeat > 1:
        mode += f", median of {args.repeat} runs per cell"
    if args.debounce_ms is not None:
        mode += f", oban queues with debounce_interval {args.debounce_ms:g} ms"
    if args.same_python:
        mode += ", ours on the peers' Python too"
    mode += f", pgqueuer driver {args.pgq_driver}, limit mode {args.pgq_limit_mode}"
    if args.skip_large:
        mode += "; large workloads skipped (--skip-large)"
    else:
        mode += (
            f"; large workloads (ours, ours-sqlite): run with {args.finished:,} finished jobs, "
            f"RSS over {args.rss_jobs:,} jobs"
        )
        if args.large_only:
            mode += " (--large-only)"
    print(f"  {mode}\n", flush=True)
    try:
        return run_all(args, libs, Targets(urls, sqlite_dir), versions, started, server)
    finally:
        if sqlite_dir is not None and not args.keep_sqlite:
            shutil.rmtree(sqlite_dir, ignore_errors=True)


def run_all(
    args: argparse.Namespace,
    libs: list[Library],
    targets: Targets,
    versions: dict[str, str],
    started: datetime,
    server: str | None,
) -> int:
    failures: list[str] = []
    sqlite_info: dict[str, Any] = {}
    for lib in libs:
        data = call_driver(lib, targets.url(lib, "setup"), "setup", 0, [], args.timeout)
        if "error" in data:
            print(f"ERROR: {lib.label}: schema install failed: {data['error']}", file=sys.stderr)
            return 1
        versions[lib.key] = data["version"]
        print(f"  {lib.label}: schema installed (python {data['python']}, {data['version']})")
        if "sqlite" in data:
            sqlite_info = data["sqlite"]
            print(
                f"  {lib.label}: SQLite {sqlite_info['sqlite_version']}, journal_mode "
                f"{sqlite_info['journal_mode']} (the engine also sets synchronous=NORMAL)"
            )

    dsn = os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN)  # for the CHECKPOINT before runs
    steps = plan(args)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    every_run: list[dict[str, Any]] = []
    for step in steps:
        # A raw baseline runs on its one library; every other step on the selected libraries
        # (restricted to ours and ours-sqlite for the large workloads).
        step_libs = [
            lib
            for lib in libs
            if (not step.only or lib.key in step.only)
            and (step.baseline_for is not None or lib.key in args.only)
        ]
        if not step_libs:
            continue
        print(f"\n{step.label}", flush=True)
        for lib in step_libs:
            runs = []
            for index in range(args.repeat):
                url = targets.url(lib, f"{step.key}-{index + 1}")
                filled: dict[str, Any] = {}
                if step.fill:
                    filled = call_driver(
                        lib, url, "fill", step.count, step.fill_extra, args.timeout
                    )
                    if "error" in filled:
                        error = f"pre-insert failed: {filled['error']}"
                        print(f"  {lib.label:<15} FAILED: {error}", flush=True)
                        runs.append({"error": error})
                        failures.append(f"{step.label}, {lib.label}: {error}")
                        continue
                if lib.family != "sqlite":
                    checkpoint(dsn)
                data = call_driver(lib, url, step.workload, step.count, step.extra, args.timeout)
                if "error" not in data and step.large == "finished":
                    data["prefill_s"] = filled.get("prefill_s")
                    found, wrote = data.get("finished_max_id"), filled.get("finished_max_id")
                    if found != wrote:
                        data["error"] = (
                            f"the run found finished jobs up to id {found}, the pre-insert "
                            f"reported {wrote}"
                        )
                if "error" not in data:
                    problem = external_check(
                        lib,
                        url,
                        step.count,
                        step.final,
                        after_id=filled.get("finished_max_id", 0),
                        finished=filled.get("finished_states"),
                    )
                    if problem:
                        data["error"] = f"check from run.py failed: {problem}"
                    else:
                        data["checked"] = "run.py re-checked the tables"
                every_run.append({"step": step.key, "library": lib.key, **data})
                print(f"  {lib.label:<15} {describe(data)}", flush=True)
                runs.append(data)
                if "error" in data:
                    failures.append(f"{step.label}, {lib.label}: {data['error']}")
            chosen = median_run(runs, step.key == "latency")
            results[(step.key, lib.key)] = chosen
            if "error" not in chosen and args.repeat > 1:
                print(f"  {lib.label:<15} median: {describe(chosen)}", flush=True)

    table_steps = [s for s in steps if s.baseline_for is None and s.large != "rss"]
    shown = [lib for lib in libs if lib.key in args.only]
    print()
    print(
        metric_table(
            "Throughput, jobs/s (higher is better; a ratio > 1: the first-named is faster)",
            [s for s in table_steps if s.key != "latency"],
            shown,
            results,
            lambda d: d["jobs_per_s"],
            lambda v: f"{v:,.0f}",
        )
    )
    latency = latency_table(table_steps, shown, results)
    if latency:
        print()
        print(latency)
    print()
    print(
        metric_table(
            "Client CPU per job, ms (time.process_time of the whole process over the timed span;"
            " for ours-sqlite\nthat includes SQLite itself, which runs in the process; lower is"
            " better)",
            table_steps,
            shown,
            results,
            lambda d: d["cpu_ms_per_job"],
            lambda v: f"{v:.3f}",
        )
    )
    print()
    print(
        metric_table(
            "Peak RSS of the process, MB (ru_maxrss; one fresh process per cell; lower is better)",
            table_steps,
            shown,
            results,
            lambda d: d["rss_mb"],
            lambda v: f"{v:.1f}",
        )
    )
    baseline = baseline_table(steps, shown, results)
    if baseline:
        print()
        print(baseline)
    finished = finished_table(steps, shown, results)
    if finished:
        print()
        print(finished)
    rss = rss_table(steps, shown, results)
    if rss:
        print()
        print(rss)
    print(
        "\nEvery cell was checked in the database by the driver and again by run.py "
        "(counts, states, attempts, ran once).",
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "cpu": cpu_model(),
                    "nproc": os.cpu_count(),
                    "postgresql": server,
                    "sqlite": sqlite_info,
                    "sqlite_dir": str(targets.sqlite_dir) if targets.sqlite_dir else None,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "versions": versions,
                    "runs": every_run,
                },
                indent=2,
            )
        )
    if failures:
        print(f"\nERROR: {len(failures)} run(s) failed (a cell shows FAILED only if all its")
        print("repeats failed; otherwise the median of the runs that passed):")
        for failure in failures:
            print(f"  {failure}")
        return 1
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    status = main(parse_args())
    print(f"\n(total {time.perf_counter() - t0:.0f}s)")
    sys.exit(status)
