"""The dashboard on a million jobs: every page, fragment and action of ``oban.web`` over HTTP.

The table is seeded as in ``bench_query.py`` (its ``postgres`` and ``sqlite`` helpers are
reused: one ``INSERT ... SELECT`` of ``--rows`` jobs, default 1,000,000, then ``ANALYZE``).
Then, so that the queues and nodes pages have something to show: 3 nodes x 10 queues of
producer rows (one queue paused on one node, heartbeats refreshed before every request that
reads them), 5 of the seeded executing jobs per producer marked as running there, and one
discarded job given 20 attempts with a traceback each (the heaviest detail page).

The dashboard is ``create_app(oban)`` mounted at ``/admin/oban`` in a Starlette app and
driven by ``httpx.AsyncClient`` over ``ASGITransport``, as a browser would drive it: full
pages without ``HX-Request``, the fragments (load more, live refresh) with it, the CSRF
cookie kept by the client and its token sent in ``X-CSRF-Token`` on POSTs. So a time covers
routing, the queries, building ``Job`` objects and rendering the templates (not a network or
a server's HTTP parsing). Each request runs once to warm up and ``--repeat`` times (default
5; use 20 or more for a meaningful p95): the table shows the median and the p95 (nearest
rank) in milliseconds, marks every median or p95 above 200 ms with ``!``, and gives in
brackets the median time spent inside the ``Oban`` calls the handler made (``list_jobs``,
``count_jobs``, ``get_job``, ``queues``, ``crons``, ``job_stats``, ...); the rest is routing
and rendering. The progress lines split that API time by call. "returned" is the job rows in
the HTML (or an action's message) and the size of the response.

Also, for the cron page: five cron entries declared for the instance, the minutely one with
a day of runs (1,440 jobs) in the table, the others with a few.

Requests: ``/jobs`` unfiltered and per state tab, a queue+state, worker, args and search
filter, the 21st page of "load more" (the cursor followed 20 times, unfiltered and within a
state), a job's detail page, ``/queues``, ``/nodes``, ``/cron``, ``/charts`` (the last hour
per minute, every queue and one), every live-refresh fragment (``/jobs/live`` at 50 rows, at
1,000 rows as a refresh asks once "load more" has shown that many, and with a state;
``/jobs/{id}/live``, ``/queues/live``, ``/nodes/live``, ``/cron/live``, ``/charts/live``),
the count of the "all matching" bar (``/jobs/matching``: a state, a queue with more than
1,000 jobs, an args filter), ``/health?db=1``, and, last, the actions: pause and resume a
queue, cancel and retry 50 selected jobs (each run takes 50 new ones from the tab's first
page), then cancel every scheduled job of one queue and retry every discarded job of another
(1,000 per request, the cap; before each run the jobs the previous one changed are put back,
untimed): the actions change at most 600 of the seeded rows per pass for good, after that
pass's reads.

``--recent N`` first moves the finish time of the N newest completed jobs into the last hour
(evenly spread, as in a busy hour: N / 60 jobs a minute), the charts' worst case; by default
the seed finishes one job a second, some 2,800 completed ones in the last hour.

PostgreSQL is measured right after the seed (``postgres``) and again after
``VACUUM (ANALYZE)`` (``pg+vacuum``), as in ``bench_query.py``; its schema
(``bench_query_<hex>``, the reused helper's name) is dropped at the end unless ``--keep``.
SQLite: a new file in a temporary directory, removed at the end unless ``--keep``.

    .venv/bin/python bench/bench_web.py                    # both engines, 1,000,000 rows
    .venv/bin/python bench/bench_web.py --quick            # 100,000 rows
    .venv/bin/python bench/bench_web.py --engine sqlite    # no server needed
    .venv/bin/python bench/bench_web.py --rows 250000 --repeat 9 --keep
    .venv/bin/python bench/bench_web.py --engine postgres --repeat 20 --recent 50000

The DSN comes from ``--dsn`` or ``OBAN_BENCH_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from bench_query import ACCOUNTS, DEFAULT_DSN, QUEUES, WORKERS, Target, postgres, sqlite
from psycopg import sql
from starlette.applications import Starlette
from starlette.routing import Mount

from oban import Job, Oban, decorators, worker
from oban._scheduler import cron_job
from oban.web import create_app

SLOW_MS = 200.0
#: Where the dashboard is mounted, as an application would mount it.
PREFIX = "/admin/oban"
BASE_URL = "http://testserver"
HTMX = {"HX-Request": "true"}
#: How many times "load more" is followed before the timed page.
DEEP = 20
NODES = ("web-1", "worker-1", "worker-2")
RUNNING_PER_PRODUCER = 5
ERRORS = 20
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/myapp/workers.py", line 42, in process\n'
    "    response = client.post(url, json=payload, timeout=10)\n"
    '  File "/app/.venv/lib/python3.11/site-packages/httpx/_client.py", line 1146, in post\n'
    "    return self.request(...)\n"
    "httpx.ConnectTimeout: timed out connecting to hooks.example.com:443 (attempt {n})"
)
#: The ``Oban`` calls whose time is reported separately from routing and rendering.
API_CALLS = (
    "list_jobs",
    "count_jobs",
    "get_job",
    "queues",
    "nodes",
    "crons",
    "job_stats",
    "cancel_many_jobs",
    "retry_many_jobs",
    "pause_queue",
    "resume_queue",
)
JOB_ROW = re.compile(r'<tr data-job-id="(\d+)"')
MORE = re.compile(r'class="more" hx-get="([^"]+)"')
FLASH = re.compile(r'data-flash="ok">([^<]*)</p>')
DETAIL = re.compile(r"/jobs/\d+")
MATCHING = re.compile(r'data-matching="([^"]*)"')
CSRF = re.compile(r'<meta name="oban-csrf-token" content="([^"]+)"')

#: The cron entries declared for the instance: the first runs every minute.
CRONS = ("* * * * *", "*/5 * * * *", "0 * * * *", "0 3 * * *", "30 6 * * MON-FRI")
#: Runs of the minutely entry in the table: a day's.
CRON_RUNS = 1_440

#: Request name -> (median ms, p95 ms, median ms inside the API calls, what it returned).
Results = dict[str, tuple[float, float, float, str]]


class ApiMeter:
    """Wraps an instance's query and action methods to add up the seconds spent in each
    (the outermost call only: ``nodes()`` calls ``queues()``)."""

    def __init__(self, oban: Oban) -> None:
        self.spent: dict[str, float] = {}
        self._depth = 0
        for name in API_CALLS:
            setattr(oban, name, self._wrap(name, getattr(oban, name)))

    def _wrap(
        self, name: str, method: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    elapsed = time.perf_counter() - started
                    self.spent[name] = self.spent.get(name, 0.0) + elapsed

        return timed


@dataclass
class Call:
    """One HTTP request of the dashboard, relative to :data:`PREFIX`."""

    path: str
    htmx: bool = False
    form: list[tuple[str, str]] | None = None  # a POST when given


@dataclass
class Request:
    """A named request; ``prepare`` (untimed, before each run) builds it when it depends on
    the data: a cursor, the jobs to select, fresh producer heartbeats."""

    name: str
    call: Call | None = None
    prepare: Callable[[Session], Awaitable[Call]] | None = None


@dataclass
class Session:
    """A browser's session on the mounted dashboard: its client (cookies) and the engine."""

    client: httpx.AsyncClient
    target: Target
    sql: Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]]
    now_sql: str
    meter: ApiMeter
    token: str = ""
    cache: dict[str, Call] = field(default_factory=dict)
    #: When the runs of an action on every matching job began (database clock).
    marks: dict[str, Any] = field(default_factory=dict)

    async def send(self, call: Call) -> httpx.Response:
        headers = dict(HTMX) if call.htmx else {}
        if call.form is None:
            return await self.client.get(PREFIX + call.path, headers=headers)
        headers["X-CSRF-Token"] = self.token
        return await self.client.post(PREFIX + call.path, data=_form(call.form), headers=headers)

    async def get(self, path: str) -> str:
        response = await self.send(Call(path))
        _check(response, path)
        return response.text


def _form(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    form: dict[str, list[str]] = {}
    for key, value in pairs:
        form.setdefault(key, []).append(value)
    return form


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:400]}")


def _query(**values: str) -> str:
    return "?" + urlencode(values)


# What to request


def requests(target: Target, rows: int, detail_ids: tuple[int, int]) -> list[Request]:
    """Every page, fragment and action, by name."""
    completed, discarded = detail_ids
    email = f"user{target.first_id + rows // 2}@"  # one row
    account = f"account_id={4242 % ACCOUNTS}"  # rows / 5,000
    states = [
        "available",
        "scheduled",
        "executing",
        "retryable",
        "completed",
        "discarded",
        "cancelled",
        "suspended",
    ]
    plan = [
        Request("page /jobs", Call("/jobs")),
        *(Request(f"page /jobs state={s}", Call("/jobs" + _query(state=s))) for s in states),
        Request(
            "page /jobs queue+state (billing, retryable)",
            Call("/jobs" + _query(queue="billing", state="retryable")),
        ),
        Request("page /jobs worker", Call("/jobs" + _query(worker=WORKERS[4]))),
        Request(f"page /jobs args {account} (0.02%)", Call("/jobs" + _query(args=account))),
        Request("page /jobs args kind=reset (25%)", Call("/jobs" + _query(args="kind=reset"))),
        Request("page /jobs search, one match", Call("/jobs" + _query(q=email))),
        Request("page /jobs search, every row matches", Call("/jobs" + _query(q="example.com"))),
        Request(f"more: page {DEEP + 1} (load more x{DEEP})", prepare=_deep("/jobs")),
        Request(
            f"more: page {DEEP + 1}, state=retryable",
            prepare=_deep("/jobs" + _query(state="retryable")),
        ),
        Request("page /jobs/{id} completed", Call(f"/jobs/{completed}")),
        Request(f"page /jobs/{{id}} discarded, {ERRORS} errors", Call(f"/jobs/{discarded}")),
        Request("page /queues", prepare=_fresh(Call("/queues"))),
        Request("page /nodes", prepare=_fresh(Call("/nodes"))),
        Request(f"page /cron ({len(CRONS)} entries)", Call("/cron")),
        Request("page /charts (every queue)", Call("/charts")),
        Request("page /charts queue=billing", Call("/charts" + _query(queue="billing"))),
        Request("live /jobs/live (50 rows)", Call("/jobs/live", htmx=True)),
        Request("live /jobs/live limit=1000", Call("/jobs/live?limit=1000", htmx=True)),
        Request(
            "live /jobs/live state=available",
            Call("/jobs/live" + _query(state="available"), htmx=True),
        ),
        Request("live /jobs/{id}/live", Call(f"/jobs/{discarded}/live", htmx=True)),
        Request("live /queues/live", prepare=_fresh(Call("/queues/live", htmx=True))),
        Request("live /nodes/live", prepare=_fresh(Call("/nodes/live", htmx=True))),
        Request("live /cron/live", Call("/cron/live", htmx=True)),
        Request("live /charts/live", Call("/charts/live", htmx=True)),
        Request(
            "live /charts/live queue=billing",
            Call("/charts/live" + _query(queue="billing"), htmx=True),
        ),
        Request(
            "count /jobs/matching state=retryable",
            Call("/jobs/matching" + _query(state="retryable"), htmx=True),
        ),
        Request(
            "count /jobs/matching queue=default (1,000+)",
            Call("/jobs/matching" + _query(queue="default"), htmx=True),
        ),
        Request(
            f"count /jobs/matching args {account}",
            Call("/jobs/matching" + _query(args=account), htmx=True),
        ),
        Request("health ?db=1", prepare=_fresh(Call("/health?db=1"))),
        Request("post pause queue (every node)", _queue_action("pause")),
        Request("post resume queue (every node)", _queue_action("resume")),
        Request("post cancel 50 selected (scheduled)", prepare=_select("cancel", "scheduled")),
        Request("post retry 50 selected (discarded)", prepare=_select("retry", "discarded")),
        Request(
            "post cancel all matching (mailers, scheduled)",
            prepare=_matching(
                "cancel",
                "UPDATE oban_jobs SET state = 'scheduled', cancelled_at = NULL "
                "WHERE state = 'cancelled' AND queue = 'mailers' AND cancelled_at >= %s",
                state="scheduled",
                queue="mailers",
            ),
        ),
        Request(
            "post retry all matching (default, discarded)",
            prepare=_matching(
                "retry",
                "UPDATE oban_jobs SET state = 'discarded', discarded_at = attempted_at "
                "WHERE state = 'available' AND queue = 'default' AND scheduled_at >= %s",
                state="discarded",
                queue="default",
            ),
        ),
    ]
    return plan


def _deep(start: str) -> Callable[[Session], Awaitable[Call]]:
    """The ``DEEP + 1``-th page: "load more" followed ``DEEP`` times from ``start``."""

    async def prepare(session: Session) -> Call:
        cached = session.cache.get(start)
        if cached is not None:
            return cached
        html = await session.get(start)
        for _ in range(DEEP):
            found = MORE.search(html)
            if found is None:
                raise RuntimeError(f"{start}: no 'load more' after {len(JOB_ROW.findall(html))}")
            path = found.group(1).replace("&amp;", "&").removeprefix(PREFIX)
            last = Call(path, htmx=True)
            response = await session.send(last)
            _check(response, path)
            html = response.text
        session.cache[start] = last
        return last

    return prepare


def _fresh(call: Call) -> Callable[[Session], Awaitable[Call]]:
    """``call`` after a heartbeat of the producer rows (the pages list nodes seen within the
    last minute)."""

    async def prepare(session: Session) -> Call:
        await session.sql(f"UPDATE oban_producers SET updated_at = {session.now_sql}", ())
        return call

    return prepare


def _queue_action(action: str) -> Call:
    """A queue control for every node, as the queues page's buttons post it."""
    form = [("queue", "billing"), ("next", f"{PREFIX}/queues")]
    return Call(f"/queues/{action}", htmx=True, form=form)


def _select(action: str, state: str) -> Callable[[Session], Awaitable[Call]]:
    """Select the first page's 50 jobs of ``state`` and act on them."""

    async def prepare(session: Session) -> Call:
        html = await session.get("/jobs" + _query(state=state))
        ids = JOB_ROW.findall(html)
        if len(ids) < 50:
            raise RuntimeError(f"only {len(ids)} {state} jobs left to {action}")
        form = [("id", i) for i in ids[:50]] + [("next", f"{PREFIX}/jobs?state={state}")]
        return Call(f"/jobs/{action}", htmx=True, form=form)

    return prepare


def _matching(action: str, restore: str, **filters: str) -> Callable[[Session], Awaitable[Call]]:
    """An action on every job matching ``filters`` (the newest 1,000 it applies to). Before
    each run but the first, ``restore`` (untimed) puts back the jobs it changed since then,
    so that every run acts on 1,000 jobs and the table stays as seeded."""

    async def prepare(session: Session) -> Call:
        since = session.marks.get(action)
        if since is None:
            [[session.marks[action]]] = await session.sql(f"SELECT {session.now_sql}", ())
        else:
            await session.sql(restore, (since,))
        form = [*filters.items(), ("next", f"{PREFIX}/jobs")]
        return Call(f"/jobs/{action}/matching", htmx=True, form=form)

    return prepare


# Measuring


def _returned(call: Call, response: httpx.Response) -> str:
    """The job rows of a list, the message of an action, and the size."""
    size = len(response.content)
    shown = f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} B"
    flash = FLASH.search(response.text)
    if flash is not None:
        return f"{flash.group(1)!r}, {shown}"
    matching = MATCHING.search(response.text)
    if matching is not None:
        return f"{matching.group(1)} matching, {shown}"
    if call.path.startswith("/jobs") and not DETAIL.match(call.path):
        return f"{len(JOB_ROW.findall(response.text))} jobs, {shown}"
    return shown


async def measure(session: Session, plan: list[Request], repeat: int, label: str) -> Results:
    """Each request's median milliseconds, median milliseconds in the API, and what it
    returned."""
    results: Results = {}
    for request in plan:
        totals: list[float] = []
        calls: dict[str, list[float]] = {}
        returned = ""
        for run in range(repeat + 1):  # run 0 warms up
            call = request.call if request.prepare is None else await request.prepare(session)
            assert call is not None
            session.meter.spent = {}
            started = time.perf_counter()
            response = await session.send(call)
            elapsed = (time.perf_counter() - started) * 1000
            _check(response, request.name)
            if run:
                totals.append(elapsed)
                calls.setdefault("api", []).append(sum(session.meter.spent.values()) * 1000)
                for name, seconds in session.meter.spent.items():
                    calls.setdefault(name, []).append(seconds * 1000)
            returned = _returned(call, response)
        median = statistics.median(totals)
        p95 = _p95(totals)
        api = statistics.median(calls.get("api", [0.0]))
        results[request.name] = (median, p95, api, returned)
        mark = "!" if p95 > SLOW_MS else " "
        # Where the API time went (the median of each call), for the progress lines.
        parts = ", ".join(
            f"{name} {statistics.median(times):.1f}"
            for name, times in calls.items()
            if name != "api"
        )
        print(
            f"  {label:<9} {request.name:<44} {median:>8.1f} / {p95:>6.1f} ms{mark} "
            f"(api {api:.1f}: {parts or '-'})  {returned}",
            flush=True,
        )
    return results


def _p95(times: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(times)
    return ordered[max(math.ceil(0.95 * len(ordered)), 1) - 1]


def mounted(oban: Oban) -> Starlette:
    return Starlette(routes=[Mount(PREFIX, app=create_app(oban))])


async def bench(
    target: Target,
    rows: int,
    repeat: int,
    sql_runner: Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]],
    now_sql: str,
    labels: list[str],
    recent: int = 0,
) -> dict[str, Results]:
    """Set up the nodes, the detail job, the cron entries and (``recent``) a busy last hour,
    then measure once per label (a ``vacuum`` in between when there are two)."""
    meter = ApiMeter(target.oban)
    detail = await decorate(target, sql_runner)
    await add_crons(target.oban)
    if recent:
        await busy_hour(target, sql_runner, recent)
    transport = httpx.ASGITransport(app=mounted(target.oban))
    out: dict[str, Results] = {}
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        session = Session(client, target, sql_runner, now_sql, meter)
        found = CSRF.search(await session.get("/jobs"))  # sets the CSRF cookie
        assert found, "no CSRF token on /jobs"
        session.token = found.group(1)
        plan = requests(target, rows, detail)
        for index, label in enumerate(labels):
            if index:
                assert target.vacuum is not None
                print("VACUUM (ANALYZE) ...", flush=True)
                await target.vacuum()
                session.cache.clear()
            out[label] = await measure(session, plan, repeat, label)
    return out


async def decorate(
    target: Target, run: Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]]
) -> tuple[int, int]:
    """Producer rows for 3 nodes x 10 queues, some executing jobs running on them, and a
    discarded job with 20 errors. Returns (a completed job's id, that discarded job's id)."""
    oban = target.oban
    is_pg = oban.pool is not None
    started = datetime.now(UTC) - timedelta(hours=3)
    for n, node in enumerate(NODES):
        for queue, _share in QUEUES:
            producer = str(uuid.uuid4())
            meta = {"local_limit": 10, "paused": node == "worker-2" and queue == "billing"}
            await run(
                "INSERT INTO oban_producers (uuid, name, node, queue, meta, started_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (producer, oban.name, node, queue, json.dumps(meta), _stamp(started)),
            )
            by = "ARRAY[%s, %s]" if is_pg else "json_array(%s, %s)"
            await run(
                f"UPDATE oban_jobs SET attempted_by = {by} WHERE id IN ("
                "SELECT id FROM oban_jobs WHERE state = 'executing' AND queue = %s "
                "ORDER BY id DESC LIMIT %s OFFSET %s)",
                (node, producer, queue, RUNNING_PER_PRODUCER, n * RUNNING_PER_PRODUCER),
            )
    completed = (await oban.list_jobs(state="completed", limit=1, after=_middle(target))).jobs
    discarded = (await oban.list_jobs(state="discarded", limit=1, after=_middle(target))).jobs
    assert completed and discarded and completed[0].id and discarded[0].id
    done = discarded[0].discarded_at or datetime.now(UTC)
    errors = [
        {
            "attempt": n,
            "at": (done - timedelta(minutes=2 ** min(n, 10))).isoformat(),
            "error": TRACEBACK.format(n=n),
        }
        for n in range(1, ERRORS + 1)
    ]
    setter = "(SELECT array_agg(e) FROM jsonb_array_elements(%s::jsonb) AS e)" if is_pg else "%s"
    await run(
        f"UPDATE oban_jobs SET errors = {setter}, attempt = %s, max_attempts = %s WHERE id = %s",
        (json.dumps(errors), ERRORS, ERRORS, discarded[0].id),
    )
    return completed[0].id, discarded[0].id


async def add_crons(oban: Oban) -> None:
    """:data:`CRONS`, declared for the instance, and their runs: a day of the minutely
    entry's, and a few of each other's."""
    entries = []
    for n, expression in enumerate(CRONS):

        async def process(self: Any, job: Job) -> None:
            return None

        klass = type(f"BenchCron{n}", (), {"process": process, "__module__": "bench_web"})
        declared: Any = worker(oban=oban.name, queue="default", cron=expression)(klass)
        [entry] = [e for e in decorators.cron_entries if e.worker is declared]
        entries.append(entry)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    runs = [cron_job(entries[0], minute - timedelta(minutes=m)) for m in range(CRON_RUNS)]
    runs += [cron_job(e, minute - timedelta(days=d)) for e in entries[1:] for d in range(1, 4)]
    await oban.enqueue_many(runs)


async def busy_hour(
    target: Target, run: Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]], count: int
) -> None:
    """Spread the finish times of the ``count`` newest completed jobs over the last hour
    (each ran 0.5 s after waiting 0.2 s)."""
    print(f"moving {count:,} completed jobs into the last hour ...", flush=True)
    if target.oban.pool is not None:
        at = "timezone('UTC', now()) - make_interval(secs => r.n * 3600.0 / %s)"
        ran, due = "interval '0.5 s'", "interval '0.7 s'"
        times = f"attempted_at = {at} - {ran}, scheduled_at = {at} - {due}"
    else:
        moment = (
            "strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (r.n * 3600.0 / %s + {}) || ' seconds')"
        )
        at = moment.format(0)
        times = f"attempted_at = {moment.format(0.5)}, scheduled_at = {moment.format(0.7)}"
    ranked = (
        "SELECT id, row_number() OVER (ORDER BY id DESC) AS n FROM oban_jobs "
        "WHERE state = 'completed' ORDER BY id DESC LIMIT %s"
    )
    await run(
        f"UPDATE oban_jobs SET completed_at = {at}, {times} "
        f"FROM ({ranked}) AS r WHERE oban_jobs.id = r.id",
        (count, count, count, count),
    )
    await run("ANALYZE oban_jobs", ())


def _middle(target: Target) -> str:
    return str((target.first_id + target.last_id) // 2)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def postgres_runner(oban: Oban) -> Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]]:
    """One statement (``%s`` placeholders, tables unqualified) in ``oban``'s schema."""
    pool = oban.pool
    assert pool is not None

    async def run(statement: str, params: tuple[Any, ...]) -> list[Any]:
        async with pool.connection() as conn:
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(oban.prefix)))
            try:
                cur = await conn.execute(statement.encode(), params)
                return await cur.fetchall() if cur.description else []
            finally:
                await conn.execute("RESET search_path")

    return run


def sqlite_runner(path: Path) -> Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]]:
    """One statement on its own stdlib connection to the file (WAL: the engine's connection
    stays open beside it)."""

    def execute(statement: str, params: tuple[Any, ...]) -> list[Any]:
        with closing(sqlite3.connect(path, timeout=10)) as conn, conn:
            return conn.execute(statement.replace("%s", "?"), params).fetchall()

    async def run(statement: str, params: tuple[Any, ...]) -> list[Any]:
        return await asyncio.to_thread(execute, statement, params)

    return run


def report(results: dict[str, Results]) -> None:
    labels = list(results)
    names = list(next(iter(results.values())))
    header = f"{'request':<44}" + "".join(
        f" {label + ' p50 / p95 ms (api)':>31}" for label in labels
    )
    print(header + "  returned")
    print("-" * (len(header) + 30))
    for name in names:
        cells, sizes = "", []
        for label in labels:
            ms, p95, api, returned = results[label][name]
            slow = "!" if max(ms, p95) > SLOW_MS else " "
            cells += f" {ms:>9.1f} / {p95:>7.1f}{slow} ({api:>7.1f})"
            if returned not in sizes:
                sizes.append(returned)
        print(f"{name:<44}{cells}  {' / '.join(sizes)}")
    print(
        f"! = median or p95 above {SLOW_MS:.0f} ms; (api) = median ms inside the Oban calls, "
        "the rest is routing and rendering"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=("both", "postgres", "sqlite"), default="both")
    parser.add_argument("--dsn", default=os.environ.get("OBAN_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="jobs in the table (at most 10,000,000)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per request (median)")
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument(
        "--recent",
        type=int,
        default=0,
        help="move the finish time of this many completed jobs into the last hour (charts)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the schema and the SQLite file (paths printed)"
    )
    args = parser.parse_args()
    rows = 100_000 if args.quick else args.rows
    if not 10_000 <= rows <= 10_000_000:
        parser.error("--rows must be from 10,000 to 10,000,000")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    engines = ("postgres", "sqlite") if args.engine == "both" else (args.engine,)
    results: dict[str, Results] = {}
    seeded: dict[str, float] = {}
    started = time.perf_counter()
    for engine in engines:
        print(f"seeding {rows:,} jobs on {engine} ...", flush=True)
        if engine == "postgres":
            async with postgres(args.dsn, rows, args.keep) as target:
                seeded[engine] = target.seed_seconds
                run = postgres_runner(target.oban)
                now = "timezone('UTC', now())"
                labels = ["postgres", "pg+vacuum"]
                results |= await bench(target, rows, args.repeat, run, now, labels, args.recent)
            continue
        directory = Path(tempfile.mkdtemp(prefix="oban-bench-web-"))
        try:
            async with sqlite(directory, rows) as target:
                seeded[engine] = target.seed_seconds
                run = sqlite_runner(directory / "query.db")
                now = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
                results |= await bench(target, rows, args.repeat, run, now, ["sqlite"], args.recent)
        finally:
            if args.keep:
                print(f"kept the SQLite file {directory / 'query.db'}")
            else:
                shutil.rmtree(directory, ignore_errors=True)
    print()
    print(
        f"{rows:,} jobs; dashboard mounted at {PREFIX}, driven by httpx over ASGITransport; "
        f"median of {args.repeat} runs after one warm-up; seeding took "
        + ", ".join(f"{e} {s:.1f} s" for e, s in seeded.items())
        + f"; {time.perf_counter() - started:.0f} s in all"
    )
    report(results)


if __name__ == "__main__":
    asyncio.run(main())
