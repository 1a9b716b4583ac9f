"""The notifier without a database: reconnect pacing, payload encoding and decoding."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
from typing import Any

import orjson
import pytest

from oban import telemetry
from oban._notifier import (
    FAST_RECONNECT_DELAY,
    FAST_RECONNECT_WINDOW,
    MAX_RECONNECT_DELAY,
    PostgresNotifier,
    reconnect_delay,
)
from oban._tasks import cancel_and_wait
from oban._wire import (
    COMPRESS_THRESHOLD,
    MAX_DECODED_BYTES,
    MAX_PAYLOAD_BYTES,
    PayloadError,
    decode_payload,
    encode_payload,
)
from tests.helpers import eventually


@pytest.mark.parametrize("failures", [1, 2, 5, 50, 10_000])
def test_a_young_outage_is_retried_at_least_every_fast_delay(failures: int) -> None:
    # After a database restart the node must be back within about a second.
    for _ in range(200):
        delay = reconnect_delay(failures, down_for=FAST_RECONNECT_WINDOW - 1)
        assert 0 < delay <= FAST_RECONNECT_DELAY * 1.25


def test_a_long_outage_backs_off_up_to_the_maximum() -> None:
    delays = [reconnect_delay(10_000, down_for=FAST_RECONNECT_WINDOW) for _ in range(200)]
    assert min(delays) >= MAX_RECONNECT_DELAY * 0.75
    assert max(delays) <= MAX_RECONNECT_DELAY * 1.25
    assert reconnect_delay(1, down_for=3600) <= 0.5 * 1.25  # growing from a short first delay


# ---------------------------------------------------------------------------------------------
# Payloads: what Elixir Oban 2.23 sends and reads (deps/oban/lib/oban/notifier.ex encode/decode)
# ---------------------------------------------------------------------------------------------


def _legacy(message: object) -> str:
    """Bare base64 gzip, as Oban before 2.23 (and earlier oban-py) sent every payload."""
    return base64.b64encode(gzip.compress(orjson.dumps(message))).decode()


def test_a_small_message_is_sent_as_plain_json() -> None:
    payload = encode_payload({"action": "pause", "queue": "media", "ident": "any"})
    assert orjson.loads(payload) == {"action": "pause", "queue": "media", "ident": "any"}


def test_a_message_above_512_bytes_is_sent_z_compressed() -> None:
    message = {"action": "start", "queue": "q" * 600, "ident": "any"}
    payload = encode_payload(message)
    assert payload.startswith("Z:")
    assert orjson.loads(gzip.decompress(base64.b64decode(payload[2:]))) == message
    assert decode_payload(payload) == message


def test_exactly_512_bytes_of_json_stays_plain() -> None:
    message = {"k": "x" * (COMPRESS_THRESHOLD - len('{"k":""}'))}
    assert len(orjson.dumps(message)) == COMPRESS_THRESHOLD
    assert encode_payload(message).startswith("{")
    assert encode_payload({"k": message["k"] + "x"}).startswith("Z:")


@pytest.mark.parametrize(
    "payload",
    [
        '{"action":"pause","queue":"media","ident":"any"}',
        " \n" + '{"action":"pause","queue":"media","ident":"any"}',  # JSON may start with space
        "Z:" + _legacy({"action": "pause", "queue": "media", "ident": "any"}),
        _legacy({"action": "pause", "queue": "media", "ident": "any"}),
    ],
    ids=["plain", "plain-whitespace", "z-compressed", "legacy-base64-gzip"],
)
def test_all_three_forms_decode(payload: str) -> None:
    assert decode_payload(payload) == {"action": "pause", "queue": "media", "ident": "any"}


def test_payloads_encoded_by_elixir_decode() -> None:
    # Printed by Oban.Notifier.encode/1 of Oban 2.23.1 (the interop kit, OTP's :zlib.gzip).
    plain = '{"action":"pause","ident":"any","queue":"default"}'
    compressed = (
        "Z:H4sIAAAAAAAAA6tWSkwuyczPU7JSKk5OzElV0lHKTEnNKwHyE/MqgbyczNxMIM9YR6mwNLU0FSheOApGAQ2"
        "AUi0AobSLMo0CAAA="
    )
    assert decode_payload(plain) == {"action": "pause", "ident": "any", "queue": "default"}
    assert decode_payload(compressed) == {
        "action": "scale",
        "ident": "any",
        "limit": 3,
        "queue": "q" * 600,
    }


def test_a_payload_above_the_notify_limit_is_refused_unread() -> None:
    with pytest.raises(PayloadError, match="longer than 8000"):
        decode_payload('{"queue": "' + "x" * MAX_PAYLOAD_BYTES + '"}')
    with pytest.raises(PayloadError, match="longer than 8000"):
        decode_payload('{"queue": "' + "é" * 4000 + '"}')  # 4000 characters, 8000+ bytes


def test_a_gzip_bomb_is_refused_without_inflating_it_all() -> None:
    bomb = gzip.compress(b'{"a":"' + b"0" * (5 * MAX_DECODED_BYTES) + b'"}', compresslevel=9)
    payload = "Z:" + base64.b64encode(bomb).decode()
    assert len(payload) < MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadError, match="inflates beyond"):
        decode_payload(payload)


def test_a_payload_just_under_the_decoded_cap_is_accepted() -> None:
    message = {"a": "0" * (MAX_DECODED_BYTES - 100)}
    payload = "Z:" + base64.b64encode(gzip.compress(orjson.dumps(message))).decode()
    assert decode_payload(payload) == message


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "{",
        "not json",
        "[1, 2]",
        '"a string"',
        "null",
        "Z:",
        "Z:!!!not base64!!!",
        "Z:" + base64.b64encode(b"not gzip").decode(),
        "Z:" + base64.b64encode(gzip.compress(b"[1]")).decode(),
        "Z:" + base64.b64encode(gzip.compress(b"{not json")).decode(),
        "Z:" + base64.b64encode(gzip.compress(b'{"a": 1}')[:-6]).decode(),  # truncated
        "Z:" + base64.b64encode(gzip.compress(b'{"a": 1}') + b"junk").decode(),
        "H4sIAAAA",
        "H4sI" + "A" * 100,
        '{"a": "\ud800"}',  # a lone surrogate: not UTF-8
    ],
)
def test_garbage_is_a_payload_error(payload: str) -> None:
    with pytest.raises(PayloadError):
        decode_payload(payload)


# ---------------------------------------------------------------------------------------------
# Delivery: a bad payload is dropped with a warning and the next one still arrives
# ---------------------------------------------------------------------------------------------


async def test_bad_payloads_are_dropped_and_delivery_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = PostgresNotifier(conninfo="", connect_kwargs={}, prefix="public")
    received: list[dict[str, Any]] = []
    notifier.listen("signal", received.append)
    delivery = asyncio.create_task(notifier._deliver())
    bomb = gzip.compress(b"{" + b" " * (2 * MAX_DECODED_BYTES) + b"}")
    dropped: list[str] = []
    telemetry.attach(
        "test-dropped", ["oban.notifier.dropped"], lambda _e, meta: dropped.append(meta["reason"])
    )
    try:
        with caplog.at_level(logging.WARNING, logger="oban.notifier"):
            for payload in [
                "Z:" + base64.b64encode(bomb).decode(),
                "garbage",
                "x" * (MAX_PAYLOAD_BYTES + 1),
                encode_payload({"action": "pause", "queue": "a"}),
                "Z:" + _legacy({"action": "resume", "queue": "b"}),
                _legacy({"action": "scale", "queue": "c", "limit": 2}),
            ]:
                notifier._receive("public.oban_signal", payload)
            notifier._receive("public.oban_other", '{"ignored": true}')
            await eventually(lambda: len(received) == 3, timeout=2)
    finally:
        await cancel_and_wait(delivery)
        telemetry.detach("test-dropped")
    assert [m["action"] for m in received] == ["pause", "resume", "scale"]
    assert len(dropped) == 3
    assert "too long" in dropped
    assert any("inflates beyond" in reason for reason in dropped)
    assert any("not JSON" in reason for reason in dropped)
    # One warning, with the counts, however many were dropped in a burst.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped notifications" in warnings[0]


async def test_a_failing_subscriber_does_not_stop_delivery() -> None:
    notifier = PostgresNotifier(conninfo="", connect_kwargs={}, prefix="public")
    received: list[dict[str, Any]] = []

    def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    notifier.listen("signal", broken)
    notifier.listen("signal", received.append)
    delivery = asyncio.create_task(notifier._deliver())
    try:
        notifier._receive("public.oban_signal", '{"n": 1}')
        notifier._receive("public.oban_signal", '{"n": 2}')
        await eventually(lambda: len(received) == 2, timeout=2)
    finally:
        await cancel_and_wait(delivery)
    assert received == [{"n": 1}, {"n": 2}]


async def test_a_connection_handler_gets_at_most_one_piece_of_work_per_packet() -> None:
    """A channel's connection handler may take a plain JSON message when nothing is queued;
    once it returned work, the rest of the packet goes the usual way (to the subscribers,
    which coalesce a burst), and so does anything it declines or that is not plain JSON."""
    notifier = PostgresNotifier(conninfo="", connect_kwargs={}, prefix="public")
    offered: list[dict[str, Any]] = []
    delivered: list[dict[str, Any]] = []

    async def work(conn: Any) -> None:
        return None

    def handler(message: dict[str, Any]) -> Any:
        offered.append(message)
        return message.get("take", False) and work

    notifier.listen("relay", delivered.append)
    notifier.on_connection["relay"] = handler
    notifier._receive("public.oban_relay", '{"n": 1, "take": false}')  # declined
    assert offered == [{"n": 1, "take": False}] and notifier._pending.qsize() == 1
    notifier._pending.get_nowait()
    notifier._receive("public.oban_relay", '{"n": 2, "take": true}')
    notifier._receive("public.oban_relay", '{"n": 3, "take": true}')  # same packet: queued
    notifier._receive("public.oban_relay", _legacy({"n": 4, "take": True}))  # not plain JSON
    assert [m["n"] for m in offered] == [1, 2] and notifier._work == [work]
    delivery = asyncio.create_task(notifier._deliver())
    try:
        await eventually(lambda: len(delivered) == 2, timeout=2)
    finally:
        await cancel_and_wait(delivery)
    assert [m["n"] for m in delivered] == [3, 4]
