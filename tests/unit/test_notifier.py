"""The notifier's reconnect pacing (no database)."""

from __future__ import annotations

import pytest

from oban._notifier import (
    FAST_RECONNECT_DELAY,
    FAST_RECONNECT_WINDOW,
    MAX_RECONNECT_DELAY,
    reconnect_delay,
)


@pytest.mark.parametrize("failures", [1, 2, 5, 50, 10_000])
def test_a_young_outage_is_retried_at_least_every_fast_delay(failures: int) -> None:
    # After a database restart the node must be back within about a second.
    for _ in range(200):
        delay = reconnect_delay(failures, down_for=FAST_RECONNECT_WINDOW - 1)
        assert 0 < delay <= FAST_RECONNECT_DELAY * 1.25


def test_a_long_outage_backs_off_up_to_the_maximum() -> None:
    delays = [reconnect_delay(10_000, down_for=FAST_RECONNECT_WINDOW) for _ in range(200)]
    assert min(delays) >= MAX_RECONNECT_DELAY * 0.75
    assert max(delays) <= MAX_RECONNECT_DELAY * 1.25
    assert reconnect_delay(1, down_for=3600) <= 0.5 * 1.25  # growing from a short first delay
