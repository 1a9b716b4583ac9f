"""Signals shaped as Elixir Oban 2.23 sends them, NOTIFYed on PostgreSQL, act on Python queues.

The payloads are what ``Oban.pause_queue/2``, ``resume_queue/2``, ``scale_queue/2`` and
``cancel_all_jobs/2`` send (``deps/oban/lib/oban.ex``): JSON up to 512 bytes, ``Z:`` + base64
gzip above, bare base64 gzip from older nodes (``deps/oban/lib/oban/notifier.ex``).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from oban import Cancel, Job, Oban, telemetry, worker
from oban._wire import MAX_DECODED_BYTES, encode_payload
from tests.helpers import eventually

STARTED: set[int] = set()
SAW_CANCEL: set[int] = set()
RETURNED_CANCEL: set[int] = set()


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    STARTED.clear()
    SAW_CANCEL.clear()
    RETURNED_CANCEL.clear()


@worker(queue="sig")
class SignalsCooperative:
    """Polls ``job.cancelled()`` (10 s at most) and would then return ``Cancel``; its
    ``finally`` notes in ``SAW_CANCEL`` that it ended with ``job.cancelled()`` true."""

    async def process(self, job: Job) -> Any:
        assert job.id is not None
        STARTED.add(job.id)
        try:
            deadline = time.monotonic() + 10
            while not job.cancelled():
                if time.monotonic() > deadline:
                    return None  # completes the job: the test then fails on the state
                await asyncio.sleep(0.01)
            RETURNED_CANCEL.add(job.id)
            return Cancel("cancelled by an Elixir-shaped pkill")
        finally:
            if job.cancelled():
                SAW_CANCEL.add(job.id)


@worker(queue="sig")
class SignalsQuick:
    async def process(self, job: Job) -> None:
        assert job.id is not None
        STARTED.add(job.id)


def _plain(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def _z(message: dict[str, Any]) -> str:
    return "Z:" + base64.b64encode(gzip.compress(orjson.dumps(message))).decode()


def _legacy(message: dict[str, Any]) -> str:
    return base64.b64encode(gzip.compress(orjson.dumps(message))).decode()


FORMS = {"plain": _plain, "z": _z, "legacy": _legacy}


@pytest.fixture
def notify(sql: Callable[..., Any], prefix: str) -> Callable[[str], Any]:
    """``await notify(payload)``: ``pg_notify`` on the schema's signal channel, as Elixir's
    Postgres notifier does."""

    async def run(payload: str) -> None:
        await sql("SELECT pg_notify(%s, %s)", (f"{prefix}.oban_signal", payload))

    return run


async def _node(make_oban: Callable[..., Oban], **options: Any) -> Oban:
    oban = make_oban(name="Oban", node="py-node", queues={"sig": 2, "other": 1}, **options)
    await oban.start()
    assert oban._notifier is not None and oban._notifier.status == "listening"
    return oban


def _info(oban: Oban, queue: str) -> Any:
    info = oban.check_queue(queue)
    assert info is not None
    return info


@pytest.mark.parametrize("form", FORMS)
async def test_elixir_pause_and_resume_act_on_a_python_queue(
    make_oban: Callable[..., Oban], notify: Callable[[str], Any], form: str
) -> None:
    oban = await _node(make_oban)
    encode = FORMS[form]

    await notify(encode({"action": "pause", "queue": "sig", "ident": "any"}))
    await eventually(lambda: _info(oban, "sig").paused, timeout=2, message="sig paused")
    assert not _info(oban, "other").paused

    job = await oban.enqueue(SignalsQuick.new())
    await asyncio.sleep(0.3)  # a paused queue must not fetch: nothing to wait for
    assert job.id not in STARTED

    await notify(encode({"action": "resume", "queue": "sig", "ident": "any"}))
    await eventually(lambda: job.id in STARTED, timeout=2, message="job ran after resume")
    assert not _info(oban, "sig").paused


async def test_elixir_pause_all_and_node_addressing(
    make_oban: Callable[..., Oban], notify: Callable[[str], Any]
) -> None:
    oban = await _node(make_oban)

    # Elixir addresses one node as inspect(name) <> "." <> node (Config.to_ident/1).
    await notify(_plain({"action": "pause", "queue": "*", "ident": "Oban.elsewhere"}))
    await notify(_plain({"action": "pause", "queue": "other", "ident": "Oban.py-node"}))
    await eventually(lambda: _info(oban, "other").paused, timeout=2, message="other paused")
    assert not _info(oban, "sig").paused  # the signal for another node was ignored

    await notify(_plain({"action": "pause", "queue": "*", "ident": "any"}))
    await eventually(lambda: _info(oban, "sig").paused, timeout=2, message="all paused")
    await notify(_plain({"action": "resume", "queue": "*", "ident": "any"}))
    await eventually(
        lambda: not _info(oban, "sig").paused and not _info(oban, "other").paused,
        timeout=2,
        message="all resumed",
    )


@pytest.mark.parametrize("form", FORMS)
async def test_elixir_scale_changes_a_python_queue_limit(
    make_oban: Callable[..., Oban], notify: Callable[[str], Any], form: str
) -> None:
    oban = await _node(make_oban)
    # Oban.scale_queue(queue: :sig, limit: 7, node: "py-node") sends node as well.
    message = {"action": "scale", "queue": "sig", "limit": 7, "node": "py-node", "ident": "any"}
    await notify(FORMS[form](message))
    await eventually(lambda: _info(oban, "sig").limit == 7, timeout=2, message="scaled")
    assert _info(oban, "other").limit == 1


async def test_a_large_scale_signal_arrives_z_compressed(
    make_oban: Callable[..., Oban], notify: Callable[[str], Any]
) -> None:
    queue = "s" * 120
    oban = make_oban(name="Oban", node="py-node", queues={queue: 1})
    await oban.start()
    message = {"action": "scale", "queue": queue, "limit": 3, "node": "n" * 400, "ident": "any"}
    payload = encode_payload(message)
    assert payload.startswith("Z:")  # above 512 bytes of JSON
    await notify(payload)
    await eventually(lambda: _info(oban, queue).limit == 3, timeout=2, message="scaled")


@pytest.mark.parametrize("form", ["plain", "z"])
async def test_elixir_cancel_stops_a_running_python_job_at_once_and_its_row_stands(
    make_oban: Callable[..., Oban],
    notify: Callable[[str], Any],
    sql: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    form: str,
) -> None:
    oban = await _node(make_oban)
    job = await oban.enqueue(SignalsCooperative.new())
    await eventually(lambda: job.id in STARTED, timeout=2, message="job started")

    # What Oban.cancel_job/2 does: mark the executing row cancelled, then signal pkill.
    await sql(
        "UPDATE oban_jobs SET state = 'cancelled', cancelled_at = now() WHERE id = %s",
        (job.id,),
    )
    [(cancelled_at,)] = await sql("SELECT cancelled_at FROM oban_jobs WHERE id = %s", (job.id,))
    with caplog.at_level(logging.WARNING):
        await notify(FORMS[form]({"action": "pkill", "job_id": job.id}))
        # The task is cancelled (its finally runs), not left to notice and return Cancel.
        await eventually(lambda: job.id in SAW_CANCEL, timeout=2, message="job task stopped")
        await eventually(lambda: _info(oban, "sig").running == [], timeout=2, message="slot freed")
        acker = oban._acker
        assert acker is not None
        await eventually(lambda: acker.pending == 0, timeout=2, message="its ack settled")
    assert job.id not in RETURNED_CANCEL

    # The row stays as Elixir wrote it: the stopped job's ack changes nothing, quietly.
    [row] = await sql(
        "SELECT state, cancelled_at, completed_at, errors FROM oban_jobs WHERE id = %s", (job.id,)
    )
    assert row == ("cancelled", cancelled_at, None, [])
    assert [r.getMessage() for r in caplog.records if "stale ack" in r.getMessage()] == []


async def test_bad_signals_are_dropped_and_the_listener_goes_on(
    make_oban: Callable[..., Oban],
    notify: Callable[[str], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    oban = await _node(make_oban)
    bomb = gzip.compress(b'{"a":"' + b"0" * (5 * MAX_DECODED_BYTES) + b'"}', compresslevel=9)
    dropped: list[str] = []
    telemetry.attach(
        "test-dropped", ["oban.notifier.dropped"], lambda _e, meta: dropped.append(meta["reason"])
    )
    with caplog.at_level(logging.WARNING):
        for payload in [
            "Z:" + base64.b64encode(bomb).decode(),
            "H4sI garbage",
            "{not json",
            "[1, 2, 3]",
            _plain({"action": "scale", "queue": "sig", "limit": 0, "ident": "any"}),
            _plain({"action": "scale", "queue": "sig", "limit": "9", "ident": "any"}),
            _plain({"action": "scale", "queue": "sig", "limit": 9, "global": 1, "ident": "any"}),
            _plain({"action": "pause", "queue": ["sig"], "ident": "any"}),
            _plain({"action": "pkill", "job_id": [1], "ident": "any"}),
            _plain({"action": "pkill", "job_id": True, "ident": "any"}),
        ]:
            await notify(payload)
        # Still listening: the next good signal acts.
        await notify(_z({"action": "scale", "queue": "sig", "limit": 5, "ident": "any"}))
        await eventually(lambda: _info(oban, "sig").limit == 5, timeout=2, message="scaled")
    assert oban.notifier_status == "listening"
    assert not _info(oban, "sig").paused
    telemetry.detach("test-dropped")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Each undecodable payload is counted; the warnings about them are rate-limited (one here).
    assert len(dropped) == 4 and all(reason.startswith("undecodable") for reason in dropped)
    assert any("inflates beyond" in reason for reason in dropped)
    assert sum("dropped notifications" in w for w in warnings) == 1
    assert sum("ignoring a signal" in w for w in warnings) == 6
