"""Pausing and resuming queues across nodes, on both engines: a node reports a queue paused
only once no fetch that began before the pause is still in flight, so a job enqueued after
every node reports paused is claimed by nobody until a resume.

On PostgreSQL the nodes are instances that hear each other through NOTIFY; on SQLite they are
instances on one file in one process, which hear each other in-process.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from oban import Job, Oban, worker
from tests.helpers import eventually

# Producers poll this often; "nothing gets fetched" checks wait a few of these.
FAST_POLL = {"poll_interval": 0.2}
QUIET = 0.6

RAN: dict[int, str] = {}


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    RAN.clear()


def _node(job: Job) -> str:
    return job.attempted_by[0] if job.attempted_by else "?"


@worker(queue="cpause")
class ConfPauseRecordWorker:
    async def process(self, job: Job) -> None:
        RAN[job.id] = _node(job)  # type: ignore[index]


async def _job(oban: Oban, job_id: int | None) -> Job:
    assert job_id is not None
    found = await oban.get_job(job_id)
    assert found is not None, f"job {job_id} is missing"
    return found


async def _wait_state(oban: Oban, job_id: int | None, state: str, timeout: float = 5.0) -> Job:
    async def check() -> Job | None:
        job = await _job(oban, job_id)
        return job if job.state == state else None

    return await eventually(check, timeout=timeout, message=f"job {job_id} {state}")


def _paused(oban: Oban, queue: str) -> bool | None:
    info = oban.check_queue(queue)
    return None if info is None else info.paused


async def _states(oban: Oban, ids: list[int | None]) -> Counter[str]:
    return Counter([(await _job(oban, job_id)).state.value for job_id in ids])


async def _two_nodes(
    make_oban: Callable[..., Oban],
    *,
    same_name: bool = False,
    queues: dict[str, Any] | None = None,
) -> tuple[Oban, Oban]:
    queues = queues or {"cpause": 1}
    a = make_oban(
        name="cpause" if same_name else "cpause_a",
        node="node-a",
        queues=dict(queues),
        notifier=dict(FAST_POLL),
    )
    b = make_oban(
        name="cpause" if same_name else "cpause_b",
        node="node-b",
        queues=dict(queues),
        notifier=dict(FAST_POLL),
    )
    await a.start()
    await b.start()
    return a, b


async def test_pause_queue_pauses_every_node_and_resume_runs_pending_jobs(make_oban):
    a, b = await _two_nodes(make_oban)

    await a.pause_queue("cpause")

    assert _paused(a, "cpause") is True
    await eventually(lambda: _paused(b, "cpause"), message="node b paused through NOTIFY")
    job = await a.enqueue(ConfPauseRecordWorker.new())
    await asyncio.sleep(QUIET)  # several poll intervals: nobody may fetch it
    assert (await _job(a, job.id)).state == "available"
    assert job.id not in RAN

    await a.resume_queue("cpause")

    assert _paused(a, "cpause") is False
    await eventually(lambda: _paused(b, "cpause") is False, message="node b resumed")
    done = await _wait_state(a, job.id, "completed")
    assert done.attempted_by[0] in ("node-a", "node-b")
    assert RAN[job.id] == done.attempted_by[0]


async def test_targeted_pause_and_resume_reach_only_the_named_node(make_oban):
    a, b = await _two_nodes(make_oban, same_name=True, queues={"cpause": 2})

    await a.pause_queue("cpause", node="node-b")

    await eventually(lambda: _paused(b, "cpause"), message="node b paused")
    assert _paused(a, "cpause") is False
    jobs = [await a.enqueue(ConfPauseRecordWorker.new()) for _ in range(4)]
    for job in jobs:
        done = await _wait_state(a, job.id, "completed")
        assert done.attempted_by[0] == "node-a", "a paused node fetched a job"
    assert _paused(a, "cpause") is False
    assert _paused(b, "cpause") is True

    # Now pause a only, and resume b only: the jobs must move to b.
    await b.pause_queue("cpause", node="node-a")
    await eventually(lambda: _paused(a, "cpause"), message="node a paused")
    await a.resume_queue("cpause", node="node-b")
    await eventually(lambda: _paused(b, "cpause") is False, message="node b resumed")
    assert _paused(a, "cpause") is True

    later = [await a.enqueue(ConfPauseRecordWorker.new()) for _ in range(3)]
    for job in later:
        done = await _wait_state(a, job.id, "completed")
        assert done.attempted_by[0] == "node-b"


async def test_pause_all_and_resume_all_queues_on_every_node(make_oban):
    a, b = await _two_nodes(make_oban, queues={"cpause": 1, "cpause_other": 1})

    await a.pause_all_queues()

    def all_paused() -> bool:
        return all(_paused(o, q) for o in (a, b) for q in ("cpause", "cpause_other"))

    await eventually(all_paused, message="every queue on every node paused")
    jobs = [
        await a.enqueue(ConfPauseRecordWorker.new()),
        await a.enqueue(ConfPauseRecordWorker.new(queue="cpause_other")),
    ]
    ids = [job.id for job in jobs]
    await asyncio.sleep(QUIET)
    assert await _states(a, ids) == Counter({"available": 2})

    await b.resume_all_queues()

    def none_paused() -> bool:
        return not any(_paused(o, q) for o in (a, b) for q in ("cpause", "cpause_other"))

    await eventually(none_paused, message="every queue on every node resumed")
    for job in jobs:
        await _wait_state(a, job.id, "completed")
