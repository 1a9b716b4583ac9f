"""The dashboard's routes: pages, the fragments live refresh polls, and the actions.

Every route goes through :meth:`Dashboard._context` (who is asking, and may they see
anything) and every action through :meth:`Dashboard._action_context` (read-only mode, the
CSRF token, ``can``). Pages answer whole documents; a request htmx makes (``HX-Request``)
gets only the fragment it swaps in.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .. import JobCounts, JobPage, telemetry
from .._query import MAX_PAGE, parse_id
from ..errors import InstanceNotFoundError
from ..job import Job
from ..oban import Oban
from . import ACTIONS
from ._filters import STATES, FilterError, Filters
from ._render import HERE, STATIC_FILES, environment, static_version
from ._security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, cross_site, csrf_token, token_matches
from ._views import charts, job_view, queue_rows, sidebar

__all__ = ["ACTION_EVENT", "BULK_LIMIT", "Dashboard", "build_app"]

logger = logging.getLogger("oban.web")

#: The telemetry event every action emits (an audit trail).
ACTION_EVENT = "oban.web.action"
#: At most this many jobs in one bulk action.
BULK_LIMIT = 1_000
#: Jobs in one page of the list.
PAGE_SIZE = 50
#: A filter no index serves (search, tags, worker; args and meta on SQLite) is looked for in
#: windows of this many job ids (``list_jobs(scan=)``), newest first, ...
SCAN_WINDOW = 10_000
#: ... for at most this long per page or fragment (then the page ends where the search did,
#: and "load more" searches on) ...
SCAN_SECONDS = 0.1
#: ... but an action on every matching job searches to the oldest job (``None``: no time
#: limit), so that each click acts on the newest matches that are left.
ACTION_SCAN_SECONDS: float | None = None
#: Unless the filtered states and queues hold at most this many jobs (their index finds them).
SCAN_ABOVE = 50_000
#: Counts older than ``counts_max_age`` are still shown, while a fresh count runs in the
#: background, up to this many times that age; older ones are waited for.
STALE_COUNTS_FACTOR = 10
#: The charts: the last hour, per minute.
CHART_WINDOW = 3_600
CHART_BUCKET = 60
#: The longest queue name (oban_jobs' check constraint).
MAX_QUEUE = 127
#: Refresh intervals offered, in seconds (0: off).
REFRESH_CHOICES = (1, 2, 5, 15, 0)
#: Largest form body read (bytes): 1,000 ids and a token fit well within it.
MAX_FORM_BYTES = 64 * 1024
JOB_ACTIONS = ("cancel", "retry", "delete")
#: The states each job action changes (docs/managing.md): an action on every job matching a
#: filter takes only jobs in these, so that the next click reaches the next ones.
ACTION_STATES = {
    "cancel": ("available", "scheduled", "retryable", "suspended", "executing"),
    "retry": ("scheduled", "retryable", "completed", "discarded", "cancelled", "suspended"),
    "delete": (
        "available",
        "scheduled",
        "retryable",
        "completed",
        "discarded",
        "cancelled",
        "suspended",
    ),
}
#: An action's past tense, for its message.
DONE = {"cancel": "Cancelled", "retry": "Retried", "delete": "Deleted"}
QUEUE_ACTIONS = ("pause", "resume", "scale", "stop")
#: Our own policy, sent unless the host gives a nonce (and so sends its own).
DEFAULT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)
#: htmx settings (read from a meta tag): nothing evaluated or injected inline, no history,
#: requests time out, and an error response shows in the flash area instead of the target.
HTMX_CONFIG = {
    "allowEval": False,
    "allowScriptTags": False,
    "historyEnabled": False,
    "includeIndicatorStyles": False,
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {
            "code": "[45]..",
            "swap": True,
            "error": True,
            "target": "#flash",
            "swapOverride": "innerHTML",
        },
    ],
    "selfRequestsOnly": True,
    "timeout": 20_000,
}


class Refused(Exception):
    """A request the dashboard answers with an error page (or fragment) instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Context:
    """One request, with who makes it and what they may do."""

    request: Request
    oban: Oban
    user: Any
    allowed: frozenset[str]
    token: str
    new_token: bool
    nonce: str | None
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"

    def value(self, name: str) -> str:
        """The form field ``name`` (its last value, stripped), or an empty string."""
        values = self.form.get(name)
        return values[-1].strip() if values else ""


Handler = Callable[[Context], Awaitable[Response]]


def build_app(
    oban: Oban | str,
    *,
    can: Callable[[Any, str], bool] | None,
    csp_nonce: Callable[[Request], str] | None,
    read_only: bool,
    refresh_default: int,
    resolver: Callable[[Request], Any] | None,
    counts_max_age: float = 1.0,
) -> Starlette:
    """The Starlette app of :func:`oban.web.create_app`."""
    dashboard = Dashboard(
        oban,
        can=can,
        csp_nonce=csp_nonce,
        read_only=read_only,
        refresh_default=refresh_default,
        resolver=resolver,
        counts_max_age=counts_max_age,
    )
    app = Starlette(routes=dashboard.routes())
    dashboard.app = app
    app.state.dashboard = dashboard
    return app


class SharedCounts:
    """The count of jobs by state and queue that every request of one dashboard shows.

    On a big table a count takes tens of milliseconds (SQLite counts exactly; PostgreSQL
    reads the heap until autovacuum has run), and every page and live refresh needs one. So,
    as Oban Web's counts come from Oban Met's periodic reporter, a count is shared: one up to
    ``max_age`` seconds old is shown as it is; an older one (up to
    :data:`STALE_COUNTS_FACTOR` times that) is shown while a fresh one runs in the
    background; anything older, or the first count, is waited for. An action through the
    dashboard forgets the count. ``max_age`` 0 counts on every request.
    """

    def __init__(self, max_age: float) -> None:
        if isinstance(max_age, bool) or not isinstance(max_age, int | float):
            raise TypeError(f"counts_max_age must be a number of seconds, got {max_age!r}")
        if not 0 <= max_age <= 3_600:
            raise ValueError(f"counts_max_age must be from 0 to 3600 seconds, got {max_age!r}")
        self.max_age = float(max_age)
        self._counts: JobCounts | None = None
        self._of: Oban | None = None
        self._at = 0.0
        self._running: asyncio.Task[JobCounts] | None = None
        self._running_for: Oban | None = None
        self._tasks: set[asyncio.Task[JobCounts]] = set()  # asyncio keeps tasks weakly
        self._epoch = 0  # forget() moves it on: a count begun before is not kept

    async def get(self, oban: Oban, *, fresh: bool = False) -> JobCounts:
        """The counts of ``oban``'s jobs (``fresh``: counted now, by this request alone).
        Requests that must wait for a count wait for the same one."""
        if self.max_age == 0 or fresh:
            return await oban.count_jobs(by=("state", "queue"))
        age = time.monotonic() - self._at
        if self._counts is None or self._of is not oban or age > self.max_age * STALE_COUNTS_FACTOR:
            running = self._running
            if running is None or self._running_for is not oban:
                running = self._start(oban)
            return await asyncio.shield(running)
        if age > self.max_age and self._running is None:
            self._start(oban)
        return self._counts

    def _start(self, oban: Oban) -> asyncio.Task[JobCounts]:
        task = asyncio.create_task(self._count(oban))
        self._running, self._running_for = task, oban
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def _count(self, oban: Oban) -> JobCounts:
        started, epoch = time.monotonic(), self._epoch
        counts = await oban.count_jobs(by=("state", "queue"))
        if epoch == self._epoch and (self._of is not oban or started >= self._at):
            self._counts, self._of, self._at = counts, oban, started
        return counts

    def _finished(self, task: asyncio.Task[JobCounts]) -> None:
        self._tasks.discard(task)
        if self._running is task:
            self._running = None
        if not task.cancelled() and task.exception() is not None:
            logger.warning("dashboard: a count of the jobs failed: %r", task.exception())

    def forget(self) -> None:
        """Drop the count: an action changed what it counted (a count under way is not
        waited for or kept either)."""
        self._counts, self._running = None, None
        self._epoch += 1


class Dashboard:
    """The dashboard's state and handlers (one per :func:`create_app`)."""

    def __init__(
        self,
        oban: Oban | str,
        *,
        can: Callable[[Any, str], bool] | None,
        csp_nonce: Callable[[Request], str] | None,
        read_only: bool,
        refresh_default: int,
        resolver: Callable[[Request], Any] | None,
        counts_max_age: float = 1.0,
    ) -> None:
        if refresh_default not in REFRESH_CHOICES:
            raise ValueError(
                f"refresh_default must be one of {REFRESH_CHOICES} seconds (0: off), "
                f"got {refresh_default!r}"
            )
        if not isinstance(oban, Oban | str):
            raise TypeError(f"oban must be an Oban instance or its name, got {oban!r}")
        self.oban = oban
        self.can = can
        self.csp_nonce = csp_nonce
        self.read_only = read_only
        self.refresh_default = refresh_default
        self.resolver = resolver
        self.counts = SharedCounts(counts_max_age)
        self.env = environment()
        self.version = static_version()
        self.files = {name: (HERE / "static" / name).read_bytes() for name in STATIC_FILES}
        self.app: Starlette | None = None

    def routes(self) -> list[Route]:
        view = self._view
        return [
            Route("/", view(self.index), name="index"),
            Route("/jobs", view(self.jobs_page), name="jobs"),
            Route("/jobs/live", view(self.jobs_live), name="jobs_live"),
            Route("/jobs/more", view(self.jobs_more), name="jobs_more"),
            Route("/jobs/matching", view(self.jobs_matching), name="jobs_matching"),
            Route("/jobs/{id:int}", view(self.job_page), name="job"),
            Route("/jobs/{id:int}/live", view(self.job_live), name="job_live"),
            Route(
                "/jobs/{action}",
                self._act(self.job_action, JOB_ACTIONS),
                methods=["POST"],
                name="job_action",
            ),
            Route(
                "/jobs/{action}/matching",
                self._act(self.job_action_matching, JOB_ACTIONS),
                methods=["POST"],
                name="job_action_matching",
            ),
            Route("/queues", view(self.queues_page), name="queues"),
            Route("/queues/live", view(self.queues_live), name="queues_live"),
            Route(
                "/queues/{action}",
                self._act(self.queue_action, QUEUE_ACTIONS),
                methods=["POST"],
                name="queue_action",
            ),
            Route("/nodes", view(self.nodes_page), name="nodes"),
            Route("/nodes/live", view(self.nodes_live), name="nodes_live"),
            Route("/charts", view(self.charts_page), name="charts"),
            Route("/charts/live", view(self.charts_live), name="charts_live"),
            Route("/cron", view(self.cron_page), name="cron"),
            Route("/cron/live", view(self.cron_live), name="cron_live"),
            Route("/health", self.health, name="health"),
            Route("/static/{path:path}", self.static, name="static"),
        ]

    # Who is asking

    def _view(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                context = await self._context(request)
                return await handler(context)
            except Refused as refused:
                return self._refusal(request, refused)

        return endpoint

    def _act(
        self, handler: Handler, actions: tuple[str, ...]
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                context = await self._action_context(request, actions)
                return await handler(context)
            except Refused as refused:
                return self._refusal(request, refused)

        return endpoint

    async def _context(self, request: Request) -> Context:
        user: Any = None
        if self.resolver is not None:
            user = self.resolver(request)
            if inspect.isawaitable(user):
                user = await user
            if user is None:
                raise Refused(403, "You may not see this dashboard.")
        token, new = csrf_token(request)
        return Context(
            request=request,
            oban=self._instance(),
            user=user,
            allowed=self._allowed(user),
            token=token,
            new_token=new,
            nonce=self.csp_nonce(request) if self.csp_nonce is not None else None,
        )

    async def _action_context(self, request: Request, actions: tuple[str, ...]) -> Context:
        action = request.path_params.get("action", "")
        if self.read_only:
            raise Refused(403, "The dashboard is read-only: no action may be taken.")
        context = await self._context(request)
        if action not in actions:
            raise Refused(404, f"No such action: {action!r}.")
        problem = cross_site(request)
        if problem is not None:
            raise Refused(403, f"Refused a cross-site request: {problem}.")
        context.form = await _read_form(request)
        sent = request.headers.get(CSRF_HEADER) or context.value(CSRF_FIELD)
        if not token_matches(request, sent):
            raise Refused(403, "The CSRF token is missing or stale: reload the page and try again.")
        if action not in context.allowed:
            raise Refused(403, f"You may not {action} here.")
        return context

    def _allowed(self, user: Any) -> frozenset[str]:
        if self.read_only:
            return frozenset()
        if self.can is None:
            return frozenset(ACTIONS)
        return frozenset(action for action in ACTIONS if self.can(user, action))

    def _instance(self) -> Oban:
        if isinstance(self.oban, Oban):
            return self.oban
        try:
            return Oban.get_instance(self.oban)
        except InstanceNotFoundError:
            raise Refused(
                503, f"No Oban instance named {self.oban!r} runs in this process yet."
            ) from None

    # Rendering

    def _url(self, request: Request, name: str, query: str = "", **params: Any) -> str:
        assert self.app is not None
        path = request.scope.get("root_path", "") + str(self.app.url_path_for(name, **params))
        return f"{path}?{query}" if query else path

    def _render(
        self, context: Context, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        request = context.request
        html = self.env.get_template(template).render(
            url=functools.partial(self._url, request),
            static=lambda path: self._url(request, "static", f"v={self.version}", path=path),
            token=context.token,
            csrf_field=CSRF_FIELD,
            nonce=context.nonce,
            allowed=context.allowed,
            bulk=any(action in context.allowed for action in JOB_ACTIONS),
            bulk_limit=BULK_LIMIT,
            queue_control=any(action in context.allowed for action in QUEUE_ACTIONS),
            query=_query,
            read_only=self.read_only,
            refresh_choices=REFRESH_CHOICES,
            refresh_default=self.refresh_default,
            htmx_config=json.dumps(HTMX_CONFIG, separators=(",", ":")),
            user=context.user,
            now=datetime.now(UTC),
            **values,
        )
        response = HTMLResponse(html, status_code=status)
        self._secure(response)
        if context.new_token:
            response.set_cookie(
                CSRF_COOKIE,
                context.token,
                path=request.scope.get("root_path", "") or "/",
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="strict",
            )
        return response

    def _secure(self, response: Response) -> None:
        response.headers["cache-control"] = "no-store"
        response.headers["x-content-type-options"] = "nosniff"
        response.headers["referrer-policy"] = "same-origin"
        if self.csp_nonce is None:
            response.headers["content-security-policy"] = DEFAULT_CSP

    def _refusal(self, request: Request, refused: Refused) -> Response:
        if request.headers.get("hx-request") == "true":
            html = self.env.get_template("_flash.html").render(
                message=refused.message, kind="error"
            )
        else:
            nonce = self.csp_nonce(request) if self.csp_nonce is not None else None
            html = self.env.get_template("error.html").render(
                status=refused.status,
                message=refused.message,
                home=self._url(request, "jobs"),
                static=lambda path: self._url(request, "static", f"v={self.version}", path=path),
                nonce=nonce,
            )
        response = HTMLResponse(html, status_code=refused.status)
        self._secure(response)
        return response

    # Jobs

    async def index(self, context: Context) -> Response:
        return RedirectResponse(self._url(context.request, "jobs"), status_code=303)

    async def jobs_page(self, context: Context) -> Response:
        filters = Filters.from_query(context.request.query_params.multi_items())
        listing = await self._listing(context, filters, limit=PAGE_SIZE)
        return self._render(
            context, "jobs.html", status=400 if listing["error"] else 200, page="jobs", **listing
        )

    async def jobs_live(self, context: Context) -> Response:
        filters = Filters.from_query(context.request.query_params.multi_items())
        limit = _int(context.request.query_params.get("limit"), PAGE_SIZE, 1, MAX_PAGE)
        listing = await self._listing(context, filters, limit=limit)
        return self._render(context, "_jobs_live.html", **listing)

    async def jobs_more(self, context: Context) -> Response:
        filters = Filters.from_query(context.request.query_params.multi_items())
        after = context.request.query_params.get("after")
        listing = await self._listing(context, filters, limit=PAGE_SIZE, after=after)
        if listing["error"]:
            raise Refused(400, listing["error"])
        return self._render(context, "_rows.html", after=after, **listing)

    async def _listing(
        self, context: Context, filters: Filters, *, limit: int, after: str | None = None
    ) -> dict[str, Any]:
        error = None
        scanning = False
        counts = await self.counts.get(context.oban)
        try:
            kwargs = filters.list_kwargs()
            if _nothing_in(counts, kwargs.get("state"), kwargs.get("queue")):
                # A state or queue without jobs (absent pairs are exact): listing it would
                # walk the whole table to find nothing.
                page = JobPage(jobs=[], next=None)
            elif scanning := _scans(context.oban, counts, kwargs):
                page = await _scan(context.oban, kwargs, limit, after, SCAN_SECONDS)
            else:
                page = await context.oban.list_jobs(**kwargs, limit=limit, after=after)
        except (FilterError, TypeError, ValueError) as problem:
            page, error = JobPage(jobs=[], next=None), str(problem)
        request = context.request
        query = filters.query()
        return {
            "filters": filters,
            "jobs": page.jobs,
            "next": page.next,
            "error": error,
            # A bounded search that stopped before the page filled: where it got to.
            "searched_to": page.next if scanning and len(page.jobs) < limit else None,
            "scanning": scanning,
            "sidebar": sidebar(counts, filters),
            "live_url": self._url(request, "jobs_live", query),
            "more_href": self._url(
                request, "jobs_more", urlencode([*parse_qsl(query), ("after", page.next)])
            )
            if page.next
            else None,
            "here": self._url(request, "jobs", query),
        }

    async def job_page(self, context: Context) -> Response:
        job = await self._job(context)
        return self._render(context, "job.html", page="jobs", job=job, **job_view(job))

    async def job_live(self, context: Context) -> Response:
        job = await self._job(context)
        return self._render(context, "_job_body.html", job=job, **job_view(job))

    async def _job(self, context: Context) -> Job:
        job_id: int = context.request.path_params["id"]
        try:
            job = await context.oban.get_job(job_id)
        except ValueError:
            job = None
        if job is None:
            raise Refused(404, f"There is no job {job_id}: it may have been deleted or pruned.")
        return job

    async def job_action(self, context: Context) -> Response:
        action = context.request.path_params["action"]
        ids = _ids(context.form.get("id", []))
        if not ids:
            raise Refused(400, "Select at least one job.")
        if len(ids) > BULK_LIMIT:
            raise Refused(
                400, f"At most {BULK_LIMIT:,} jobs per action; {len(ids):,} were selected."
            )
        changed = await _act_on(context.oban, action, ids)
        self.counts.forget()
        self._audit(context, action, ids=ids, count=changed)
        return self._done(context, f"{DONE[action]} {changed:,} of {len(ids):,} selected jobs.")

    async def jobs_matching(self, context: Context) -> Response:
        """How many jobs match the filters (up to :data:`BULK_LIMIT`), with the buttons that
        act on all of them; nothing without a filter or without a job action allowed."""
        filters = Filters.from_query(context.request.query_params.multi_items())
        bar: dict[str, Any] = {"count": 0, "more": False, "actions": []}
        bulk = any(action in context.allowed for action in JOB_ACTIONS)
        if bulk and (filters.active or filters.state):
            try:
                kwargs = filters.list_kwargs()
            except FilterError:
                kwargs = None
            if kwargs is not None:
                counts = await self.counts.get(context.oban)
                page, searched = await _matching_page(context.oban, counts, kwargs, SCAN_SECONDS)
                bar["count"], bar["more"] = len(page.jobs), page.next is not None
                bar["searched_to"] = page.next if searched else None
            states = set(filters.states or STATES)
            bar["actions"] = [
                action
                for action in JOB_ACTIONS
                if action in context.allowed and states.intersection(ACTION_STATES[action])
            ]
        here = self._url(context.request, "jobs", filters.query())
        return self._render(context, "_matching.html", filters=filters, here=here, **bar)

    async def job_action_matching(self, context: Context) -> Response:
        """The action on the newest :data:`BULK_LIMIT` jobs that match the filters in the
        form and are in a state it changes (listed with ``list_jobs``, then acted on by id,
        as the selection is)."""
        action = context.request.path_params["action"]
        pairs = [(key, value) for key, values in context.form.items() for value in values]
        filters = Filters.from_query(pairs)
        if not (filters.active or filters.state):
            raise Refused(400, "Filter the jobs first: an action on all jobs needs a filter.")
        try:
            kwargs = filters.list_kwargs()
        except FilterError as problem:
            raise Refused(400, f"Cannot filter: {problem}") from None
        wanted = kwargs.get("state") or STATES
        kwargs["state"] = [state for state in wanted if state in ACTION_STATES[action]]
        counts = await self.counts.get(context.oban)
        if _nothing_in(counts, kwargs.get("state"), kwargs.get("queue")):
            # Shared counts may be a moment old: "nothing there" is confirmed by a count now.
            counts = await self.counts.get(context.oban, fresh=True)
        page, _searched = await _matching_page(context.oban, counts, kwargs, ACTION_SCAN_SECONDS)
        ids = [job.id for job in page.jobs if job.id is not None]
        changed = await _act_on(context.oban, action, ids) if ids else 0
        self.counts.forget()
        self._audit(context, action, ids=ids, count=changed, filters=filters.query())
        if page.next:
            rest = f" More match: {action} again for the next {BULK_LIMIT:,}."
        else:
            rest = ""
        return self._done(
            context, f"{DONE[action]} {changed:,} of {len(ids):,} matching jobs.{rest}"
        )

    # Queues and nodes

    async def queues_page(self, context: Context) -> Response:
        return self._render(context, "queues.html", page="queues", **await self._queues(context))

    async def queues_live(self, context: Context) -> Response:
        return self._render(context, "_queues_body.html", **await self._queues(context))

    async def _queues(self, context: Context) -> dict[str, Any]:
        infos = await context.oban.queues()
        counts = await self.counts.get(context.oban)
        return {"queues": queue_rows(infos, counts)}

    async def queue_action(self, context: Context) -> Response:
        action = context.request.path_params["action"]
        queue = context.value("queue")
        node = context.value("node") or None
        if not queue:
            raise Refused(400, "Name a queue.")
        oban = context.oban
        limit: int | None = None
        try:
            if action == "pause":
                await oban.pause_queue(queue, node=node)
            elif action == "resume":
                await oban.resume_queue(queue, node=node)
            elif action == "stop":
                await oban.stop_queue(queue, node=node)
            else:
                limit = _int(context.value("limit"), 0, 0, 10**9)
                await oban.scale_queue(queue=queue, limit=limit, node=node)
        except (TypeError, ValueError) as problem:
            raise Refused(400, f"Cannot {action} {queue}: {problem}") from None
        self._audit(context, action, queue=queue, node=node, limit=limit)
        where = f"on {node}" if node else "on every node"
        scaled = f" to {limit}" if limit is not None else ""
        past = {"pause": "Paused", "resume": "Resumed", "scale": "Scaled", "stop": "Stopped"}
        return self._done(context, f"{past[action]} {queue}{scaled} {where}.")

    async def nodes_page(self, context: Context) -> Response:
        nodes = await context.oban.nodes()
        return self._render(context, "nodes.html", page="nodes", nodes=nodes)

    async def nodes_live(self, context: Context) -> Response:
        nodes = await context.oban.nodes()
        return self._render(context, "_nodes_body.html", nodes=nodes)

    # Charts

    async def charts_page(self, context: Context) -> Response:
        return self._render(context, "charts.html", page="charts", **await self._charts(context))

    async def charts_live(self, context: Context) -> Response:
        return self._render(context, "_charts_body.html", **await self._charts(context))

    async def _charts(self, context: Context) -> dict[str, Any]:
        queue = context.request.query_params.get("queue", "").strip()[:MAX_QUEUE] or None
        stats = await context.oban.job_stats(window=CHART_WINDOW, bucket=CHART_BUCKET)
        queues = stats.queues()
        if queue is not None and queue not in queues:
            queues = sorted([*queues, queue])
        live = self._url(context.request, "charts_live", _query(queue=queue))
        return {**charts(stats, queue), "queue": queue, "queues": queues, "live_url": live}

    # Cron

    async def cron_page(self, context: Context) -> Response:
        crons = await context.oban.crons()
        return self._render(context, "cron.html", page="cron", crons=crons)

    async def cron_live(self, context: Context) -> Response:
        crons = await context.oban.crons()
        return self._render(context, "_cron_body.html", crons=crons)

    # Actions

    def _audit(self, context: Context, action: str, **details: Any) -> None:
        meta = {
            "action": action,
            "filters": None,
            "ids": None,
            "queue": None,
            "node": None,
            "limit": None,
        }
        meta.update(details, user=context.user)
        telemetry.execute(ACTION_EVENT, meta)
        logger.info(
            "dashboard action %s by %r: %s",
            action,
            context.user,
            {k: v for k, v in details.items() if v is not None and k != "ids"}
            | ({"ids": len(details["ids"])} if details.get("ids") else {}),
        )

    def _done(self, context: Context, message: str) -> Response:
        request = context.request
        redirect = _local_path(context.value("redirect"), request)
        if context.htmx:
            response = self._render(context, "_flash.html", message=message, kind="ok")
            if redirect is not None:
                response.headers["hx-redirect"] = redirect
            else:
                response.headers["hx-trigger"] = "oban:refresh"
            return response
        back = redirect or _local_path(context.value("next"), request) or self._url(request, "jobs")
        return RedirectResponse(back, status_code=303)

    # Health and static files

    async def health(self, request: Request) -> Response:
        """``{"status": "ok"}``; with ``?db=1`` the database is asked too (503 if it fails)."""
        if request.query_params.get("db") not in ("1", "true"):
            return JSONResponse({"status": "ok"})
        try:
            await self._instance().nodes()
        except Refused as refused:
            return JSONResponse({"status": "error", "error": refused.message}, status_code=503)
        except Exception as error:
            logger.warning("health check: the database cannot be read: %s", error)
            return JSONResponse({"status": "error", "error": type(error).__name__}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def static(self, request: Request) -> Response:
        path: str = request.path_params["path"]
        body = self.files.get(path)
        if body is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        cache = (
            "public, max-age=31536000, immutable"
            if request.query_params.get("v") == self.version
            else "no-cache"
        )
        return Response(
            body,
            media_type=STATIC_FILES[path],
            headers={"cache-control": cache, "x-content-type-options": "nosniff"},
        )


# Helpers


async def _act_on(oban: Oban, action: str, ids: list[int]) -> int:
    """``action`` (a job action) on the jobs ``ids``; how many changed."""
    run = {
        "cancel": oban.cancel_many_jobs,
        "retry": oban.retry_many_jobs,
        "delete": oban.delete_many_jobs,
    }[action]
    return await run(ids)


async def _matching_page(
    oban: Oban, counts: JobCounts, kwargs: dict[str, Any], seconds: float | None
) -> tuple[JobPage, bool]:
    """The newest :data:`BULK_LIMIT` jobs that match ``list_jobs`` filters, and whether the
    search for them stopped (after ``seconds``) before reaching the oldest job. The counts by
    state and queue spare a walk of the whole table when the filtered ones hold no job."""
    state, queue = kwargs.get("state"), kwargs.get("queue")
    if state == []:
        return JobPage(jobs=[], next=None), False
    try:
        if _nothing_in(counts, state, queue):
            return JobPage(jobs=[], next=None), False
        if _scans(oban, counts, kwargs):
            page = await _scan(oban, kwargs, BULK_LIMIT, None, seconds)
            return page, page.next is not None and len(page.jobs) < BULK_LIMIT
        return await oban.list_jobs(**kwargs, limit=BULK_LIMIT), False
    except (TypeError, ValueError) as problem:
        raise Refused(400, f"Cannot filter: {problem}") from None


def _scans(oban: Oban, counts: JobCounts, kwargs: dict[str, Any]) -> bool:
    """Whether ``list_jobs`` filters need a bounded search: a filter no index serves, over
    states and queues holding more than :data:`SCAN_ABOVE` jobs (``counts`` by state and
    queue)."""
    if not _unindexed(oban, kwargs):
        return False
    return sum(_in_scope(counts, kwargs.get("state"), kwargs.get("queue"))) > SCAN_ABOVE


def _unindexed(oban: Oban, kwargs: dict[str, Any]) -> bool:
    """Whether ``list_jobs`` filters include one that no index serves."""
    unindexed: tuple[str, ...] = ("search", "tags", "worker")
    if oban.sqlite_path is not None:
        unindexed += ("args", "meta")  # PostgreSQL has GIN indexes on both
    return any(kwargs.get(name) is not None for name in unindexed)


async def _scan(
    oban: Oban, kwargs: dict[str, Any], limit: int, after: str | None, seconds: float | None
) -> JobPage:
    """Up to ``limit`` matching jobs found by searching windows of :data:`SCAN_WINDOW` ids
    newest first from ``after``, for about ``seconds`` (``None``: to the oldest job): the
    page ends where the search did."""
    deadline = math.inf if seconds is None else time.monotonic() + seconds
    jobs: list[Job] = []
    while True:
        page = await oban.list_jobs(
            **kwargs, limit=limit - len(jobs), after=after, scan=SCAN_WINDOW
        )
        jobs += page.jobs
        after = page.next
        if after is None or len(jobs) >= limit or time.monotonic() >= deadline:
            return JobPage(jobs, after)


async def _read_form(request: Request) -> dict[str, list[str]]:
    """A form POST's fields (``application/x-www-form-urlencoded``, as browsers and htmx send
    it), read without a multipart parser."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, "The form is too large.")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and kind != "application/x-www-form-urlencoded":
        raise Refused(415, "Send the form as application/x-www-form-urlencoded.")
    fields: dict[str, list[str]] = {}
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise Refused(400, "The form is not UTF-8.") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=BULK_LIMIT + 16)
    except ValueError:
        raise Refused(400, f"At most {BULK_LIMIT:,} jobs per action.") from None
    for key, value in pairs:
        fields.setdefault(key, []).append(value)
    return fields


def _ids(values: Iterable[str]) -> list[int]:
    ids: list[int] = []
    for value in values:
        try:
            ids.append(parse_id(value))
        except ValueError:
            raise Refused(400, f"Not a job id: {value!r}.") from None
    return sorted(set(ids))


def _nothing_in(counts: JobCounts, state: Any, queue: Any) -> bool:
    """Whether ``counts`` (by state and queue) show no job at all in the given states and
    queues (each a name, a list of names or ``None`` for any)."""
    if state is None and queue is None:
        return False
    return not _in_scope(counts, state, queue)


def _in_scope(counts: JobCounts, state: Any, queue: Any) -> list[int]:
    """The counts of the (state, queue) pairs in the given states and queues."""
    states = None if state is None else {state} if isinstance(state, str) else set(state)
    queues = None if queue is None else {queue} if isinstance(queue, str) else set(queue)
    return [
        count
        for key, count in counts.items()
        if (states is None or key[0] in states) and (queues is None or key[1] in queues)
    ]


def _query(**values: Any) -> str:
    return urlencode({key: value for key, value in values.items() if value not in (None, "")})


def _int(value: str | None, default: int, low: int, high: int) -> int:
    text = "" if value is None else value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        return default
    return max(low, min(high, int(text)))


def _local_path(value: str, request: Request) -> str | None:
    """``value`` if it is a path within the dashboard (safe to redirect to), else ``None``."""
    root = request.scope.get("root_path", "")
    if not value.startswith(f"{root}/") or value.startswith("//") or "\\" in value:
        return None
    return value
