"""``oban jobs``, ``job``, ``queues``, ``stats``, ``retry``, ``cancel``, ``delete``, ``pause``,
``resume`` and ``scale`` (issue 15, item 5): real ``python -m oban`` processes against a
PostgreSQL schema and an SQLite file, with a node running in this process where a command
must reach one."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from oban import Job, Oban, Record, schema, worker
from oban.oban import _instances
from tests.helpers import drop_schema, eventually, run_command, stop_all
from tests.processes import OBAN, subprocess_env


@worker(queue="cli_q")
class CliFails:
    async def process(self, job: Job) -> None:
        raise RuntimeError("cli boom")


@worker(queue="cli_q")
class CliRecords:
    async def process(self, job: Job) -> Record:
        return Record({"total": 3})


class Cli:
    """Runs ``oban <command> --dsn ... [--prefix ...]`` and builds instances on the same
    database."""

    def __init__(self, engine: str, dsn: str, prefix: str | None, pool: Any, cwd: Path) -> None:
        self.engine, self.dsn, self.prefix, self.pool, self.cwd = engine, dsn, prefix, pool, cwd
        self.made: list[Oban] = []

    async def __call__(self, *args: str, ok: bool = True) -> str:
        where = ["--dsn", self.dsn] + (["--prefix", self.prefix] if self.prefix else [])
        code, out = await run_command(
            *OBAN, *args, *where, cwd=self.cwd, env=subprocess_env(), timeout=60
        )
        if ok:
            assert code == 0, out
        else:
            assert code != 0, out
        return out

    async def json(self, *args: str) -> Any:
        return json.loads(await self(*args, "--json"))

    def oban(self, **options: Any) -> Oban:
        options.setdefault("shutdown_grace_period", 2.0)
        if self.engine == "postgres":
            instance = Oban(pool=self.pool, prefix=self.prefix, **options)
        else:
            instance = Oban(dsn=self.dsn, **options)
        self.made.append(instance)
        return instance


@pytest.fixture(params=["postgres", "sqlite"])
async def cli(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cli]:
    if request.param == "postgres":
        dsn = request.getfixturevalue("dsn")
        prefix = f"cli_{uuid.uuid4().hex[:10]}"
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(dsn, min_size=1, open=False)
        await pool.open(wait=True, timeout=10)
        await schema.install(pool, prefix)
        made = Cli("postgres", dsn, prefix, pool, tmp_path)
        try:
            yield made
        finally:
            await stop_all(made.made)
            _instances.clear()
            await drop_schema(pool, prefix)
            await pool.close()
    else:
        made = Cli("sqlite", f"sqlite:///{tmp_path / 'cli.db'}", None, None, tmp_path)
        try:
            yield made
        finally:
            await stop_all(made.made)
            _instances.clear()


async def test_jobs_lists_filters_and_pages(cli: Cli) -> None:
    client = cli.oban(name="cli_client")
    jobs = await client.enqueue_many(
        [Job("app.Mailer", queue="mail", args={"to": f"u{i}", "n": i}) for i in range(5)]
        + [Job("app.Report", queue="reports", args={"kind": "daily"})]
    )
    out = await cli("jobs")
    assert out.splitlines()[0].split() == [
        "ID",
        "STATE",
        "QUEUE",
        "WORKER",
        "ATTEMPT",
        "SCHEDULED",
        "ARGS",
    ]
    assert [line.split()[0] for line in out.splitlines()[1:]] == [
        str(job.id) for job in reversed(jobs)
    ]

    first = await cli.json("jobs", "--limit", "2", "--queue", "mail")
    assert [job["id"] for job in first["jobs"]] == [jobs[4].id, jobs[3].id]
    assert first["jobs"][0]["args"] == {"to": "u4", "n": 4}
    assert first["next"] == str(jobs[3].id)
    second = await cli.json("jobs", "--limit", "2", "--queue", "mail", "--after", first["next"])
    assert [job["id"] for job in second["jobs"]] == [jobs[2].id, jobs[1].id]
    assert "more: add --after" in await cli("jobs", "--limit", "2")

    found = await cli.json("jobs", "--args", '{"to": "u1"}')
    assert [job["id"] for job in found["jobs"]] == [jobs[1].id]
    found = await cli.json("jobs", "--worker", "app.Report", "--state", "available")
    assert [job["id"] for job in found["jobs"]] == [jobs[5].id]
    assert (await cli.json("jobs", "--state", "completed"))["jobs"] == []
    assert "unknown state" in await cli("jobs", "--state", "finished", ok=False)
    assert "not JSON" in await cli("jobs", "--args", "{nope", ok=False)


async def test_job_shows_errors_and_the_recorded_result(cli: Cli) -> None:
    node = cli.oban(name="cli_node", queues={"cli_q": 2})
    await node.start()
    failing = await node.enqueue(CliFails.new({"x": 1}, max_attempts=1))
    recording = await node.enqueue(CliRecords.new({}))

    async def finished() -> bool:
        states = [(await node.get_job(job.id)) for job in (failing, recording)]  # type: ignore[arg-type]
        return [job.state for job in states if job] == ["discarded", "completed"]

    await eventually(finished, timeout=10, message="both jobs finished")
    out = await cli("job", str(failing.id))
    assert "state: discarded" in out and "RuntimeError: cli boom" in out and "attempt 1" in out
    out = await cli("job", str(recording.id))
    assert "recorded: {'total': 3}" in out
    data = await cli.json("job", str(recording.id))
    assert data["state"] == "completed" and data["completed_at"] is not None
    assert "no job 999999" in await cli("job", "999999", ok=False)


async def test_stats_counts_by_state_and_queue(cli: Cli) -> None:
    client = cli.oban(name="cli_client")
    await client.enqueue_many(
        [Job("app.A", queue="mail") for _ in range(3)] + [Job("app.A", queue="reports")]
    )
    await client.enqueue(Job("app.A", queue="mail", scheduled_in=3600))
    out = await cli("stats")
    counts, finished = out.split("\n\n")
    lines = [line.split() for line in counts.splitlines()]
    assert lines[0] == ["QUEUE", "AVAILABLE", "SCHEDULED"]
    assert lines[1:] == [["mail", "3", "1"], ["reports", "1", "0"]]
    assert finished.startswith("finished in the last hour") and "no jobs finished" in finished
    data = await cli.json("stats")
    assert {(d["state"], d["queue"]): d["count"] for d in data["counts"]} == {
        ("available", "mail"): 3,
        ("available", "reports"): 1,
        ("scheduled", "mail"): 1,
    }
    assert data["last_hour"]["queues"] == [] and data["last_hour"]["total"]["completed"] == 0


async def test_stats_shows_the_last_hours_throughput_per_queue(cli: Cli) -> None:
    node = cli.oban(name="cli_node", queues={"cli_q": 2})
    await node.start()
    done = await node.enqueue_many([CliRecords.new({}) for _ in range(3)])
    failed = await node.enqueue(CliFails.new({"x": 1}, max_attempts=1))
    waiting = await node.enqueue(Job("app.A", queue="cli_other"))
    await node.cancel_job(waiting)
    ids = [job.id for job in [*done, failed]]

    async def finished() -> bool:
        jobs = [await node.get_job(i) for i in ids if i is not None]
        return all(job is not None and job.state in ("completed", "discarded") for job in jobs)

    await eventually(finished, timeout=10, message="the jobs finished")
    lines = [line.split() for line in (await cli("stats")).split("\n\n")[1].splitlines()]
    assert lines[1] == [
        "QUEUE",
        "COMPLETED",
        "DISCARDED",
        "CANCELLED",
        "WAIT_P50",
        "WAIT_P95",
        "RUN_P50",
        "RUN_P95",
    ]
    rows = {line[0]: line[1:] for line in lines[2:]}
    assert rows["cli_q"][:3] == ["3", "1", "0"] and rows["cli_other"][:3] == ["0", "0", "1"]
    assert rows["(all)"][:3] == ["3", "1", "1"]
    # The cancelled job never ran: no wait nor run time; cli_q's jobs ran.
    assert rows["cli_other"][3:] == ["-", "-", "-", "-"]
    assert all(cell.endswith("s") for cell in rows["cli_q"][3:])
    data = (await cli.json("stats"))["last_hour"]
    by_queue = {row["queue"]: row for row in data["queues"]}
    assert (by_queue["cli_q"]["completed"], by_queue["cli_q"]["discarded"]) == (3, 1)
    assert by_queue["cli_q"]["run_p95"] >= by_queue["cli_q"]["run_p50"] >= 0
    assert by_queue["cli_other"]["wait_p50"] is None and data["total"]["cancelled"] == 1
    assert data["since"] < data["until"] and data["complete_since"] == data["since"]


async def test_retry_cancel_and_delete_change_the_jobs(cli: Cli) -> None:
    client = cli.oban(name="cli_client")
    jobs = await client.enqueue_many([Job("app.A", queue="q", scheduled_in=600) for _ in range(3)])
    ids = [str(job.id) for job in jobs]
    assert "cancel: 2 of 2 job(s)" in await cli("cancel", ids[0], ids[1])
    assert "retry: 1 of 1 job(s)" in await cli("retry", ids[0])
    assert "delete: 1 of 1 job(s)" in await cli("delete", ids[2])
    states = [await client.get_job(job) for job in jobs]
    assert [job.state if job else None for job in states] == ["available", "cancelled", None]
    assert "is not a job id" in await cli("retry", "abc", ok=False)


async def test_queue_commands_reach_a_running_node(cli: Cli) -> None:
    node = cli.oban(name="Oban", node="cli-node-1", queues={"cli_ctl": 3})
    await node.start()

    async def listed() -> Any:
        return [q for q in await cli.json("queues") if q["queue"] == "cli_ctl"]

    found = await eventually(listed, timeout=10, message="the node's queue listed")
    assert found[0]["node"] == "cli-node-1" and found[0]["limit"] == 3
    assert "cli_ctl" in await cli("queues")

    assert "paused cli_ctl" in await cli("pause", "cli_ctl")

    def paused() -> bool:
        info = node.check_queue("cli_ctl")
        return info is not None and info.paused

    await eventually(paused, timeout=10, message="the pause reached the node")
    await cli("resume", "cli_ctl", "--node", "cli-node-1")
    await eventually(lambda: not paused(), timeout=10, message="resumed")
    assert "scaled cli_ctl to 7" in await cli("scale", "cli_ctl", "7")

    def scaled() -> bool:
        info = node.check_queue("cli_ctl")
        return info is not None and info.limit == 7

    await eventually(scaled, timeout=10, message="the new limit reached the node")


async def test_a_missing_sqlite_file_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    code, out = await run_command(
        *OBAN, "jobs", "--dsn", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path, timeout=30
    )
    assert code != 0 and "no SQLite database" in out, out
    assert not (tmp_path / "none.db").exists()


async def test_workflow_status_and_cancel(cli: Cli) -> None:
    from oban import Workflow

    client = cli.oban(name="cli_client")
    flow = Workflow().add("a", Job("app.A", queue="wf_q", scheduled_in=600))
    flow.add("b", Job("app.B", queue="wf_q"), deps="a")
    flow.add("c", Job("app.C", queue="wf_q"), deps="b")
    await client.enqueue_many(flow)
    workflow_id = flow.id

    shown = await cli.json("workflow", "status", workflow_id)
    assert shown == {
        "id": workflow_id,
        "state": "executing",
        "done": False,
        "total": 3,
        "counts": {"scheduled": 1, "suspended": 2},
    }
    table = await cli("workflow", "status", workflow_id)
    assert f"workflow {workflow_id}: executing, 3 job(s)" in table and "suspended" in table

    assert f"cancel workflow {workflow_id}: 3 job(s) cancelled" in await cli(
        "workflow", "cancel", workflow_id
    )
    after = await cli.json("workflow", "status", workflow_id)
    assert (after["state"], after["done"], after["counts"]) == ("cancelled", True, {"cancelled": 3})

    missing = await cli("workflow", "status", "no-such-workflow", ok=False)
    assert "missing" in missing
    assert "no job of workflow" in await cli("workflow", "cancel", "no-such-workflow", ok=False)
    code, out = await run_command(
        *OBAN, "workflow", "status", "", "--dsn", cli.dsn, cwd=cli.cwd, env=subprocess_env()
    )
    assert code == 2 and "Traceback" not in out and "WORKFLOW_ID" in out, out
