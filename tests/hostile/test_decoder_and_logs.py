"""The recorded-value decoder is bounded, and logs carry no secrets and no floods (issue 16,
items 5 and 6).

* ``decode_recorded`` (``Job.recorded``) reads terms anyone who can write ``oban_jobs.meta``
  controls: a compressed term declaring gigabytes, or a list of millions of one-byte ``[]``
  terms, is refused with :class:`TermTooLargeError` (a ``ValueError``) before the memory is
  spent, never with ``MemoryError``.
* A DSN's password never reaches ``oban start``'s output: not for an unsupported scheme, not
  for a malformed PostgreSQL DSN, not in psycopg_pool's own warnings.
* The JSON logger bounds each value it writes (args, meta, tags, error messages), and
  ``oban start`` leaves job args out unless ``OBAN_LOG_ARGS`` turns them on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import struct
import sys
import textwrap
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from oban import Job, Oban, telemetry
from oban._engines import _dsn
from oban._recorded import (
    MAX_TERM_ELEMENTS,
    TermTooLargeError,
    decode_recorded,
    decode_term,
    encode_recorded,
)
from oban.job import JobState
from oban.telemetry import logger as telemetry_logger
from tests.helpers import eventually, reap, run_command

OBAN = [sys.executable, "-m", "oban"]
SECRET = "hunter2-Zq8"
T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Decoder bombs
# ---------------------------------------------------------------------------------------------

_CHUNK = 1 << 24  # 16 MiB of zeros per repeated deflate chunk (~16 KB compressed)


def _zero_stream(chunks: int) -> bytes:
    """A valid zlib stream that inflates to ``chunks`` * 16 MiB of zeros, built without
    compressing gigabytes: one fully flushed deflate chunk repeated (a full flush resets the
    window, so the copies are independent), then a final empty block and the adler32 of the
    zeros (a = 1, b = n mod 65521)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = deflate.compress(bytes(_CHUNK)) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.flush(zlib.Z_FINISH)
    total = chunks * _CHUNK
    return b"\x78\xda" + chunk * chunks + tail + struct.pack(">I", ((total % 65521) << 16) | 1)


def _text(term: bytes) -> str:
    return base64.b64encode(term).decode().rstrip("=")


def _measured(action: Callable[[], T]) -> tuple[BaseException | T, float, int]:
    """(result or raised exception, seconds, tracemalloc peak bytes) of ``action()``."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        outcome: BaseException | T = action()
    except Exception as error:  # MemoryError too: the assertions say what was expected
        outcome = error
    except MemoryError as error:
        outcome = error
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return outcome, elapsed, peak


def test_a_4mb_compressed_term_declaring_4gib_is_refused_before_inflating() -> None:
    stream = _zero_stream(255)  # ~4.2 MB inflating to 4,278,190,080 bytes
    assert 4_000_000 < len(stream) < 4_400_000
    text = _text(bytes([131, 80]) + struct.pack(">I", 255 * _CHUNK) + stream)
    del stream

    outcome, elapsed, peak = _measured(lambda: decode_recorded(text))

    assert isinstance(outcome, TermTooLargeError), outcome
    assert isinstance(outcome, ValueError)
    assert "4278190080" in str(outcome) and "max_bytes" in str(outcome)
    assert elapsed < 1.0
    # The base64 text decoded once (~4 MB) and little more: not the gigabytes declared.
    assert peak < 16_000_000, peak


def test_a_compressed_term_cannot_declare_more_than_deflate_can_hold() -> None:
    # 32 KiB of compressed zeros can inflate to ~33 MB at most (deflate tops out at 1032:1):
    # a header declaring 60 MB is a lie, refused before a byte is inflated.
    stream = _zero_stream(1)[:32_768]
    term = bytes([131, 80]) + struct.pack(">I", 60_000_000) + stream
    with pytest.raises(ValueError, match="cannot inflate to"):
        decode_term(term)


def test_a_compressed_term_inflating_past_its_declared_size_stops_there() -> None:
    # Declares 1,000 bytes but holds 48 MiB of zeros: inflation stops after 1,001 bytes.
    text = _text(bytes([131, 80]) + struct.pack(">I", 1_000) + _zero_stream(3))
    outcome, _elapsed, peak = _measured(lambda: decode_recorded(text))
    assert isinstance(outcome, ValueError), outcome
    assert "declared size" in str(outcome)
    assert peak < 2_000_000, peak


def test_a_compressed_term_over_the_cap_may_be_read_with_a_larger_cap() -> None:
    payload = b"a" * 3_000_000
    term = bytes([131, 109]) + struct.pack(">I", len(payload)) + payload
    compressed = bytes([131, 80]) + struct.pack(">I", len(term) - 1) + zlib.compress(term[1:])
    with pytest.raises(TermTooLargeError, match="max_bytes"):
        decode_term(compressed, max_bytes=1_000_000)
    assert decode_term(compressed, max_bytes=4_000_000) == payload.decode()


def test_a_flat_list_of_millions_of_empty_lists_is_refused_at_its_header() -> None:
    # 4 MB: LIST_EXT of 4,000,000 NIL_EXT (one byte each, each a new Python list of 56+8
    # bytes: ~100x) is refused when its length is read.
    count = 4_000_000
    text = _text(bytes([131, 108]) + struct.pack(">I", count) + bytes([106]) * (count + 1))

    outcome, elapsed, peak = _measured(lambda: decode_recorded(text))

    assert isinstance(outcome, TermTooLargeError), outcome
    assert f"{MAX_TERM_ELEMENTS:,}" in str(outcome) or str(MAX_TERM_ELEMENTS) in str(outcome)
    assert elapsed < 1.0
    assert peak < 16_000_000, peak


def test_nested_small_lists_are_counted_across_every_level() -> None:
    # 500,000 lists of three empty lists: each container's header is within bounds, the
    # total (2,000,000 terms) is not. Refused part way, having built at most the budget.
    outer = 500_000
    inner = bytes([108]) + struct.pack(">I", 3) + bytes([106]) * 4
    text = _text(bytes([131, 108]) + struct.pack(">I", outer) + inner * outer + bytes([106]))

    started = time.perf_counter()
    with pytest.raises(TermTooLargeError, match="max_elements"):
        decode_recorded(text)  # the default budget (tracemalloc would slow this tenfold)
    assert time.perf_counter() - started < 5.0

    # What is built before the refusal is bounded by the budget: ~48 MB for the default
    # million terms (the whole value, 2,000,000 lists, would be ~130 MB), ~3 MB here.
    outcome, _elapsed, peak = _measured(lambda: decode_recorded(text, max_elements=50_000))
    assert isinstance(outcome, TermTooLargeError), outcome
    assert peak < 4_000_000 + 3 * len(text), peak


def test_values_within_the_limits_still_round_trip() -> None:
    value = {"rows": [[i, f"r{i}", None, True] for i in range(50_000)], "n": 50_000}
    assert decode_recorded(encode_recorded(value)) == value
    big = "x" * 20_000_000  # a 20 MB string: one term, well under max_bytes
    assert decode_recorded(encode_recorded(big)) == big


def test_job_recorded_reports_a_bomb_as_a_value_error() -> None:
    text = _text(bytes([131, 80]) + struct.pack(">I", 0xFFFF_FFFF) + _zero_stream(1))
    job = Job("app.W", meta={"recorded": True, "return": text})
    with pytest.raises(ValueError, match="too large"):
        _ = job.recorded


# ---------------------------------------------------------------------------------------------
# DSN passwords
# ---------------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "bad_dsn",
    [
        f"mysql://app:{SECRET}@db.internal/jobs",
        f"mysql:app:{SECRET}@db.internal/jobs",
        f"app:{SECRET}@db.internal/jobs",
        f"jdbc:postgresql:app:{SECRET}@db/jobs",
        f"host=db user=app password={SECRET}",
        f"host=db user=app password = '{SECRET} x'",
    ],
)
async def test_an_unsupported_dsn_is_not_echoed_with_its_password(
    bad_dsn: str, tmp_path: Path
) -> None:
    code, out = await run_command(
        *OBAN, "start", "--dsn", bad_dsn, "--dry-run", cwd=tmp_path, env=_env(), timeout=30
    )
    assert code != 0, out
    assert "unsupported dsn" in out, out
    assert SECRET not in out, out
    assert SECRET[:-1] not in out, out


async def test_an_unsupported_dsn_from_the_environment_is_not_echoed(tmp_path: Path) -> None:
    code, out = await run_command(
        *OBAN,
        "start",
        "--dry-run",
        cwd=tmp_path,
        env=_env(OBAN_DSN=f"mysql://app:{SECRET}@db.internal/jobs"),
        timeout=30,
    )
    assert code != 0, out
    assert "unsupported dsn" in out, out
    assert SECRET not in out, out


@pytest.mark.parametrize(
    "bad_dsn",
    [
        # libpq quotes the whole URI in these errors (our probe reports them).
        f"postgresql://app:{SECRET}@[::1/jobs",
        f"postgresql://app:{SECRET}@[::1]x/jobs",
        f"postgresql://app:{SECRET}@127.0.0.1:1/jobs?options=%zz",
        # A password holding "@": libpq splits it and names the rest as the host.
        f"postgresql://app:{SECRET}@part@127.0.0.1:1/jobs",
    ],
)
async def test_a_malformed_postgres_dsn_is_not_echoed_with_its_password(
    bad_dsn: str, tmp_path: Path
) -> None:
    code, out = await run_command(
        *OBAN,
        "start",
        "--dsn",
        bad_dsn,
        "--queues",
        "default:1",
        cwd=tmp_path,
        env=_env(OBAN_POOL_TIMEOUT="3"),
        timeout=60,
    )
    assert code != 0, out
    assert SECRET not in out, out


async def test_psycopg_pool_warnings_in_oban_start_mask_the_password(
    dsn: str, tmp_path: Path
) -> None:
    # The one DSN defect only the pool meets: our probe connects with its own
    # connect_timeout, the pool with the DSN's. psycopg_pool then warns, on every retry,
    # "error connecting in 'pool-1': bad value for connect_timeout: '<value>'", and here the
    # value carries a password (an options string percent-encoded whole into one parameter).
    separator = "&" if "?" in dsn else "?"
    bad = f"{dsn}{separator}connect_timeout=10%26password%3D{SECRET}"
    code, out = await run_command(
        *OBAN,
        "start",
        "--dsn",
        bad,
        "--queues",
        "default:1",
        cwd=tmp_path,
        env=_env(OBAN_POOL_TIMEOUT="3"),
        timeout=60,
    )
    assert code != 0, out
    assert "psycopg.pool" in out, out  # the pool's own warnings were shown...
    assert SECRET not in out, out  # ...masked


LIBRARY_START = """
import asyncio, logging, sys
from oban import Oban

logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")

async def main():
    try:
        await Oban(dsn=sys.argv[1], queues={"default": 1}, pool_timeout=3).start()
    except Exception as error:
        print(type(error).__name__, error)

asyncio.run(main())
"""


async def test_psycopg_pool_warnings_in_a_program_of_its_own_mask_the_password(
    dsn: str, tmp_path: Path
) -> None:
    # The same defect as above, met by a program that starts Oban itself (not `oban start`).
    separator = "&" if "?" in dsn else "?"
    bad = f"{dsn}{separator}connect_timeout=10%26password%3D{SECRET}"
    code, out = await run_command(
        sys.executable, "-c", LIBRARY_START, bad, cwd=tmp_path, env=_env(), timeout=60
    )
    assert code == 0 and "DatabaseUnavailableError" in out, out
    assert "psycopg.pool" in out, out  # the pool's own warnings were shown...
    assert SECRET not in out, out  # ...masked


@pytest.fixture
def pool_log() -> Iterator[list[str]]:
    """Lines of the ``psycopg.pool`` logger, formatted as a handler formats them."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    target = logging.getLogger("psycopg.pool")
    target.addHandler(handler)
    try:
        yield lines
    finally:
        target.removeHandler(handler)


def test_pool_log_records_are_scrubbed_of_known_and_url_passwords(pool_log: list[str]) -> None:
    dsn = f"postgresql://app:{SECRET}@db/jobs?sslpassword=other-{SECRET}"
    # libpq ends the password at the first "@": the rest is quoted as a host name.
    split = f"postgresql://app:pre@{SECRET}@db/jobs"
    _dsn.guard_pool_logs(dsn)
    _dsn.guard_pool_logs(split)
    pool = logging.getLogger("psycopg.pool")
    pool.warning("error connecting in %r: %s", "pool-1", f'invalid URI: "{dsn}"')
    pool.warning("error connecting: %s", f"failed to resolve host '{SECRET}@db'")
    # A DSN oban never saw: masked by its shape.
    pool.warning("error: %s", "postgresql://someone:pa55word@elsewhere/db password=pa55word")
    try:
        raise RuntimeError(f"while connecting to {dsn}")
    except RuntimeError:
        pool.exception("task failed")

    text = "\n".join(pool_log)
    assert SECRET not in text, text
    assert "resolve host '***@db'" in text, text
    assert "pa55word" not in text, text
    assert "postgresql://app:***@db/jobs" in text
    assert "pool-1" in text


# ---------------------------------------------------------------------------------------------
# JSON logs
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def oban_log(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    logging.getLogger("oban").addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger("oban").removeHandler(handler)
        telemetry_logger.detach()


def _stop(job: Job, **extra: Any) -> dict[str, Any]:
    return {
        "job": job,
        "duration": 1_000,
        "queue_time": 1_000,
        "state": JobState.COMPLETED,
        **extra,
    }


LINE_BOUND = 40_000


def test_json_lines_of_huge_jobs_stay_bounded(oban_log: list[str]) -> None:
    telemetry_logger.attach(level=logging.INFO)
    huge_args = Job("app.W", id=1, args={"n": 1, "blob": "x" * 50_000_000, "after": 2})
    many_tags = Job("app.W", id=2, tags=[f"tag-{i}" for i in range(1_000_000)])
    huge_meta = Job("app.W", id=3, meta={"return": "A" * 10_000_000, "k": list(range(10**6))})

    started = time.perf_counter()
    for job in (huge_args, many_tags, huge_meta):
        telemetry.execute("oban.job.start", {"job": job})
        telemetry.execute("oban.job.stop", _stop(job))
    telemetry.execute(
        "oban.job.exception",
        _stop(huge_args, error_type="ValueError", error_message="e" * 5_000_000, traceback="t"),
    )
    elapsed = time.perf_counter() - started

    lines = [line for line in oban_log if line.startswith("{")]
    assert len(lines) == 7
    assert max(len(line) for line in lines) < LINE_BOUND, [len(line) for line in lines]
    assert elapsed < 2.0
    first = json.loads(lines[0])
    assert first["args"]["n"] == 1
    assert first["args"]["blob"].startswith("xxx") and first["args"]["blob"].endswith("…")
    assert "args" in first["truncated"]
    tags = json.loads(lines[2])
    assert tags["truncated"] == ["tags"]
    assert tags["tags"][0] == "tag-0" and "more" in tags["tags"][-1]
    exception = json.loads(lines[6])
    assert len(exception["error_message"]) < 5_000


def test_args_can_be_left_out_and_the_bound_configured(oban_log: list[str]) -> None:
    telemetry_logger.attach(args=False, max_value_bytes=100)
    job = Job("app.W", id=7, args={"password": SECRET}, meta={"m": "y" * 1_000})
    telemetry.execute("oban.job.stop", _stop(job))
    [line] = [line for line in oban_log if line.startswith("{")]
    data = json.loads(line)
    assert "args" not in data and SECRET not in line
    assert len(json.dumps(data["meta"])) < 200
    with pytest.raises(ValueError, match="max_value_bytes"):
        telemetry_logger.attach(max_value_bytes=0)


def test_options_from_env() -> None:
    assert telemetry_logger.options_from_env({}) == {"args": False}
    assert telemetry_logger.options_from_env({"OBAN_LOG_ARGS": "true"}) == {"args": True}
    assert telemetry_logger.options_from_env(
        {"OBAN_LOG_ARGS": "0", "OBAN_LOG_MAX_VALUE_BYTES": "512"}
    ) == {"args": False, "max_value_bytes": 512}
    with pytest.raises(ValueError, match="OBAN_LOG_ARGS"):
        telemetry_logger.options_from_env({"OBAN_LOG_ARGS": "maybe"})


LOG_WORKERS = textwrap.dedent(
    """
    from oban import worker

    @worker(queue="default")
    class Quiet:
        async def process(self, job):
            return None
    """
)


async def _start_node(tmp_path: Path, db: Path, **env: str) -> tuple[Any, list[bytes]]:
    (tmp_path / "hostile_log_workers.py").write_text(LOG_WORKERS)
    path = os.pathsep.join([str(tmp_path), *sys.path])
    proc = await asyncio.create_subprocess_exec(
        *OBAN,
        "start",
        "--dsn",
        f"sqlite:///{db}",
        "--queues",
        "default:2",
        cwd=tmp_path,
        env=_env(PYTHONPATH=path, **env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=256 * 1024 * 1024,
    )
    chunks: list[bytes] = []

    async def pump() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(1 << 20):
            chunks.append(chunk)

    proc._pump = asyncio.get_running_loop().create_task(pump())  # type: ignore[attr-defined]
    await eventually(
        lambda: b"running queues" in b"".join(chunks), timeout=30, message="node started"
    )
    return proc, chunks


async def _stop_node(proc: Any, chunks: list[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 60)
    await proc._pump
    return b"".join(chunks).decode()


async def _wait_completed(client: Oban, jobs: list[Job]) -> None:
    async def done() -> bool:
        for job in jobs:
            assert job.id is not None
            found = await client.get_job(job.id)
            if found is None or found.state != "completed":
                return False
        return True

    await eventually(done, timeout=60, interval=0.2, message="jobs completed")


async def test_oban_start_leaves_args_out_and_bounds_lines(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    proc, chunks = await _start_node(tmp_path, db)
    client = Oban(dsn=f"sqlite:///{db}", name="hostile-logs-client")
    try:
        jobs = [
            await client.enqueue(
                Job("hostile_log_workers.Quiet", args={"token": SECRET, "blob": "x" * 50_000_000})
            ),
            await client.enqueue(
                Job("hostile_log_workers.Quiet", tags=[f"t{i}" for i in range(1_000_000)])
            ),
        ]
        await _wait_completed(client, jobs)
        out = await _stop_node(proc, chunks)
    finally:
        await client.stop()
        Oban._instances.pop("hostile-logs-client", None)
        await reap(proc)

    assert proc.returncode == 0, out[-2_000:]
    assert SECRET not in out
    assert max(len(line) for line in out.splitlines()) < LINE_BOUND
    events = [json.loads(line[line.index("{") :]) for line in out.splitlines() if '"event"' in line]
    stops = [e for e in events if e.get("event") == "oban.job.stop"]
    assert {e["id"] for e in stops} == {job.id for job in jobs}, out[-2_000:]
    assert all("args" not in e for e in stops)


async def test_oban_start_logs_args_when_asked(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    proc, chunks = await _start_node(tmp_path, db, OBAN_LOG_ARGS="1")
    client = Oban(dsn=f"sqlite:///{db}", name="hostile-logs-args")
    try:
        job = await client.enqueue(Job("hostile_log_workers.Quiet", args={"n": 1}))
        await _wait_completed(client, [job])
        out = await _stop_node(proc, chunks)
    finally:
        await client.stop()
        Oban._instances.pop("hostile-logs-args", None)
        await reap(proc)

    stops = [
        json.loads(line[line.index("{") :])
        for line in out.splitlines()
        if '"event":"oban.job.stop"' in line
    ]
    assert [e["args"] for e in stops] == [{"n": 1}], out[-2_000:]


def test_a_password_that_contains_another_is_masked_whole(pool_log: list[str]) -> None:
    """Two DSNs, one's password inside the other's: masked as a whole, whichever was given
    first (masking the shorter first would leave the rest of the longer in the log)."""
    _dsn.guard_pool_logs("postgresql://app:swordfish@db/one")
    _dsn.guard_pool_logs("postgresql://app:swordfish-Kp4@db/two")
    logging.getLogger("psycopg.pool").warning("failed to resolve host 'swordfish-Kp4@db'")
    text = "\n".join(pool_log)
    assert "Kp4" not in text and "resolve host '***@db'" in text, text
