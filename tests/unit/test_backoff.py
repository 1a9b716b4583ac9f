"""Unit tests for the retry backoff calculations."""

from __future__ import annotations

from typing import Any, cast

import pytest

from oban._backoff import exponential, jitter, jittery_clamped, jittery_exponential

SAMPLES = 300


def _bounds(attempt: int) -> tuple[int, int]:
    """Range of the default backoff for an unclamped attempt: 15 + 2**attempt, +0..10%."""
    base = 15 + 2**attempt
    return base, int(base * 1.1)


def test_first_attempt_backs_off_17_or_18_seconds() -> None:
    values = {jittery_clamped(1, 20) for _ in range(SAMPLES)}

    assert values <= {17, 18}
    assert 17 in values


@pytest.mark.parametrize("attempt", [1, 2, 5, 10, 15, 19, 20])
def test_backoff_is_15_plus_2_pow_attempt_with_up_to_10_percent_jitter(attempt: int) -> None:
    low, high = _bounds(attempt)

    for _ in range(SAMPLES):
        value = jittery_clamped(attempt, 20)
        assert isinstance(value, int)
        assert low <= value <= high


def test_backoff_grows_exponentially_with_attempts() -> None:
    previous_max = 0
    for attempt in range(1, 21):
        samples = [jittery_clamped(attempt, 20) for _ in range(50)]
        assert min(samples) > previous_max
        previous_max = max(samples)

    # Attempt 20 of 20 is about 12 days.
    assert 12 * 86_400 <= jittery_clamped(20, 20) <= int(1.1 * (15 + 2**20))
    # Doubling: attempt 11 is roughly twice attempt 10.
    assert exponential(11, min_pad=15) - 15 == 2 * (exponential(10, min_pad=15) - 15)


def test_small_max_attempts_is_not_clamped() -> None:
    low, high = _bounds(3)

    for _ in range(SAMPLES):
        assert low <= jittery_clamped(3, 3) <= high


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "equivalent"),
    [
        (100, 100, 20),
        (50, 100, 10),
        (25, 100, 5),
        (40, 40, 20),
        (20, 40, 10),
        (1, 100, 1),
        (2, 100, 1),
    ],
)
def test_backoff_is_clamped_proportionally_above_20_attempts(
    attempt: int, max_attempts: int, equivalent: int
) -> None:
    low, high = _bounds(equivalent)

    for _ in range(SAMPLES):
        assert low <= jittery_clamped(attempt, max_attempts) <= high


def test_last_of_100_attempts_equals_last_of_20_attempts() -> None:
    low, high = _bounds(20)
    clamped = [jittery_clamped(100, 100) for _ in range(SAMPLES)]
    unclamped = [jittery_clamped(20, 20) for _ in range(SAMPLES)]

    assert all(low <= value <= high for value in clamped)
    assert all(low <= value <= high for value in unclamped)


def test_exponential() -> None:
    assert exponential(0) == 1
    assert exponential(3) == 8
    assert exponential(3, mult=2) == 16
    assert exponential(3, min_pad=15) == 23
    assert exponential(10, max_pow=4) == 16


@pytest.mark.parametrize(
    ("mode", "low", "high"),
    [("inc", 1000, 1100), ("dec", 900, 1000), ("both", 900, 1100)],
)
def test_jitter_modes_stay_within_10_percent(mode: str, low: int, high: int) -> None:
    values = [jitter(1000, mode=cast(Any, mode)) for _ in range(SAMPLES)]

    assert all(isinstance(value, int) for value in values)
    assert all(low <= value <= high for value in values)
    # The jitter actually varies the value.
    assert len(set(values)) > 1


def test_jitter_inc_never_decreases_and_dec_never_increases() -> None:
    assert all(jitter(500, mode="inc") >= 500 for _ in range(SAMPLES))
    assert all(jitter(500, mode="dec") <= 500 for _ in range(SAMPLES))


def test_jitter_both_goes_in_both_directions() -> None:
    values = [jitter(10_000, mode="both") for _ in range(SAMPLES)]

    assert any(value > 10_000 for value in values)
    assert any(value < 10_000 for value in values)


def test_jitter_default_mode_is_inc() -> None:
    assert all(1000 <= jitter(1000) <= 1100 for _ in range(SAMPLES))


def test_jitter_mult_sets_the_spread() -> None:
    values = [jitter(1000, mode="both", mult=0.5) for _ in range(SAMPLES)]

    assert all(500 <= value <= 1500 for value in values)


def test_jittery_exponential() -> None:
    for _ in range(SAMPLES):
        assert 1024 <= jittery_exponential(10) <= int(1024 * 1.1)
