"""PostgreSQL refusing the relay notification sent by the ack statement (its notification
queue full, SQLSTATE 54000) must not cost the acks: they are written without it and the
relayed ids announced apart. The queue holds 8 GB, so the refusal is injected into the one
statement that carries the notification; everything else runs on the real database."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.errors import ProgramLimitExceeded

from oban import Oban
from tests.integration.relay_workers import Echo


async def test_acks_are_written_when_the_relay_notification_is_refused(
    make_oban: Callable[..., Oban],
    dsn: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="oban")
    node = make_oban(queues={"relay": 2})
    await node.start()
    engine: Any = await node._ready()
    real = engine._execute_text
    refused: list[str] = []

    async def queue_full(conn: Any, sql: str, params: tuple[Any, ...]) -> Any:
        if "relayed AS (" in sql and '"id"' in str(params):  # a statement writing acks
            refused.append(sql)
            raise ProgramLimitExceeded("too many notifications in the NOTIFY queue")
        return await real(conn, sql, params)

    monkeypatch.setattr(engine, "_execute_text", queue_full)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{prefix}.oban_relay"')
        jobs = await node.enqueue_many(
            [Echo.new({"value": n}, meta={"relay": True}) for n in range(2)]
        )
        outcomes = await node.await_many(jobs, timeout=10)
        assert [(o.state, o.value) for o in outcomes] == [("completed", 0), ("completed", 1)]
        heard: set[int] = set()
        async for note in listener.notifies(timeout=2.0):
            heard |= set(json.loads(note.payload)["ids"])
            if len(heard) == 2:
                break
    assert refused, "no ack statement carried the notification"
    assert heard == {job.id for job in jobs}, "the relayed jobs were not announced apart"
    assert "relay notification refused, acks written without it" in caplog.text
