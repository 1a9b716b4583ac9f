"""The oban dashboard: an ASGI app that shows and steers jobs, queues and nodes, lists the
cron entries and charts the last hour's throughput and latency.

It needs the ``web`` extra (``pip install 'oban[web]'``: Starlette, Jinja2 and, for
``oban web``, uvicorn). Mount it in any ASGI application, under any prefix; it uses only the
public API of the :class:`~oban.Oban` instance it serves (see docs/web.md).

>>> from oban.web import create_app                         # doctest: +SKIP
>>> app.mount("/admin/oban", create_app("Oban", read_only=True))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

    from ..oban import Oban

__all__ = ["ACTIONS", "create_app"]

#: What ``can(user, action)`` is asked about: the job actions, then the queue actions.
ACTIONS = ("cancel", "retry", "delete", "pause", "resume", "scale", "stop")


def create_app(
    oban: Oban | str = "Oban",
    *,
    can: Callable[[Any, str], bool] | None = None,
    csp_nonce: Callable[[Request], str] | None = None,
    read_only: bool = False,
    refresh_default: int = 5,
    resolver: Callable[[Request], Any] | None = None,
    counts_max_age: float = 1.0,
) -> Starlette:
    """The dashboard as a Starlette (ASGI) application.

    Args:
        oban: the instance to show, or the name it was registered under (looked up at each
            request, so the app may be built before the instance).
        can: ``can(user, action) -> bool`` for each action in :data:`ACTIONS`; default: every
            action is allowed (unless ``read_only``). Buttons the user may not use are not
            rendered, and their routes answer 403.
        csp_nonce: ``csp_nonce(request) -> str``, the nonce of the host's
            ``Content-Security-Policy``; the dashboard's script tags carry it and the
            dashboard sends no policy of its own. Without it the dashboard sends a strict one.
        read_only: refuse every action (403) and render no action buttons, whatever ``can``
            says.
        refresh_default: seconds between live refreshes until the user picks another
            interval (1, 2, 5, 15 or 0 for off).
        resolver: ``resolver(request) -> user`` (may be async): ``None`` refuses the request
            (403). The user goes to ``can`` and into every ``oban.web.action`` telemetry event.
        counts_max_age: seconds for which the job counts (by state and queue) are shared by
            every request before they are counted again in the background, where a page does
            not wait for them (up to ten times that age); 0 counts on every request. An action
            through the dashboard forgets them.

    Raises:
        ImportError: the ``web`` extra is not installed.
        TypeError: ``counts_max_age`` is not a number.
        ValueError: ``refresh_default`` is not one of the offered intervals, or
            ``counts_max_age`` is outside 0 to 3,600.

    >>> dashboard = create_app("Oban", read_only=True)        # doctest: +SKIP
    >>> app.mount("/oban", dashboard)                          # doctest: +SKIP
    """
    from ._app import build_app

    return build_app(
        oban,
        can=can,
        csp_nonce=csp_nonce,
        read_only=read_only,
        refresh_default=refresh_default,
        resolver=resolver,
        counts_max_age=counts_max_age,
    )
