"""Who may do what: the user, the per-action check, CSRF tokens and HTTP basic auth.

CSRF uses a per-session token kept in a cookie (``SameSite=Strict``, ``HttpOnly``): every
page carries it in a ``<meta>`` tag and in its forms, and a POST must send it back in the
``csrf_token`` field or the ``X-CSRF-Token`` header. A POST whose ``Origin`` names another
site, or whose ``Sec-Fetch-Site`` says ``cross-site``, is refused before the token is read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "BasicAuth",
    "cross_site",
    "csrf_token",
    "is_loopback",
    "token_matches",
]

CSRF_COOKIE = "oban_web_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: Characters of a token: 32 random bytes, URL-safe base64.
_TOKEN_LENGTH = 43
#: Where ``BasicAuth`` leaves the name of the user it let in.
BASIC_USER_KEY = "oban_web.basic_user"


def csrf_token(request: Request) -> tuple[str, bool]:
    """The session's CSRF token, and whether it is new (and so must be set as a cookie)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if _well_formed(current):
        return current, False
    return secrets.token_urlsafe(32), True


def _well_formed(token: str) -> bool:
    return len(token) == _TOKEN_LENGTH and token.replace("-", "").replace("_", "").isalnum()


def token_matches(request: Request, sent: str | None) -> bool:
    """Whether ``sent`` (a form field or header) is the session's token."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not sent or not _well_formed(cookie):
        return False
    return hmac.compare_digest(cookie.encode(), sent.encode())


def cross_site(request: Request) -> str | None:
    """Why a state-changing request seems to come from another site, or ``None``."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return "the browser says the request comes from another site"
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return None if origin is None else "the request has an opaque origin"
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc.lower() != host.lower():
        return f"its Origin {origin!r} is not this site ({host})"
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is only reachable from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BasicAuth:
    """HTTP basic authentication in front of an ASGI app: one user name and password.

    ``exempt`` paths (under the app's root path) need no credentials. The name of the user
    let in is put in the scope, for the dashboard's resolver.
    """

    def __init__(
        self, app: ASGIApp, *, username: str, password: str, exempt: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.exempt = exempt
        self._expected = f"{username}:{password}".encode()
        self._username = username

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await _unauthorized(send)
            return
        await self.app({**scope, BASIC_USER_KEY: self._username}, receive, send)

    def _exempt(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        return path.removeprefix(root) in self.exempt

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, encoded = value.partition(b" ")
                if scheme.lower() != b"basic":
                    return False
                try:
                    given = base64.b64decode(encoded.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return False
                return hmac.compare_digest(given, self._expected)
        return False


async def _unauthorized(send: Send) -> None:
    body = b"authentication required\n"
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Basic realm="oban", charset="UTF-8"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def basic_user(request: Request) -> Any:
    """The resolver of ``oban web --basic-auth``: the name the user logged in with."""
    return request.scope.get(BASIC_USER_KEY)


Resolver = Callable[[Request], Any | Awaitable[Any]]
