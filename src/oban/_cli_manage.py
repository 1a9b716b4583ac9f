"""``oban jobs``, ``job``, ``queues``, ``stats``, ``retry``, ``cancel``, ``delete``, ``pause``,
``resume``, ``scale``: see and steer jobs from a terminal, with the configuration ``oban start``
reads. Readable tables on a terminal, ``--json`` for scripts. Everything goes through the
public API (``list_jobs``, ``count_jobs``, ``job_stats``, ``queues``, the management calls) of
a client instance that runs no queue."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from ._config import Config
from ._engines._dsn import is_postgres, sqlite_path
from ._query import JobCounts, JobStat, JobStats, parse_id
from .cli import _config_option, _dsn_option, _load, _prefix_option, _run, main
from .job import Job, JobState
from .oban import Oban
from .workflow import workflow_id_of

T = TypeVar("T")

_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
_node_option = click.option("--node", default=None, help="Only this node (default: every node).")


def _client(config: Config) -> Oban:
    """A client instance (no queues, never the leader) on the configured database, under the
    configured instance name: ``queues()`` and the queue signals are per name."""
    if not is_postgres(config.dsn):
        path = sqlite_path(config.dsn)
        if not os.path.exists(path):
            raise click.UsageError(f"no SQLite database at {path!r} (give --dsn, or run here)")
    return Oban.from_config(dataclasses.replace(config, queues={}, leadership=False))


def _with_client(
    config_path: str | None,
    dsn: str | None,
    prefix: str | None,
    action: Callable[[Oban], Awaitable[T]],
) -> T:
    config = _load(config_path=config_path, dsn=dsn, prefix=prefix)

    async def run() -> T:
        oban = _client(config)
        try:
            return await action(oban)
        finally:
            await oban.stop()

    return _run(run())


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in (_prefix_option, _dsn_option, _config_option):
        command = option(command)
    return command


# Output


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def job_json(job: Job) -> dict[str, Any]:
    """A job as JSON for ``--json``: every column, timestamps in ISO 8601 UTC."""
    return {
        "id": job.id,
        "state": job.state.value,
        "queue": job.queue,
        "worker": job.worker,
        "args": job.args,
        "meta": job.meta,
        "tags": job.tags,
        "errors": job.errors,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "attempted_by": job.attempted_by,
        "inserted_at": _iso(job.inserted_at),
        "scheduled_at": _iso(job.scheduled_at),
        "attempted_at": _iso(job.attempted_at),
        "completed_at": _iso(job.completed_at),
        "cancelled_at": _iso(job.cancelled_at),
        "discarded_at": _iso(job.discarded_at),
    }


def _dump(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) for i in range(len(headers))]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _json_filter(name: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint=name) from error
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=name)
    return value


def _ids(values: Sequence[str]) -> list[int]:
    ids = []
    for value in values:
        try:
            ids.append(parse_id(value))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a job id", param_hint="ID") from None
    return ids


# Commands


@main.command()
@_common
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--queue", "queues", multiple=True, help="Only jobs of this queue (repeatable).")
@click.option("--worker", "workers", multiple=True, help="Only this worker (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only jobs with this tag (repeatable: all).")
@click.option("--args", "args_json", default=None, help="Args contain this JSON: '{\"id\": 7}'.")
@click.option("--meta", "meta_json", default=None, help="Meta contains this JSON.")
@click.option("--search", default=None, help="A piece of the worker name or of the args.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--after", default=None, help="The cursor printed after the previous page.")
@_json_option
def jobs(
    config_path: str | None,
    dsn: str | None,
    prefix: str | None,
    states: tuple[str, ...],
    queues: tuple[str, ...],
    workers: tuple[str, ...],
    tags: tuple[str, ...],
    args_json: str | None,
    meta_json: str | None,
    search: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List jobs, newest first, one page at a time."""
    for state in states:
        if state not in {s.value for s in JobState}:
            raise click.BadParameter(f"unknown state {state!r}", param_hint="--state")
    filters: dict[str, Any] = {
        "state": list(states) or None,
        "queue": list(queues) or None,
        "worker": list(workers) or None,
        "tags": list(tags) or None,
        "args": _json_filter("--args", args_json),
        "meta": _json_filter("--meta", meta_json),
        "search": search,
    }
    try:
        page = _with_client(
            config_path,
            dsn,
            prefix,
            lambda oban: oban.list_jobs(**filters, limit=limit, after=after),
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    if as_json:
        _dump({"jobs": [job_json(job) for job in page.jobs], "next": page.next})
        return
    _table(
        ["ID", "STATE", "QUEUE", "WORKER", "ATTEMPT", "SCHEDULED", "ARGS"],
        [
            [
                job.id,
                job.state.value,
                job.queue,
                job.worker,
                f"{job.attempt}/{job.max_attempts}",
                _when(job.scheduled_at),
                _short(job.args),
            ]
            for job in page.jobs
        ],
        empty="no jobs",
    )
    if page.next is not None:
        click.echo(f"more: add --after {page.next}")


@main.command("job")
@_common
@click.argument("job_id", metavar="ID")
@_json_option
def job_command(
    config_path: str | None, dsn: str | None, prefix: str | None, job_id: str, as_json: bool
) -> None:
    """Show one job: its fields, errors and recorded result."""
    [key] = _ids([job_id])
    found = _with_client(config_path, dsn, prefix, lambda oban: oban.get_job(key))
    if found is None:
        raise click.ClickException(f"no job {key}")
    if as_json:
        _dump(job_json(found))
        return
    rows = [
        ("id", found.id),
        ("state", found.state.value),
        ("worker", found.worker),
        ("queue", found.queue),
        ("attempt", f"{found.attempt} of {found.max_attempts}"),
        ("priority", found.priority),
        ("tags", ", ".join(found.tags)),
        ("attempted by", ", ".join(found.attempted_by)),
        ("inserted", _when(found.inserted_at)),
        ("scheduled", _when(found.scheduled_at)),
        ("attempted", _when(found.attempted_at)),
        ("completed", _when(found.completed_at)),
        ("cancelled", _when(found.cancelled_at)),
        ("discarded", _when(found.discarded_at)),
    ]
    for name, value in rows:
        if value not in ("", None):
            click.echo(f"{name:>13}: {value}")
    click.echo(f"{'args':>13}: {json.dumps(found.args, indent=2, default=str)}")
    click.echo(f"{'meta':>13}: {json.dumps(found.meta, indent=2, default=str)}")
    if found.meta.get("recorded") is True:
        try:
            click.echo(f"{'recorded':>13}: {found.recorded!r}")
        except ValueError as problem:
            click.echo(f"{'recorded':>13}: (cannot be decoded: {problem})")
    for entry in found.errors:
        if isinstance(entry, dict):
            click.echo(f"\nattempt {entry.get('attempt')} at {entry.get('at')}:")
            click.echo(str(entry.get("error", "")).rstrip())


@main.command()
@_common
@_json_option
def queues(config_path: str | None, dsn: str | None, prefix: str | None, as_json: bool) -> None:
    """Every node's queues, from the producer rows the nodes heartbeat."""
    infos = _with_client(config_path, dsn, prefix, lambda oban: oban.queues())
    if as_json:
        _dump(
            [
                {
                    "queue": info.queue,
                    "node": info.node,
                    "limit": info.limit,
                    "paused": info.paused,
                    "running": info.running,
                    "started_at": _iso(info.started_at),
                    "uuid": info.uuid,
                }
                for info in infos
            ]
        )
        return
    _table(
        ["QUEUE", "NODE", "LIMIT", "RUNNING", "PAUSED", "STARTED"],
        [
            [
                i.queue,
                i.node,
                i.limit,
                len(i.running),
                "yes" if i.paused else "",
                _when(i.started_at),
            ]
            for i in infos
        ],
        empty="no queues running (no node heartbeats)",
    )


@main.command()
@_common
@_json_option
def stats(config_path: str | None, dsn: str | None, prefix: str | None, as_json: bool) -> None:
    """Jobs by state and queue (estimates past 1,000 per pair are marked ~), then the jobs
    that finished in the last hour per queue, with their wait and run times (p50, p95)."""

    async def read(oban: Oban) -> tuple[JobCounts, JobStats]:
        return await oban.count_jobs(("state", "queue")), await oban.job_stats()

    counts, finished = _with_client(config_path, dsn, prefix, read)
    if as_json:
        _dump({"counts": _counts_json(counts), "last_hour": _finished_json(finished)})
        return
    states = [state.value for state in JobState if any(k[0] == state.value for k in counts)]
    queue_names = sorted({key[1] for key in counts})

    def cell(key: tuple[str, str]) -> str:
        if key not in counts:
            return "0"
        return ("~" if key in counts.estimated else "") + str(counts[key])

    _table(
        ["QUEUE", *(state.upper() for state in states)],
        [[queue, *(cell((state, queue)) for state in states)] for queue in queue_names],
        empty="no jobs",
    )
    click.echo(f"\nfinished in the last hour (since {_when(finished.since)} UTC):")
    rows = [finished.total(name) for name in finished.queues()]
    _table(
        ["QUEUE", *_FINISHED_HEADERS],
        [[row.queue, *_finished_cells(row)] for row in rows]
        + ([["(all)", *_finished_cells(finished.total())]] if len(rows) > 1 else []),
        empty="no jobs finished",
    )
    if finished.truncated:
        click.echo(
            f"(more jobs finished than one query reads: these are the newest "
            f"{finished.limit:,}, whole from {_when(finished.complete_since)} UTC)"
        )


_FINISHED_HEADERS = (
    "COMPLETED",
    "DISCARDED",
    "CANCELLED",
    "WAIT_P50",
    "WAIT_P95",
    "RUN_P50",
    "RUN_P95",
)


def _counts_json(counts: JobCounts) -> list[dict[str, Any]]:
    return [
        {"state": state, "queue": queue, "count": count, "estimated": key in counts.estimated}
        for key, count in sorted(counts.items())
        for state, queue in [key]
    ]


def _finished_json(finished: JobStats) -> dict[str, Any]:
    def stat(row: JobStat) -> dict[str, Any]:
        return {
            "queue": row.queue,
            "completed": row.completed,
            "discarded": row.discarded,
            "cancelled": row.cancelled,
            "wait_p50": row.wait_p50,
            "wait_p95": row.wait_p95,
            "run_p50": row.run_p50,
            "run_p95": row.run_p95,
        }

    return {
        "since": _iso(finished.since),
        "until": _iso(finished.until),
        "complete_since": _iso(finished.complete_since),
        "queues": [stat(finished.total(name)) for name in finished.queues()],
        "total": stat(finished.total()),
    }


def _finished_cells(row: JobStat) -> list[str]:
    times = (row.wait_p50, row.wait_p95, row.run_p50, row.run_p95)
    return [
        str(row.completed),
        str(row.discarded),
        str(row.cancelled),
        *("-" if value is None else f"{value:.3f}s" for value in times),
    ]


def _manage(verb: str, method: str, help_text: str) -> None:
    @main.command(verb, help=help_text)
    @_common
    @click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
    def command(
        config_path: str | None, dsn: str | None, prefix: str | None, job_ids: tuple[str, ...]
    ) -> None:
        ids = _ids(job_ids)
        count = _with_client(config_path, dsn, prefix, lambda oban: getattr(oban, method)(ids))
        click.echo(f"{verb}: {count} of {len(ids)} job(s)")


_manage("retry", "retry_many_jobs", "Make finished or waiting jobs available again now.")
_manage("cancel", "cancel_many_jobs", "Cancel jobs; running ones are stopped.")
_manage("delete", "delete_many_jobs", "Delete jobs (running ones are left alone).")


@main.command()
@_common
@click.argument("queue")
@_node_option
def pause(
    config_path: str | None, dsn: str | None, prefix: str | None, queue: str, node: str | None
) -> None:
    """Pause a queue on every node (or one): running jobs finish, no new ones start."""
    _with_client(config_path, dsn, prefix, lambda oban: oban.pause_queue(queue, node=node))
    click.echo(f"paused {queue}" + (f" on {node}" if node else ""))


@main.command()
@_common
@click.argument("queue")
@_node_option
def resume(
    config_path: str | None, dsn: str | None, prefix: str | None, queue: str, node: str | None
) -> None:
    """Resume a paused queue on every node (or one)."""
    _with_client(config_path, dsn, prefix, lambda oban: oban.resume_queue(queue, node=node))
    click.echo(f"resumed {queue}" + (f" on {node}" if node else ""))


@main.command()
@_common
@click.argument("queue")
@click.argument("limit", type=click.IntRange(1, None))
@_node_option
def scale(
    config_path: str | None,
    dsn: str | None,
    prefix: str | None,
    queue: str,
    limit: int,
    node: str | None,
) -> None:
    """Set a queue's concurrency limit on every node (or one)."""
    try:
        _with_client(
            config_path,
            dsn,
            prefix,
            lambda oban: oban.scale_queue(queue=queue, limit=limit, node=node),
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    click.echo(f"scaled {queue} to {limit}" + (f" on {node}" if node else ""))


@main.group()
def workflow() -> None:
    """See or cancel a workflow by its id (``meta.workflow_id`` of its jobs)."""


@workflow.command("status")
@_common
@_json_option
@click.argument("workflow_id")
def workflow_status(
    config_path: str | None, dsn: str | None, prefix: str | None, as_json: bool, workflow_id: str
) -> None:
    """How many of the workflow's jobs are in each state; exits 1 when it has no job."""
    _check_workflow_id(workflow_id)
    status = _with_client(config_path, dsn, prefix, lambda oban: oban.workflow_status(workflow_id))
    if as_json:
        _dump(
            {
                "id": status.id,
                "state": status.state,
                "done": status.done,
                "total": status.total,
                "counts": status.counts,
            }
        )
    else:
        click.echo(f"workflow {status.id}: {status.state}, {status.total} job(s)")
        _table(
            ["STATE", "JOBS"],
            [[state, count] for state, count in sorted(status.counts.items())],
            empty="no job of this workflow (never inserted, or pruned)",
        )
    if status.state == "missing":
        sys.exit(1)


@workflow.command("cancel")
@_common
@click.argument("workflow_id")
def workflow_cancel(
    config_path: str | None, dsn: str | None, prefix: str | None, workflow_id: str
) -> None:
    """Cancel every unfinished job of the workflow, running ones included; exits 1 when it
    has no job."""
    _check_workflow_id(workflow_id)

    async def cancel(oban: Oban) -> tuple[int, str]:
        count = await oban.cancel_workflow(workflow_id)
        return count, (await oban.workflow_status(workflow_id)).state

    count, state = _with_client(config_path, dsn, prefix, cancel)
    if state == "missing":
        click.echo(f"no job of workflow {workflow_id} (never inserted, or pruned)", err=True)
        sys.exit(1)
    click.echo(f"cancel workflow {workflow_id}: {count} job(s) cancelled")


def _check_workflow_id(workflow_id: str) -> None:
    try:
        workflow_id_of(workflow_id)
    except (TypeError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="WORKFLOW_ID") from None
