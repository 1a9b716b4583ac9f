"""Explicit worker names (``@worker(name=...)``, ``@job(name=...)``): the string a job's
``worker`` column holds, so Python can claim jobs that another language enqueued under its own
name (Elixir's ``MyApp.Echo``), on both engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from oban import Job, Oban, job, worker
from oban.worker import resolve_worker, worker_name
from tests.helpers import eventually

RAN: list[tuple[str, Any]] = []


@worker(queue="confn", name="MyApp.ConfNEcho")
class ConfNEcho:
    async def process(self, job: Job) -> dict[str, Any]:
        RAN.append(("echo", job.args))
        return {"echoed": job.args}


@worker(queue="confn", name="ConfNPlain")
class ConfNPlain:
    """An undotted name, as an Elixir module without a namespace (``defmodule Mailer``)."""

    async def process(self, job: Job) -> None:
        RAN.append(("plain", job.args))


@job(queue="confn", name="MyApp.ConfNSum")
def conf_n_sum(a: int, b: int) -> int:
    RAN.append(("sum", a + b))
    return a + b


def test_the_explicit_name_is_the_jobs_worker_and_resolves_to_the_decorated_code() -> None:
    assert ConfNEcho.new({"x": 1}).worker == "MyApp.ConfNEcho"
    assert conf_n_sum.new(1, 2).worker == "MyApp.ConfNSum"
    assert worker_name(ConfNEcho) == "MyApp.ConfNEcho"
    assert worker_name(conf_n_sum) == "MyApp.ConfNSum"
    assert resolve_worker("MyApp.ConfNEcho") is ConfNEcho
    assert resolve_worker("MyApp.ConfNSum") is conf_n_sum.__oban_worker__
    assert resolve_worker("ConfNPlain") is ConfNPlain, "an undotted explicit name resolves"


async def test_a_job_enqueued_under_the_name_by_another_client_runs_here(
    make_oban: Callable[..., Oban],
) -> None:
    """As an Elixir node would: a plain row naming the worker, no Python class involved."""
    RAN.clear()
    oban = make_oban(queues={"confn": 2})
    await oban.start()
    echo = await oban.enqueue(Job("MyApp.ConfNEcho", queue="confn", args={"from": "elixir"}))
    summed = await oban.enqueue(Job("MyApp.ConfNSum", queue="confn", args={"a": 2, "b": 3}))
    plain = await oban.enqueue(Job("ConfNPlain", queue="confn", args={"n": 1}))

    async def all_completed() -> bool:
        rows = [await oban.get_job(j.id or 0) for j in (echo, summed, plain)]
        return all(row is not None and row.state == "completed" for row in rows)

    await eventually(all_completed, timeout=10, message="the named jobs completed")
    assert sorted(RAN, key=str) == [("echo", {"from": "elixir"}), ("plain", {"n": 1}), ("sum", 5)]


def test_a_name_taken_by_another_worker_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'MyApp.ConfNEcho' is already taken by .*ConfNEcho"):

        @worker(name="MyApp.ConfNEcho")
        class Impostor:
            def process(self, job: Job) -> None: ...


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        (42, TypeError, "name must be a string"),
        ("", ValueError, "non-blank"),
        (" MyApp.X", ValueError, "surrounding spaces"),
        ("M" * 128, ValueError, "longer than 127"),
    ],
)
def test_a_bad_name_is_refused_at_decoration(
    name: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):

        @job(name=name)
        def misnamed() -> None: ...
