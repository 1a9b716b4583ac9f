"""``examples/demo.py`` runs end to end and shows what it promises."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.helpers import reap

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
async def test_demo_runs_and_shows_retry_snooze_cancel_and_record(dsn: str, engine: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBAN_")}
    # A schema of this run's own: two test runs may share the server.
    demo_schema = f"demo_{uuid.uuid4().hex[:10]}"
    if engine == "postgres":
        env["OBAN_DSN"] = dsn
        env["OBAN_PREFIX"] = demo_schema
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "examples/demo.py",
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            raw, _ = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            await reap(proc)
    finally:
        if engine == "postgres":
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{demo_schema}" CASCADE')
    out = raw.decode()
    assert proc.returncode == 0, out

    assert ("SQLite" if engine == "sqlite" else "PostgreSQL") in out
    lines = out.splitlines()

    def summary(worker: str) -> str:
        found = [line for line in lines if re.match(rf"job\s+\d+ {worker}\s", line)]
        assert len(found) == 1, f"no single summary line for {worker}:\n{out}"
        return found[0]

    # Retried: failed once with the ConnectionError, completed on attempt 2.
    payment = summary("FlakyPayment")
    assert re.search(r"\bcompleted\s+attempt 2\b", payment), payment
    assert "ConnectionError: payment gateway timed out" in payment
    assert "FlakyPayment attempt 1: the gateway timed out, raising" in out
    assert "FlakyPayment attempt 2: charged 1999 cents" in out

    # Snoozed once, then completed without using up an attempt.
    stock = summary("WaitForStock")
    assert re.search(r"\bcompleted\s+attempt 1\b", stock), stock
    assert "snoozed 1x" in stock

    # Cancelled with its reason.
    obsolete = summary("Obsolete")
    assert re.search(r"\bcancelled\s+attempt 1\b", obsolete), obsolete
    assert "the order was withdrawn" in obsolete

    # The recorded return value.
    total = summary("add")
    assert re.search(r"\bcompleted\s+attempt 1\b", total), total
    assert "recorded: {'sum': 7}" in total
