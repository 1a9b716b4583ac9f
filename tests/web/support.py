"""Helpers for the dashboard tests: jobs in every state on either engine, and an HTTP client
for the dashboard mounted under a prefix, as an application would mount it."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from oban import Job, Oban, Record
from oban.web import create_app

#: Where the tests mount the dashboard.
PREFIX = "/admin/oban"
#: An integer a JavaScript number cannot hold: JSON.parse would show ...992.
BIG = 2**53 + 1
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "app/workers.py", line 12, in process\n'
    "    charge(card)\n"
    "RuntimeError: card declined"
)
RECORDED = {"total": 3, "items": ["a", "b"]}


def stamp(moment: datetime) -> str:
    """A UTC time as text both engines store in a timestamp column."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


async def run_sql(instance: Oban, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """One statement on ``instance``'s database (``%s`` placeholders, tables unqualified)."""
    if instance.pool is not None:
        async with instance.pool.connection() as conn:
            await conn.execute(f'SET search_path TO "{instance.prefix}"')
            try:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description else []
            finally:
                await conn.execute("RESET search_path")
    engine = await instance._ready()
    conn = engine._conn  # type: ignore[attr-defined]
    cur = await conn.execute(query.replace("%s", "?"), params)
    rows = await cur.fetchall()
    await cur.close()
    return list(rows)


async def put_state(
    instance: Oban,
    job_id: int,
    state: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Put a job in ``state`` with the timestamps, attempt and node that state implies."""
    now = datetime.now(UTC)
    postgres = instance.pool is not None
    attempt = 0 if state in ("available", "scheduled", "suspended") else 1
    sets = ["state = %s", "attempt = %s"]
    params: list[Any] = [state, attempt]
    if attempt:
        sets += ["attempted_at = %s"]
        params += [stamp(now - timedelta(seconds=30))]
        sets += ["attempted_by = ARRAY[%s, %s]" if postgres else "attempted_by = %s"]
        params += ["web-node", "a1b2"] if postgres else [json.dumps(["web-node", "a1b2"])]
    if state in ("completed", "cancelled", "discarded"):
        sets.append(f"{state}_at = %s")
        params.append(stamp(now - timedelta(seconds=5)))
    if state == "retryable":
        sets.append("scheduled_at = %s")
        params.append(stamp(now + timedelta(hours=1)))
    if errors is not None:
        if postgres:
            sets.append("errors = ARRAY[" + ", ".join(["%s::jsonb"] * len(errors)) + "]::jsonb[]")
            params += [json.dumps(error) for error in errors]
        else:
            sets.append("errors = %s")
            params.append(json.dumps(errors))
    if meta is not None:
        sets.append("meta = %s::jsonb" if postgres else "meta = %s")
        params.append(json.dumps(meta))
    params.append(job_id)
    await run_sql(instance, f"UPDATE oban_jobs SET {', '.join(sets)} WHERE id = %s", tuple(params))


@dataclass
class Seeded:
    """The seeded jobs: ids by state, and the ones the tests look at closely."""

    ids: dict[str, list[int]] = field(default_factory=dict)
    big: int = 0
    discarded: int = 0
    completed: int = 0

    def all(self) -> list[int]:
        return sorted(i for ids in self.ids.values() for i in ids)


async def seed(instance: Oban) -> Seeded:
    """Jobs in every state, in queues ``beta`` and ``gamma`` (which no test node runs): the
    args of users 1..N with plans, tags, one big integer, an error history, a recorded
    result."""
    plan = ["free", "pro"]
    jobs = [
        Job(
            "tests.web.workers.Mailer" if n % 2 else "tests.web.workers.Billing",
            args={"user": {"id": n}, "plan": plan[n % 2], "note": f"job {n}"},
            queue="beta" if n % 3 else "gamma",
            tags=["urgent"] if n % 4 == 0 else ["batch"],
        )
        for n in range(1, 25)
    ]
    inserted = await instance.enqueue_many(jobs)
    ids = [job.id for job in inserted if job.id is not None]
    by_state = {
        "available": ids[0:6],
        "scheduled": ids[6:9],
        "executing": ids[9:11],
        "retryable": ids[11:13],
        "completed": ids[13:17],
        "discarded": ids[17:19],
        "cancelled": ids[19:22],
        "suspended": ids[22:24],
    }
    error = {"attempt": 1, "at": stamp(datetime.now(UTC) - timedelta(seconds=20)), "error": ""}
    for state, state_ids in by_state.items():
        for job_id in state_ids:
            if state == "available":
                continue
            if state == "cancelled":
                await instance.cancel_many_jobs([job_id])
            elif state == "scheduled":
                await run_sql(
                    instance,
                    "UPDATE oban_jobs SET state = 'scheduled', scheduled_at = %s WHERE id = %s",
                    (stamp(datetime.now(UTC) + timedelta(hours=2)), job_id),
                )
            elif state in ("retryable", "discarded"):
                await put_state(instance, job_id, state, errors=[{**error, "error": TRACEBACK}])
            elif state == "completed":
                recorded = {"recorded": True, "return": Record(RECORDED).encoded}
                await put_state(instance, job_id, state, meta=recorded)
            else:
                await put_state(instance, job_id, state)
    big = await instance.enqueue(
        Job(
            "tests.web.workers.Billing",
            args={"account": BIG, "nested": {"big": [BIG]}},
            queue="beta",
        )
    )
    assert big.id is not None
    by_state["available"].append(big.id)
    # Inserted (and due) a while ago, before their attempts.
    earlier = stamp(datetime.now(UTC) - timedelta(minutes=2))
    await run_sql(
        instance, "UPDATE oban_jobs SET inserted_at = %s WHERE id <= %s", (earlier, big.id)
    )
    await run_sql(
        instance,
        "UPDATE oban_jobs SET scheduled_at = inserted_at "
        "WHERE id <= %s AND state NOT IN ('scheduled', 'retryable')",
        (big.id,),
    )
    return Seeded(
        ids=by_state,
        big=big.id,
        discarded=by_state["discarded"][0],
        completed=by_state["completed"][0],
    )


def mounted(**options: Any) -> Starlette:
    """An application with the dashboard mounted at :data:`PREFIX`."""
    return Starlette(routes=[Mount(PREFIX, app=create_app(**options))])


class Dash:
    """An HTTP client of the mounted dashboard that keeps its CSRF cookie."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(PREFIX + path, **kwargs)

    async def token(self) -> str:
        """The session's CSRF token, as the page's meta tag gives it."""
        page = await self.get("/jobs")
        found = re.search(r'<meta name="oban-csrf-token" content="([^"]+)"', page.text)
        assert found, page.text[:500]
        return found.group(1)

    async def post(
        self,
        path: str,
        data: dict[str, Any] | list[tuple[str, Any]],
        *,
        token: bool = True,
        htmx: bool = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A form POST as htmx sends it: the token in the ``X-CSRF-Token`` header (or in the
        form with ``htmx=False``)."""
        sent = dict(headers or {})
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if token:
            value = await self.token()
            if htmx:
                sent["X-CSRF-Token"] = value
            else:
                fields.append(("csrf_token", value))
        if htmx:
            sent["HX-Request"] = "true"
        form: dict[str, list[str]] = {}
        for key, value in fields:
            form.setdefault(key, []).append(str(value))
        return await self.client.post(PREFIX + path, data=form, headers=sent)


@asynccontextmanager
async def dash(**options: Any) -> AsyncIterator[Dash]:
    """A :class:`Dash` of ``create_app(**options)`` mounted at :data:`PREFIX`."""
    transport = httpx.ASGITransport(app=mounted(**options))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield Dash(client)


def row_ids(html: str) -> list[int]:
    """The job ids of the list rows in a page or fragment, in order."""
    return [int(found) for found in re.findall(r'data-job-id="(\d+)"', html)]


async def states_of(instance: Oban, ids: list[int]) -> dict[int, str | None]:
    found = {job_id: await instance.get_job(job_id) for job_id in ids}
    return {job_id: (job.state.value if job else None) for job_id, job in found.items()}
