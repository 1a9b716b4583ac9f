"""The job list's filters as typed into the URL: no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from oban import Job
from oban.web._filters import FilterError, Filters, parse_pairs
from oban.web._render import relative, timeline


def test_pairs_build_nested_dicts_of_json_values() -> None:
    assert parse_pairs('user.id=7 plan=pro name="Ada Lovelace" ok=true', "args") == {
        "user": {"id": 7},
        "plan": "pro",
        "name": "Ada Lovelace",
        "ok": True,
    }
    assert parse_pairs("a.b=1 a.c=2", "args") == {"a": {"b": 1, "c": 2}}
    assert parse_pairs(f"n={2**70}", "args") == {"n": 2**70}  # exact, any size
    assert parse_pairs("id='\"7\"' list=[1,2] none=null", "args") == {
        "id": "7",
        "list": [1, 2],
        "none": None,
    }
    assert parse_pairs("x=NaN y=007", "meta") == {"x": "NaN", "y": "007"}  # not JSON: text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("user.id", "path=value"),
        (".id=1", "path=value"),
        ("a..b=1", "path=value"),
        ("a=1 a.b=2", "conflicts"),
        ("a=1 a=2", "twice"),
        ('name="open', "No closing quotation"),
        (".".join("k" * 17) + "=1", "deeper"),
    ],
)
def test_pairs_that_cannot_be_a_filter_say_why(text: str, problem: str) -> None:
    with pytest.raises(FilterError, match=problem):
        parse_pairs(text, "args")


def test_filters_round_trip_through_the_query() -> None:
    filters = Filters.from_query(
        [
            ("state", "discarded"),
            ("state", "retryable"),
            ("args", "a=1"),
            ("args", "b=2"),
            ("q", "  "),
            ("unknown", "x"),
        ]
    )
    assert filters.states == ["discarded", "retryable"]
    assert filters.list_kwargs() == {
        "state": ["discarded", "retryable"],
        "args": {"a": 1, "b": 2},
    }
    assert (
        Filters.from_query(dict([*__import__("urllib.parse").parse.parse_qsl(filters.query())]))
        == filters
    )
    assert filters.query(state="") == "args=a%3D1+b%3D2"
    with pytest.raises(FilterError, match="unknown state 'finished'"):
        Filters(state="finished").list_kwargs()


def test_relative_times() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert relative(now - timedelta(seconds=90), now) == "1m ago"
    assert relative(now + timedelta(hours=3), now) == "in 3h"
    assert relative(now, now) == "just now"
    assert relative(None, now) == ""


def test_the_timeline_orders_a_jobs_life() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    job = Job(
        "app.W",
        state="discarded",
        attempt=2,
        max_attempts=2,
        errors=[
            {"attempt": 1, "at": "2024-01-01T00:00:05Z", "error": "Traceback\nValueError: one"},
            {"attempt": 2, "at": "2024-01-01T00:01:05Z", "error": "KeyError: two"},
        ],
        attempted_by=["node-1"],
        inserted_at=start,
        scheduled_at=start,
        attempted_at=start + timedelta(seconds=60),
        discarded_at=start + timedelta(seconds=65, milliseconds=1),
    )
    steps = [(step.kind, step.label, step.detail) for step in timeline(job)]
    assert steps == [
        ("inserted", "Inserted", ""),
        ("error", "Attempt 1 failed", "ValueError: one"),
        ("attempted", "Attempt 2 started on node-1", ""),
        ("error", "Attempt 2 failed", "KeyError: two"),
        ("discarded", "Discarded", ""),
    ]
