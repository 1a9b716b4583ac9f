"""Args and meta are JSON exactly, on both engines: what a job holds when it is built is what
the database returns and what a worker receives; what JSON cannot represent never reaches the
database. Also: enqueueing a ``__main__`` worker through the instance warns."""

from __future__ import annotations

import enum
import uuid
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from oban import Job, Oban, worker
from oban.worker import UnimportableWorkerWarning


class ConfJSize(enum.StrEnum):
    LARGE = "large"


@worker(queue="confj")
class ConfJWorker:
    async def process(self, job: Job) -> None:
        return None


EDGE_ARGS: dict[str, Any] = {
    "text": "ünïcødé 😀 \\ \" '",
    "u64": 2**64 - 1,
    "i64": -(2**63),
    "float": 0.1 + 0.2,
    "huge": 1e308,
    "tiny": 5e-324,
    "flags": [True, False, None],
    "pair": (1, 2),
    "size": ConfJSize.LARGE,
    "nested": {"": {"deep": [[[{"k": "v"}]]]}},
}


async def test_what_the_database_returns_equals_what_the_job_held(oban: Oban) -> None:
    job = ConfJWorker.new(EDGE_ARGS, meta={"trace": ("a", "b"), "n": 2**63})

    inserted = await oban.enqueue(job)
    stored = await oban.get_job(inserted.id or 0)

    assert stored is not None
    assert stored.args == job.args
    assert stored.meta == job.meta
    assert stored.args["pair"] == [1, 2]
    assert stored.args["size"] == "large"


async def test_args_json_cannot_represent_never_reach_the_database(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    with pytest.raises(TypeError, match=r"args\['when'\] is datetime"):
        await oban.enqueue(ConfJWorker.new({"when": datetime(2024, 1, 1)}))
    with pytest.raises(TypeError, match=r"args\['x'\] is the float nan"):
        await ConfJWorker.enqueue({"x": float("nan")})

    rows = await sql(oban, "SELECT count(*) FROM oban_jobs")
    assert rows[0][0] == 0


async def test_enqueue_through_the_instance_warns_for_a_main_worker(oban: Oban) -> None:
    async def process(self: Any, job: Job) -> None:
        return None

    name = f"ConfJScript{uuid.uuid4().hex[:8]}"
    klass = type(name, (), {"__module__": "__main__", "__qualname__": name, "process": process})
    script: Any = worker()(klass)

    with pytest.warns(UnimportableWorkerWarning, match=rf"'__main__\.{name}'") as caught:
        await oban.enqueue_many([script.new({}), script.new({})])

    assert len(caught) == 1
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await oban.enqueue(script.new({}))
