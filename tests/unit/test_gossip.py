"""Gossip payloads stay within PostgreSQL's NOTIFY limit however many jobs run."""

from __future__ import annotations

from datetime import UTC, datetime

from oban._gossip import check_payload, gossip_payloads
from oban._producer import QueueInfo
from oban._wire import MAX_PAYLOAD_BYTES, decode_payload

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _check(queue: str, running: list[int]) -> dict[str, object]:
    info = QueueInfo(
        limit=len(running) or 1,
        meta={},
        node="n",
        paused=False,
        queue=queue,
        running=running,
        started_at=NOW,
        uuid=f"uuid-{queue}",
    )
    return check_payload(info, name="Oban", now=NOW)


def test_no_queues_means_no_message() -> None:
    assert gossip_payloads([]) == []


def test_small_checks_travel_in_one_message() -> None:
    checks = [_check("a", [1, 2]), _check("b", [])]

    [payload] = gossip_payloads(checks)

    assert decode_payload(payload) == {"checks": checks}


def test_checks_too_big_together_are_split_one_per_message() -> None:
    # Ids spread widely compress badly: together they pass 8,000 bytes, alone they do not.
    checks = [_check(q, list(range(i, 10**9, 10**9 // 600))) for i, q in enumerate("abcd")]

    payloads = gossip_payloads(checks)

    assert len(payloads) == 4
    assert all(len(p) <= MAX_PAYLOAD_BYTES for p in payloads)
    assert [decode_payload(p)["checks"][0] for p in payloads] == checks
