"""Jobs cross the language boundary: Python inserts for an Elixir node, Elixir inserts for a
Python node, and each side reads what the other wrote (args, meta, errors, recorded results)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, schema
from tests.interop.elixir import Database, Kit
from tests.interop.support import parse_inspect, query, wait_until_final, with_output
from tests.interop.workers import echo

ARGS = {"mode": "ok", "unicode": "žluť 🐍", "float": 1.5, "list": [1, None, {"k": "v"}]}


async def test_python_inserts_and_an_elixir_node_runs(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
    node_log: Callable[[str], Path],
) -> None:
    await schema.install(pool)
    client = make_oban()  # enqueue only
    ok, failing, scheduled = await client.enqueue_many(
        [
            echo(ARGS, queue="ex", priority=2, tags=["py"], meta={"from": "python"}),
            echo({"mode": "fail"}, queue="ex", max_attempts=2),
            echo({"mode": "ok"}, queue="ex", schedule_in=1),
        ]
    )
    ids = [job.id for job in (ok, failing, scheduled) if job.id is not None]

    async with elixir_kit.node("ex:10", database=database, log=node_log("ex-node")) as node:
        with with_output(node.output):
            final = await wait_until_final(
                pool, *ids, timeout=30, message="Python-inserted jobs run by the Elixir node"
            )
            assert final == {ids[0]: "completed", ids[1]: "discarded", ids[2]: "completed"}

    rows = await query(
        pool,
        "SELECT id, attempt, attempted_by[1], cardinality(attempted_by), completed_at IS NOT NULL "
        "FROM oban_jobs ORDER BY id",
    )
    assert rows == [
        (ids[0], 1, "ex-node", 2, True),
        (ids[1], 2, "ex-node", 2, False),
        (ids[2], 1, "ex-node", 2, True),
    ]
    # The Elixir worker logged args and meta as Elixir decoded them.
    logged = await query(
        pool, "SELECT lang, attempt, args, meta FROM exec_log WHERE job_id = %s", ids[0]
    )
    assert logged == [("ex", 1, ARGS, {"from": "python"})]

    # Python reads back what the Elixir node wrote: the state, attempts and Elixir's errors.
    discarded = await client.get_job(failing)
    assert discarded is not None
    assert discarded.state == "discarded" and discarded.attempt == 2
    assert [error["attempt"] for error in discarded.errors] == [1, 2]
    assert all(set(error) == {"at", "attempt", "error"} for error in discarded.errors)
    assert discarded.errors[0]["error"].startswith(f"** (RuntimeError) ex boom {failing.id}")


async def test_elixir_inserts_and_a_python_node_runs_and_elixir_reads_the_results(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
) -> None:
    await schema.install(pool)
    inserted = (
        await elixir_kit.run("insert_py.exs", "py", "3", "ex2py", database=database)
    ).check()
    assert inserted.lines("inserted 8 ids "), inserted.output

    oban = await make_oban(queues={"py": 5}, node="py-node").start()
    final = await wait_until_final(
        pool, timeout=30, message="Elixir-inserted jobs run by the Python node"
    )
    jobs = {job_id: await oban.get_job(job_id) for job_id in final}
    by_mode: dict[str, Job] = {}
    for job in jobs.values():
        assert job is not None
        by_mode.setdefault(job.args["mode"], job)

    # Python decoded Elixir's args and meta (the first job insert_py.exs makes).
    first = jobs[min(jobs)]
    assert first is not None
    assert first.args == {
        "mode": "ok",
        "n": 0,
        "unicode": "žluť",
        "float": 1.5,
        "list": [1, None, {"k": "v"}],
    }
    assert first.meta == {"from": "elixir", "x": 1}
    assert first.priority == 3 and first.max_attempts == 5 and first.tags == ["ex2py", "single"]
    assert sorted(final.values()) == ["completed"] * 7 + ["discarded"]
    assert by_mode["fail"].state == "discarded" and by_mode["fail"].attempt == 2
    assert by_mode["fail_once"].state == "completed" and by_mode["fail_once"].attempt == 2
    assert by_mode["record"].recorded == {
        "echo": {"mode": "record"},
        "lang": "python",
    }
    runs = await query(pool, "SELECT DISTINCT lang FROM exec_log")
    assert runs == [("py",)]

    # Elixir loads every row as %Oban.Job{} and decodes what Python wrote.
    shown = parse_inspect(
        (await elixir_kit.run("inspect.exs", "ex2py", database=database)).check().output
    )
    assert set(shown) == set(final)
    for job_id, seen in shown.items():
        assert seen.state == final[job_id], seen.line
        assert 'by=["py-node", "' in seen.line, seen.line
    record = shown[by_mode["record"].id or 0]
    assert record.recorded == (
        '{:decoded, %{"echo" => %{"mode" => "record"}, "lang" => "python"}}'
    ), record.line
    assert 'meta=%{"recorded" => true}' in record.line
    failed = shown[by_mode["fail"].id or 0]
    assert failed.errors is not None
    # A Python traceback, cut to 60 characters by inspect.exs; the keys Elixir expects.
    assert failed.errors.count('"error" => "Traceback (most recent call last):') == 2
    assert failed.errors.count('"keys" => ["at", "attempt", "error"]') == 2
    once = shown[by_mode["fail_once"].id or 0]
    assert once.errors is not None and once.errors.count('"attempt" => 1') == 1


async def test_elixir_reads_a_python_workflows_meta(
    elixir_kit: Kit,
    database: Database,
    pool: AsyncConnectionPool[Any],
    make_oban: Callable[..., Oban],
) -> None:
    """The workflow fields Oban Pro writes (``workflow_id``, ``name``, ``deps``) are in the
    rows Python inserts, and Elixir loads them, ``suspended`` steps included, as
    ``%Oban.Job{}``."""
    from oban import Workflow

    await schema.install(pool)
    client = make_oban()
    flow = Workflow().add("fetch", echo({"mode": "ok"}, queue="nowhere", tags=["wf"]))
    flow.add("parse", echo({"mode": "ok"}, queue="nowhere", tags=["wf"]), deps="fetch")
    flow.add("store", echo({"mode": "ok"}, queue="nowhere", tags=["wf"]), deps=["fetch", "parse"])
    jobs = await client.enqueue_many(flow)

    shown = parse_inspect(
        (await elixir_kit.run("inspect.exs", "wf", database=database)).check().output
    )
    assert sorted(shown) == sorted(job.id for job in jobs if job.id is not None)
    fetch, parse, store = (shown[job.id or 0] for job in jobs)
    assert (fetch.state, parse.state, store.state) == ("available", "suspended", "suspended")
    for seen, name in ((fetch, "fetch"), (parse, "parse"), (store, "store")):
        assert f'"workflow_id" => "{flow.id}"' in seen.line, seen.line
        assert f'"name" => "{name}"' in seen.line, seen.line
    assert '"deps" => ["fetch"]' in parse.line, parse.line
    assert '"deps" => ["fetch", "parse"]' in store.line, store.line
