"""Poison rows (issue 16, item 2): one row whose values the node cannot read or compute with
never fails the statement or read it is part of.

Before, a claimed row the decoder could not read (a 400-digit integer in args, which
PostgreSQL accepts and an Elixir node writes happily; nesting past 1,024 levels; a non-JSON
column or invalid UTF-8 on SQLite; a timestamp past year 9999) stranded the whole claimed
batch in ``executing`` while its producer heartbeated, so it was never rescued; one orphan
whose ``meta.rescued`` was not an integer (or, on SQLite, whose ``attempted_by`` was not
JSON) failed every lifeline tick; and the same rows failed ``get_job``, cancels and retries.

Each test puts one hostile row among ordinary ones and asserts that the hostile row ends
alone with a recorded error (discarded: reading it again cannot help) and that every other
row goes through exactly once, on both engines unless the value exists on one only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from oban import Job, Oban, worker
from oban._engines import _payloads
from tests.conformance import conftest as conformance
from tests.helpers import eventually

# Both engines, through the conformance fixtures (assigned: an import would read as unused).
engine = conformance.engine
make_oban = conformance.make_oban
sql = conformance.sql
backdate = conformance.backdate

RUNS: Counter[int] = Counter()
HOUR = 3600.0


@pytest.fixture(autouse=True)
def _clean_runs() -> None:
    RUNS.clear()


@worker(queue="default")
class HostileRowOk:
    async def process(self, job: Job) -> None:
        assert job.id is not None
        RUNS[job.id] += 1


WORKER = f"{HostileRowOk.__module__}.HostileRowOk"
BIG_INTEGER = '{"n": ' + "9" * 400 + "}"
DEEP = '{"a": ' + "[" * 1100 + "]" * 1100 + "}"

#: name -> (engines, column, SQL value expression per engine, text the recorded error names).
POISONS: dict[str, tuple[tuple[str, ...], str, dict[str, str], str]] = {
    "big-integer-args": (
        ("postgres", "sqlite"),
        "args",
        {"postgres": f"'{BIG_INTEGER}'::jsonb", "sqlite": f"'{BIG_INTEGER}'"},
        "args",
    ),
    "deep-args": (
        ("postgres", "sqlite"),
        "args",
        {"postgres": f"'{DEEP}'::jsonb", "sqlite": f"'{DEEP}'"},
        "args",
    ),
    "big-integer-meta": (
        ("postgres", "sqlite"),
        "meta",
        {"postgres": f"'{BIG_INTEGER}'::jsonb", "sqlite": f"'{BIG_INTEGER}'"},
        "meta",
    ),
    "infinite-timestamp": (
        ("postgres",),
        "inserted_at",
        {"postgres": "'infinity'::timestamp"},
        "inserted_at",
    ),
    "garbage-timestamp": (("sqlite",), "inserted_at", {"sqlite": "'yesterday-ish'"}, "inserted_at"),
    "args-not-json": (("sqlite",), "args", {"sqlite": "'not json'"}, "args"),
    "tags-not-json": (("sqlite",), "tags", {"sqlite": "'[1,'"}, "tags"),
    "invalid-utf8-args": (
        ("sqlite",),
        "args",
        {"sqlite": "CAST(x'7b226e223a22ff227d' AS TEXT)"},
        "args",
    ),
    "invalid-utf8-queue": (("sqlite",), "queue", {"sqlite": "CAST(x'51ff' AS TEXT)"}, "queue"),
    "invalid-utf8-worker": (
        ("sqlite",),
        "worker",
        {"sqlite": "CAST(x'48ff' AS TEXT)"},
        "worker",
    ),
}


async def _insert_row(
    oban: Oban, sql: Callable[..., Any], engine: str, column: str, value: str, **fields: Any
) -> int:
    """An available job of HostileRowOk whose ``column`` is the SQL expression ``value``."""
    columns = {"state": "'available'", "queue": "'default'", "worker": f"'{WORKER}'"}
    columns.update({key: repr_sql(val) for key, val in fields.items()})
    columns[column] = value
    names = ", ".join(columns)
    values = ", ".join(columns.values())
    rows = await sql(oban, f"INSERT INTO oban_jobs ({names}) VALUES ({values}) RETURNING id")
    return int(rows[0][0])


def repr_sql(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


async def _state(oban: Oban, sql: Callable[..., Any], job_id: int) -> tuple[str, Any]:
    rows = await sql(oban, "SELECT state, errors FROM oban_jobs WHERE id = %s", (job_id,))
    state, errors = rows[0]
    return state, json.loads(errors) if isinstance(errors, str) else errors


async def _all_completed(oban: Oban, sql: Callable[..., Any], ids: Sequence[int]) -> bool:
    for job_id in ids:
        if (await _state(oban, sql, job_id))[0] != "completed":
            return False
    return True


# ---------------------------------------------------------------------------------------------
# A claimed batch with one row the decoder cannot read
# ---------------------------------------------------------------------------------------------


def _cases(names: Sequence[str]) -> list[Any]:
    """(engine, poison) for each engine that can store each poison of ``names``."""
    return [
        pytest.param(engine, name, id=f"{engine}-{name}")
        for name in names
        for engine in POISONS[name][0]
    ]


#: A row in a queue no node runs is never claimed: only reads and management meet it.
CLAIMED = [name for name in POISONS if POISONS[name][1] != "queue"]


@pytest.mark.parametrize(("engine", "poison"), _cases(CLAIMED), indirect=["engine"])
async def test_an_unreadable_claimed_row_fails_alone_and_the_batch_runs(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str, poison: str
) -> None:
    _engines, column, values, named = POISONS[poison]
    oban = make_oban(queues={"default": 20})
    client = make_oban(name="rows_client")
    good = await client.enqueue_many([HostileRowOk.new({"n": n}) for n in range(6)])
    bad = await _insert_row(client, sql, engine, column, values[engine])
    good += await client.enqueue_many([HostileRowOk.new({"n": n}) for n in range(6, 12)])
    ids = [job.id for job in good if job.id is not None]

    async with oban:
        await eventually(
            lambda: _all_completed(oban, sql, ids),
            timeout=10,
            interval=0.1,
            message="the other jobs of the claimed batch completed",
        )

        async def settled() -> Any:
            state, errors = await _state(oban, sql, bad)
            return (state, errors) if state != "executing" else None

        state, errors = await eventually(settled, timeout=10, message="the bad row settled")
        later = await client.enqueue_many([HostileRowOk.new({"later": n}) for n in range(5)])
        later_ids = [job.id for job in later if job.id is not None]
        await eventually(
            lambda: _all_completed(oban, sql, later_ids),
            timeout=10,
            interval=0.1,
            message="jobs inserted later completed",
        )

    assert state == "discarded"
    (entry,) = errors
    assert "cannot read" in entry["error"]
    assert named in entry["error"]
    assert bad not in RUNS, "the unreadable row ran"
    for job_id in ids + later_ids:
        assert RUNS[job_id] == 1, f"job {job_id} ran {RUNS[job_id]} times"


# ---------------------------------------------------------------------------------------------
# Management reads and writes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "poison"),
    _cases(
        [
            "big-integer-args",
            "deep-args",
            "args-not-json",
            "invalid-utf8-worker",
            "invalid-utf8-queue",
            "infinite-timestamp",
        ]
    ),
    indirect=["engine"],
)
async def test_get_job_reads_an_unreadable_row_without_failing(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str, poison: str
) -> None:
    _engines, column, values, named = POISONS[poison]
    oban = make_oban()
    good = await oban.enqueue(HostileRowOk.new({"n": 1}, tags=["keep"]))
    bad = await _insert_row(oban, sql, engine, column, values[engine], priority=3)

    found = await oban.get_job(bad)
    assert isinstance(found, _payloads.UnreadableJob)
    assert found.id == bad and found.state == "available" and found.priority == 3
    assert found.worker == ("" if column == "worker" else WORKER)
    assert named in found.unreadable
    again = await oban.get_job(good)
    assert again is not None and again.args == {"n": 1} and again.tags == ["keep"]

    # Updating it would write what could not be read: it is left alone.
    updated = await oban.update_many_jobs([bad, good], {"priority": 5})
    assert [job.id for job in updated] == [good.id]
    rows = await sql(oban, "SELECT priority FROM oban_jobs WHERE id = %s", (bad,))
    assert rows[0][0] == 3
    # Cancel, retry and delete take ids: the row goes through like any other.
    assert await oban.cancel_many_jobs([bad, good]) == 2
    assert await oban.retry_many_jobs([bad, good]) == 2
    assert await oban.delete_many_jobs([bad, good]) == 2


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
async def test_cancel_of_running_jobs_with_an_errors_column_that_is_not_json(
    make_oban: Callable[..., Oban], sql: Callable[..., Any]
) -> None:
    # On PostgreSQL errors is jsonb[] (or jsonb): always JSON.
    oban = make_oban()
    ids = [
        await _insert_row(oban, sql, "sqlite", "errors", value, state="executing", attempt=1)
        for value in ("'[]'", "'not json'", '\'{"an": "object"}\'', "'[]'")
    ]

    assert await oban.cancel_many_jobs(ids) == 4
    for job_id in ids:
        state, errors = await _state(oban, sql, job_id)
        assert state == "cancelled"
        assert [entry["error"] for entry in errors] == ["cancelled while executing"]


# ---------------------------------------------------------------------------------------------
# The lifeline, staging and pruning
# ---------------------------------------------------------------------------------------------

#: engine -> {name: (column, SQL value)} of an orphan the rescue must handle.
RESCUE_POISONS: dict[str, dict[str, tuple[str, str]]] = {
    "postgres": {
        "rescued-text": ("meta", """'{"rescued": "x"}'::jsonb"""),
        "rescued-fraction": ("meta", """'{"rescued": 1.5}'::jsonb"""),
        "rescued-huge": ("meta", """'{"rescued": 1e400}'::jsonb"""),
        "meta-scalar": ("meta", """'"x"'::jsonb"""),
    },
    "sqlite": {
        "rescued-text": ("meta", """'{"rescued": "x"}'"""),
        "attempted-by-not-json": ("attempted_by", "'not json'"),
        "attempted-by-invalid-utf8": ("attempted_by", "CAST(x'5b22ff225d' AS TEXT)"),
    },
}


@pytest.mark.parametrize(
    ("engine", "poison"),
    [
        pytest.param(engine, name, id=f"{engine}-{name}")
        for engine, names in RESCUE_POISONS.items()
        for name in names
    ],
    indirect=["engine"],
)
async def test_one_odd_orphan_does_not_stop_the_rescue_of_the_others(
    make_oban: Callable[..., Oban],
    sql: Callable[..., Any],
    backdate: Callable[..., Any],
    engine: str,
    poison: str,
) -> None:
    column, value = RESCUE_POISONS[engine][poison]
    node = make_oban(name="rescuer", node="py-leader", leadership=True)
    await node.start()
    await eventually(lambda: node.is_leader, message="the node leads")
    # Orphans of a producer no row knows (an Elixir node's, or a dead one's), started two
    # hours ago: rescued by the rescue_after rule. The third is the odd one.
    unknown = '\'["elixir@app-1", "gone"]\''
    if engine == "postgres":
        unknown = "ARRAY['elixir@app-1', 'gone']"
    common: dict[str, Any] = {"state": "executing", "attempt": 1}
    ids = [
        await _insert_row(node, sql, engine, "attempted_by", unknown, **common) for _ in range(5)
    ]
    await sql(node, f"UPDATE oban_jobs SET {column} = {value} WHERE id = %s", (ids[2],))
    for job_id in ids:
        await backdate(node, job_id, "attempted_at", 2 * HOUR)

    (lifeline,) = [plugin for plugin in node._plugins if plugin.name == "lifeline"]
    await lifeline.tick()

    for job_id in ids:
        rows = await sql(node, "SELECT state FROM oban_jobs WHERE id = %s", (job_id,))
        assert rows[0][0] == "available", f"orphan {job_id} ({'odd' if job_id == ids[2] else 'ok'})"
    found = await node.get_job(ids[0])
    assert found is not None and found.meta == {"rescued": 1}
    odd = await node.get_job(ids[2])
    assert odd is not None
    if column == "meta":
        assert isinstance(odd.meta, dict) and odd.meta.get("rescued") == 1, odd.meta


async def test_staging_and_pruning_go_through_hostile_rows(
    make_oban: Callable[..., Oban], sql: Callable[..., Any], engine: str
) -> None:
    # SQLite stages the node's own queues: it runs "default", where the jobs are.
    node = make_oban(
        name="stager",
        node="py-leader",
        leadership=True,
        pruner={"max_age": 60},
        queues={"default": 1},
    )
    await node.start()
    await eventually(lambda: node.is_leader, message="the node leads")
    bad_args = "'not json'" if engine == "sqlite" else f"'{BIG_INTEGER}'::jsonb"
    empty = "'{}'" if engine == "sqlite" else "'{}'::jsonb"
    past = "'2000-01-01 00:00:00.000'"
    scheduled = [
        await _insert_row(node, sql, engine, "args", bad_args, state="scheduled"),
        await _insert_row(node, sql, engine, "args", empty, state="scheduled"),
    ]
    finished = [
        await _insert_row(node, sql, engine, "args", bad_args, state="completed"),
        await _insert_row(node, sql, engine, "args", empty, state="completed"),
    ]
    for job_id in scheduled:
        await sql(node, f"UPDATE oban_jobs SET scheduled_at = {past} WHERE id = %s", (job_id,))
    for job_id in finished:
        await sql(node, f"UPDATE oban_jobs SET completed_at = {past} WHERE id = %s", (job_id,))

    for name in ("stager", "pruner"):
        plugins = [plugin for plugin in node._plugins if plugin.name == name]
        for plugin in plugins:
            await plugin.tick()

    for job_id in scheduled:
        rows = await sql(node, "SELECT state FROM oban_jobs WHERE id = %s", (job_id,))
        assert rows[0][0] != "scheduled", f"job {job_id} was not staged"
    for job_id in finished:
        rows = await sql(node, "SELECT count(*) FROM oban_jobs WHERE id = %s", (job_id,))
        assert rows[0][0] == 0, f"job {job_id} was not pruned"
