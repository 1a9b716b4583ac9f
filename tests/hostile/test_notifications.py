"""Notifications are untrusted input (issue 16 item 4).

Any database login may NOTIFY on the oban channels, and any writer of a SQLite file may add
rows to its ``oban_signals`` table. With ``notifier={"secret": ...}`` a node acts only on
control signals signed with that secret, recently; without it, on every signal that passes the
API's own checks. A flood of junk notifications is dropped and counted (telemetry) without
holding up heartbeats, job execution or shutdown.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
import sqlite3
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Oban, schema, telemetry
from oban._wire import SIGNATURE, SIGNED_AT, _digest, encode_payload, sign
from tests.helpers import eventually, oban_factory

SECRET = "s3cret-for-tests"


@pytest.fixture
def dropped() -> Any:
    reasons: list[str] = []
    telemetry.attach(
        "hostile-dropped",
        ["oban.notifier.dropped"],
        lambda _e, meta: reasons.append(meta["reason"]),
    )
    try:
        yield reasons
    finally:
        telemetry.detach("hostile-dropped")


@pytest.fixture(params=["postgres", "sqlite"])
async def nodes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, Callable[..., Oban], Callable[[str], Any]]]:
    """(engine, make, send_raw): ``make(**options)`` builds instances on one database;
    ``await send_raw(payload)`` delivers a signal payload as a stranger would: pg_notify on
    PostgreSQL, a row written with sqlite3 on SQLite."""
    engine = str(request.param)
    if engine == "postgres":
        dsn = request.getfixturevalue("dsn")
        prefix = f"h_{uuid.uuid4().hex[:12]}"
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, open=False)
        await pool.open(wait=True, timeout=10)

        async def send_raw(payload: str) -> None:
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_notify(%s, %s)", (f"{prefix}.oban_signal", payload))

        try:
            await schema.install(pool, prefix)
            async with oban_factory(pool=pool, prefix=prefix) as make:
                yield engine, make, send_raw
        finally:
            async with pool.connection() as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{prefix}" CASCADE')
            await pool.close()
    else:
        path = tmp_path / "jobs.db"

        async def send_raw(payload: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute(
                    "INSERT INTO oban_signals (channel, payload, origin) VALUES (?, ?, ?)",
                    ("signal", payload, "stranger"),
                )

        async with oban_factory(dsn=f"sqlite:///{path}") as make:
            yield engine, make, send_raw


def _limit(oban: Oban) -> int:
    info = oban.check_queue("hq")
    assert info is not None
    return info.limit


async def test_with_a_secret_only_recent_signals_signed_with_it_are_obeyed(
    nodes: tuple[str, Callable[..., Oban], Callable[[str], Any]], dropped: list[str]
) -> None:
    engine, make, send_raw = nodes
    node = await make(
        name="Oban", node="runner", queues={"hq": 1}, notifier={"secret": SECRET}
    ).start()
    # Another process of the same deployment (a client with the secret) is obeyed...
    client = make(name="Oban", node="client", notifier={"secret": SECRET})
    await client.scale_queue(queue="hq", limit=3)
    await eventually(lambda: _limit(node) == 3, message="the signed scale was obeyed")

    # ...a stranger is not: unsigned, wrongly signed, or a captured signal replayed late.
    message = {"action": "scale", "queue": "hq", "limit": 7, "ident": "any"}
    stale = {**message, SIGNED_AT: round(time.time() - 120, 3)}
    stale[SIGNATURE] = _digest(stale, SECRET)
    for payload in [
        encode_payload(message),
        encode_payload(sign(message, "not-the-secret")),
        encode_payload(stale),
    ]:
        await send_raw(payload)
    await eventually(lambda: len(dropped) >= 3, message="the three refusals counted")
    assert sorted(dropped) == ["bad signature", "signed too long ago", "unsigned"]
    assert _limit(node) == 3

    # A signal signed with the secret, sent the same way, is obeyed (the path works).
    await send_raw(encode_payload(sign({**message, "limit": 4}, SECRET)))
    await eventually(lambda: _limit(node) == 4, message="a signed raw signal was obeyed")
    assert engine in ("postgres", "sqlite")


async def test_without_a_secret_signals_from_any_sender_are_checked_as_the_api_checks(
    nodes: tuple[str, Callable[..., Oban], Callable[[str], Any]],
) -> None:
    _engine, make, send_raw = nodes
    node = await make(name="Oban", node="runner", queues={"hq": 1}).start()
    bad_signals: list[dict[str, Any]] = [
        {"action": "scale", "queue": "hq", "limit": 0},
        {"action": "scale", "queue": "hq", "limit": 99_999_999_999},
        {"action": "scale", "queue": "hq", "limit": "5"},
        {"action": ["scale"], "queue": "hq", "limit": 5},
        {"action": "start", "queue": "new", "limit": 100_000},
        {"action": "start", "queue": "new2", "limit": 2, "debounce_interval": "x"},
    ]
    for bad in bad_signals:
        await send_raw(encode_payload({**bad, "ident": "any"}))
    await send_raw(encode_payload({"action": "scale", "queue": "hq", "limit": 2, "ident": "any"}))
    await eventually(lambda: _limit(node) == 2, message="the valid signal after the bad ones")
    assert {info.queue for info in node.check_all_queues()} == {"hq"}


# ---------------------------------------------------------------------------------------------
# A flood against a real node process
# ---------------------------------------------------------------------------------------------

WORKERS = textwrap.dedent(
    """
    from oban import worker


    @worker(queue="default")
    class FloodNoop:
        async def process(self, job):
            return None
    """
)

CONFIG = textwrap.dedent(
    """
    shutdown_grace_period = 3

    [refresher]
    interval = 0.5
    max_age = 5
    """
)


def _junk() -> list[str]:
    """Payloads a little under PostgreSQL's 8000-byte limit that are not worth reading: a gzip
    bomb (4 MB of JSON in ~4 KB), invalid base64, and not JSON. The flood appends a counter,
    as PostgreSQL folds identical notifications of one transaction into one."""
    bomb = gzip.compress(b'{"a":"' + b" " * 4_000_000 + b'"}', compresslevel=9)
    return ["Z:" + base64.b64encode(bomb).decode(), "H4sI" + "!" * 7_800, "{" + "x" * 7_800]


async def test_a_notification_flood_does_not_stop_heartbeats_jobs_or_shutdown(
    dsn: str, prefix: str, tmp_path: Path, sql: Callable[..., Any], make_oban: Callable[..., Oban]
) -> None:
    (tmp_path / "flood_workers.py").write_text(WORKERS)
    (tmp_path / "oban.toml").write_text(CONFIG)
    output = tmp_path / "node.out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with output.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "oban", "start", "--dsn", dsn, "--prefix", prefix,
            "--queues", "default:5", "--node", "flooded",
            cwd=tmp_path, env=env, stdout=sink, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    client = make_oban(name="Oban")

    def tail() -> str:
        return "\n".join(output.read_text(errors="replace").splitlines()[-30:])

    async def heartbeat() -> Any:
        rows = await sql("SELECT max(updated_at) FROM oban_producers WHERE node = 'flooded'")
        return rows[0][0]

    try:
        await eventually(heartbeat, timeout=20, message="the node registered")
        channel = f"{prefix}.oban_signal"
        stop_at = time.monotonic() + 6.0
        sent = 0
        beats: list[Any] = []
        jobs = []

        junk = _junk()

        def flood() -> int:
            count = 0
            with psycopg.connect(dsn, autocommit=True) as conn:
                while time.monotonic() < stop_at:
                    for payload in junk:  # 100 notifications per statement
                        conn.execute(
                            "SELECT pg_notify(%s, %s || n::text) FROM generate_series(1, 100) n",
                            (channel, payload),
                        )
                        count += 100
            return count

        flooding = asyncio.create_task(asyncio.to_thread(flood))
        while not flooding.done():
            beats.append(await heartbeat())
            jobs.append(await client.enqueue(client_job()))
            await asyncio.sleep(0.5)
        sent = await flooding

        # Heartbeats kept coming during the flood (interval 0.5 s: at least one per 1.5 s).
        distinct = sorted(set(beats))
        assert len(distinct) >= 4, f"heartbeats stalled: {distinct}\n{tail()}"
        # Every job enqueued during the flood ran, promptly.
        for job in jobs:

            async def done(job_id: int = job.id) -> bool:  # type: ignore[assignment]
                found = await client.get_job(job_id)
                return found is not None and found.state == "completed"

            await eventually(done, timeout=10, message=f"job {job.id} completed\n{tail()}")

        # It still stops within its grace period.
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
        elapsed = time.monotonic() - started
        assert code == 0, tail()
        assert elapsed < 3.0 + 2.0, f"stopped after {elapsed:.1f}s\n{tail()}"
        text = output.read_text(errors="replace")
        # The drops are counted and logged in batches, not a line each.
        warnings = [line for line in text.splitlines() if " WARNING " in line]
        assert 1 <= len(warnings) <= 20, f"{len(warnings)} warnings for {sent} drops\n{tail()}"
        assert "dropped notifications" in warnings[0]
        print(f"flood: {sent} junk notifications in 6 s; node stopped in {elapsed:.2f}s")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def client_job() -> Any:
    from oban import Job

    return Job("flood_workers.FloodNoop", queue="default")


def test_signatures_cover_every_field() -> None:
    signed = sign({"action": "pause", "queue": "a"}, SECRET)
    tampered = {**signed, "queue": "b"}
    assert _digest(signed, SECRET) == signed[SIGNATURE]
    assert _digest(tampered, SECRET) != signed[SIGNATURE]
    assert json.loads(encode_payload(signed))[SIGNED_AT] == signed[SIGNED_AT]
