"""Fault points for crash tests: ``OBAN_TEST_FAULT=<point>`` in a node's environment makes
the process kill itself (SIGKILL, as ``kill -9`` would) the first time it reaches that point.

Points: ``after_ack`` (acks are committed, nothing done after them yet: no waiter woken, no
workflow release checked). Read once at import; a point that is not set costs one comparison.
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "hit"]

#: The points the code can stop at.
POINTS = frozenset({"after_ack"})

_POINT = os.environ.get("OBAN_TEST_FAULT", "")
if _POINT and _POINT not in POINTS:  # a typo would make a crash test pass for nothing
    raise ValueError(f"OBAN_TEST_FAULT must be one of {', '.join(sorted(POINTS))}, got {_POINT!r}")


def hit(point: str) -> None:
    """Die here if the environment asks for ``point``."""
    if point == _POINT:
        os.kill(os.getpid(), signal.SIGKILL)
