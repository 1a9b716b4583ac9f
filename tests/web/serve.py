"""An application that mounts the dashboard, served by uvicorn, for the browser tests.

``python -m tests.web.serve --dsn DSN --prefix SCHEMA --port PORT`` serves, as a host
application would:

* ``/admin/oban``: the dashboard with every action, under a strict Content-Security-Policy
  (``script-src 'self' 'nonce-...'``, no inline style) whose nonce it is given;
* ``/ro/oban``: the same dashboard, read-only.

Its ``Oban`` instance is a client named ``Oban``, like the test's node, so it sees that
node's queues. The two cron workers below are declared in this process only, for the cron
page (a client never schedules them).
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oban import Job, Oban, worker
from oban.web import create_app

NONCE_KEY = "test.csp_nonce"


@worker(name="app.workers.WeekdayDigest", queue="digests", cron="30 6 * * MON-FRI")
class WeekdayDigest:
    async def process(self, job: Job) -> None:
        return None


@worker(
    name="app.workers.TenMinuteSweep",
    queue="digests",
    priority=1,
    cron={"expr": "*/10 * * * *", "timezone": "Europe/Paris"},
)
class TenMinuteSweep:
    async def process(self, job: Job) -> None:
        return None


class StrictPolicy:
    """Sends a nonce-based policy with every response; the nonce goes in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        policy = (
            f"default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self'; "
            "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'"
        )

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", policy.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app({**scope, NONCE_KEY: nonce}, receive, send_with_policy)


def nonce(request: Request) -> str:
    return str(request.scope[NONCE_KEY])


def build(dsn: str, prefix: str) -> Starlette:
    oban = Oban(dsn=dsn, prefix=prefix, name="Oban", leadership=False)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await oban.stop()

    return Starlette(
        routes=[
            Mount("/admin/oban", app=create_app(oban, csp_nonce=nonce, refresh_default=1)),
            Mount("/ro/oban", app=create_app(oban, csp_nonce=nonce, read_only=True)),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--prefix", default="public")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--small-scans",
        action="store_true",
        help="search in windows of 5 ids, one per request, from 10 jobs on (web/_app.py)",
    )
    options = parser.parse_args()
    if options.small_scans:
        from oban.web import _app

        _app.SCAN_WINDOW, _app.SCAN_SECONDS, _app.SCAN_ABOVE = 5, 0.0, 10
    app = StrictPolicy(build(options.dsn, options.prefix))
    uvicorn.run(app, host="127.0.0.1", port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
