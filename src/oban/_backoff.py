"""Retry backoff calculations, in whole seconds."""

from __future__ import annotations

import random
from typing import Literal

JitterMode = Literal["inc", "dec", "both"]

_CLAMP_TO = 20
_BASE_SECONDS = 15


def exponential(attempt: int, *, mult: float = 1.0, max_pow: int = 100, min_pad: int = 0) -> int:
    """Seconds to wait after ``attempt``: ``min_pad + mult * 2**attempt``.

    >>> exponential(3)
    8
    """
    return int(min_pad + mult * 2 ** min(attempt, max_pow))


def jitter(seconds: int, *, mode: JitterMode = "inc", mult: float = 0.1) -> int:
    """Randomise ``seconds`` by up to ``mult`` of its value, up (inc), down (dec) or either.

    >>> 100 <= jitter(100) <= 110
    True
    """
    spread = seconds * mult * random.random()  # noqa: S311 - not security sensitive
    if mode == "inc":
        return int(seconds + spread)
    if mode == "dec":
        return int(seconds - spread)
    return int(seconds + spread if random.random() < 0.5 else seconds - spread)  # noqa: S311


def jittery_exponential(attempt: int, **opts: float) -> int:
    """Exponential backoff with incremental jitter."""
    return jitter(exponential(attempt, **opts))  # type: ignore[arg-type]


def jittery_clamped(attempt: int, max_attempts: int) -> int:
    """The default backoff: ``15 + 2**attempt`` seconds plus up to 10% jitter.

    Attempts are scaled down proportionally when ``max_attempts`` exceeds 20, so a job
    allowing 100 attempts spreads the same total window over more tries.

    >>> 17 <= jittery_clamped(1, 20) <= 18
    True
    """
    if max_attempts <= _CLAMP_TO:
        clamped = attempt
    else:
        clamped = max(1, round(attempt / max_attempts * _CLAMP_TO))
    return jitter(exponential(clamped, min_pad=_BASE_SECONDS))
