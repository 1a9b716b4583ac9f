"""Telemetry is emitted the same way on both engines."""

from __future__ import annotations

from typing import Any

from oban import telemetry, worker
from tests.helpers import eventually


@worker(queue="conf-tele")
class ConfTeleOk:
    async def process(self, job: Any) -> None:
        return None


@worker(queue="conf-tele", max_attempts=1)
class ConfTeleFails:
    async def process(self, job: Any) -> None:
        raise RuntimeError("telemetry boom")


EXPECTED = {
    "oban.job.start": {"job", "monotonic_time"},
    "oban.job.stop": {"job", "monotonic_time", "duration", "queue_time", "state"},
    "oban.job.exception": {"job", "duration", "state", "error_message", "error_type"},
    "oban.producer.get.stop": {"queue", "count", "duration"},
    "oban.producer.ack.stop": {"queue", "count", "duration"},
    "oban.leader.election.stop": {"leader", "duration"},
    "oban.stager.stage.stop": {"staged_count", "available_queues", "duration"},
    "oban.lifeline.rescue.stop": {"rescued_count", "discarded_count", "duration"},
    "oban.pruner.prune.stop": {"pruned_count", "duration"},
    "oban.refresher.refresh.stop": {"refreshed_count", "restored_count", "duration"},
    "oban.refresher.cleanup.stop": {"cleanup_count", "duration"},
    "oban.enqueue.stop": {"jobs", "count", "duration"},
    "oban.queue.shutdown": {"elapsed", "orphaned", "queue"},
}


async def test_runtime_events_carry_their_metadata_on_every_engine(make_oban: Any) -> None:
    seen: dict[str, dict[str, Any]] = {}

    def record(name: str, meta: dict[str, Any]) -> None:
        seen.setdefault(name, meta)

    telemetry.attach("conf-tele", list(EXPECTED), record)
    try:
        oban = make_oban(
            queues={"conf-tele": 2},
            leader={"interval": 1},
            lifeline={"interval": 0.2},
            pruner={"interval": 0.2},
            refresher={"interval": 0.2, "max_age": 1},
            stager={"interval": 0.2},
        )
        await oban.start()
        await ConfTeleOk.enqueue({})
        await ConfTeleFails.enqueue({})
        wanted = set(EXPECTED) - {"oban.queue.shutdown"}
        await eventually(lambda: wanted <= set(seen), timeout=10, message=f"events {wanted}")
        await oban.stop()
        assert "oban.queue.shutdown" in seen
    finally:
        telemetry.detach("conf-tele")

    for name, keys in EXPECTED.items():
        missing = keys - set(seen[name])
        assert not missing, f"{name} lacks {missing}: {seen[name]}"
    assert seen["oban.job.exception"]["error_message"] == "telemetry boom"
    assert seen["oban.leader.election.stop"]["leader"] is True
