"""Tests for oban._engines._dsn: no DSN is ever shown with its password."""

from __future__ import annotations

import pytest

from oban._engines._dsn import describe, mask_dsn, scrub


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://app:hunter2@db:5432/jobs", "postgresql://app:***@db:5432/jobs"),
        (
            "postgres://app:hunter2@db/jobs?sslmode=require",
            "postgres://app:***@db/jobs?sslmode=require",
        ),
        ("postgresql://app:hu@nt?er#2@db/jobs", "postgresql://app:***@db/jobs"),
        ("postgresql://:hunter2@db/jobs", "postgresql://:***@db/jobs"),
        ("postgresql://app:hunter2@db", "postgresql://app:***@db"),
        (
            "postgresql://db/jobs?user=app&password=hunter2",
            "postgresql://db/jobs?user=app&password=***",
        ),
        (
            "host=db user=app password=hunter2 dbname=jobs",
            "host=db user=app password=*** dbname=jobs",
        ),
        ("host=db password='hunter 2' dbname=jobs", "host=db password=*** dbname=jobs"),
        ("mysql://app:hunter2@db/jobs", "mysql://app:***@db/jobs"),
    ],
)
def test_mask_dsn_hides_the_password(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://app@db/jobs", "postgresql://db/jobs", "sqlite:///jobs.db", "sqlite:////a/b.db"],
)
def test_mask_dsn_leaves_a_dsn_without_password_alone(dsn: str) -> None:
    assert mask_dsn(dsn) == dsn


def test_scrub_removes_pieces_of_a_password_libpq_split_off() -> None:
    dsn = "postgresql://app:se@cret99@db/jobs"
    message = "failed to resolve host 'cret99@db': Name or service not known"

    assert scrub(message, dsn) == "failed to resolve host '***@db': Name or service not known"


def test_scrub_removes_a_password_quoted_in_a_parse_error() -> None:
    dsn = "postgresql://app:my secret@db/jobs"
    message = 'unexpected spaces found in "my secret", use percent-encoded spaces (%20) instead'

    assert "my secret" not in scrub(message, dsn)


def test_scrub_leaves_messages_without_the_password_alone() -> None:
    message = 'FATAL:  database "jobs" does not exist'

    assert scrub(message, "postgresql://app:hunter2@db/jobs") == message


def test_describe_names_the_engine() -> None:
    assert describe(None) == "SQLite oban.db"
    assert describe("sqlite:///tmp/jobs.db") == "SQLite tmp/jobs.db"
    assert describe("postgresql://app:hunter2@db/jobs") == "PostgreSQL postgresql://app:***@db/jobs"
