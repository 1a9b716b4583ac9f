"""oban.telemetry.logger: one JSON line per telemetry event, at the right level."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from oban import Job, telemetry
from oban.job import JobState
from oban.telemetry import logger as telemetry_logger

INSERTED = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _detached(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    try:
        yield
    finally:
        telemetry_logger.detach()


def _job(**overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "id": 42,
        "state": JobState.EXECUTING,
        "queue": "mail",
        "attempt": 2,
        "max_attempts": 5,
        "args": {"to": "ada@example.com", "count": 3},
        "meta": {"source": "signup"},
        "tags": ["welcome", "email"],
        "inserted_at": INSERTED,
        "attempted_at": INSERTED + timedelta(seconds=2),
        "scheduled_at": INSERTED + timedelta(seconds=1),
    }
    fields.update(overrides)
    return Job("app.workers.LoggerMailer", **fields)


def _stop_meta(job: Job, **extra: Any) -> dict[str, Any]:
    return {
        "job": job,
        "monotonic_time": 123_456_789,
        "duration": 1_234_567,  # ns -> 1.235 ms
        "queue_time": 2_500_000,  # ns -> 2.5 ms
        "state": JobState.COMPLETED,
        **extra,
    }


def _lines(
    caplog: pytest.LogCaptureFixture, name: str = "oban"
) -> list[tuple[int, dict[str, Any]]]:
    """(level, decoded JSON) of each line the telemetry logger wrote to ``name``."""
    found = []
    for record in caplog.records:
        if record.name == name and record.getMessage().startswith("{"):
            found.append((record.levelno, json.loads(record.getMessage())))
    return found


def _handler_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "oban.telemetry"]


# Job events


def test_job_stop_is_logged_at_the_level_with_job_fields_and_ms_durations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry_logger.attach(level=logging.INFO)
    telemetry.execute("oban.job.stop", _stop_meta(_job()))

    lines = _lines(caplog)
    assert len(lines) == 1
    level, data = lines[0]
    assert level == logging.INFO
    assert data == {
        "event": "oban.job.stop",
        "id": 42,
        "worker": "app.workers.LoggerMailer",
        "queue": "mail",
        "attempt": 2,
        "max_attempts": 5,
        "args": {"to": "ada@example.com", "count": 3},
        "meta": {"source": "signup"},
        "tags": ["email", "welcome"],
        "state": "completed",
        "duration": 1.235,
        "queue_time": 2.5,
    }
    assert _handler_failures(caplog) == []


def test_job_start_has_job_fields_but_no_outcome(caplog: pytest.LogCaptureFixture) -> None:
    telemetry_logger.attach()
    telemetry.execute("oban.job.start", {"job": _job(), "monotonic_time": 1})

    [(level, data)] = _lines(caplog)
    assert level == logging.INFO
    assert data["event"] == "oban.job.start"
    assert data["id"] == 42
    assert data["worker"] == "app.workers.LoggerMailer"
    assert data["args"] == {"to": "ada@example.com", "count": 3}
    for key in ("state", "duration", "queue_time", "error_type", "error_message"):
        assert key not in data


def test_job_exception_adds_error_type_and_message_at_the_configured_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry_logger.attach(level=logging.WARNING)
    meta = _stop_meta(
        _job(),
        state=JobState.RETRYABLE,
        error_message="smtp is down",
        error_type="ConnectionError",
        traceback="Traceback (most recent call last): ...",
    )
    telemetry.execute("oban.job.exception", meta)

    [(level, data)] = _lines(caplog)
    assert level == logging.WARNING
    assert data["event"] == "oban.job.exception"
    assert data["state"] == "retryable"
    assert data["error_type"] == "ConnectionError"
    assert data["error_message"] == "smtp is down"
    assert data["duration"] == 1.235
    assert data["queue_time"] == 2.5
    assert data["id"] == 42


def test_job_events_use_the_given_level_for_every_job_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry_logger.attach(level=logging.DEBUG)
    job = _job()
    telemetry.execute("oban.job.start", {"job": job, "monotonic_time": 1})
    telemetry.execute("oban.job.stop", _stop_meta(job))

    lines = _lines(caplog)
    assert [(level, data["event"]) for level, data in lines] == [
        (logging.DEBUG, "oban.job.start"),
        (logging.DEBUG, "oban.job.stop"),
    ]


# Other events


def test_plugin_span_stop_logs_at_debug_with_its_metadata(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry_logger.attach()
    with telemetry.span("oban.stager.stage", {}) as span:
        span.add({"staged_count": 3, "available_queues": ["default", "mail"]})

    lines = _lines(caplog)
    assert [(level, data["event"]) for level, data in lines] == [
        (logging.DEBUG, "oban.stager.stage.start"),
        (logging.DEBUG, "oban.stager.stage.stop"),
    ]
    stop = lines[1][1]
    assert stop["staged_count"] == 3
    assert stop["available_queues"] == ["default", "mail"]
    assert isinstance(stop["duration"], float)
    assert 0 <= stop["duration"] < 5_000  # milliseconds, not nanoseconds
    assert "system_time" not in lines[0][1]


def test_plugin_exception_logs_at_error_with_the_error(caplog: pytest.LogCaptureFixture) -> None:
    telemetry_logger.attach()
    with pytest.raises(RuntimeError), telemetry.span("oban.pruner.prune", {}):
        raise RuntimeError("prune query failed")

    lines = _lines(caplog)
    assert [(level, data["event"]) for level, data in lines] == [
        (logging.DEBUG, "oban.pruner.prune.start"),
        (logging.ERROR, "oban.pruner.prune.exception"),
    ]
    error = lines[1][1]
    assert error["error_type"] == "RuntimeError"
    assert error["error_message"] == "prune query failed"


def test_queue_shutdown_warns_only_when_jobs_were_orphaned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry_logger.attach()
    telemetry.execute("oban.queue.shutdown", {"elapsed": 0.01, "orphaned": [], "queue": "mail"})
    assert _lines(caplog) == []

    telemetry.execute("oban.queue.shutdown", {"elapsed": 5.0, "orphaned": [7, 8], "queue": "mail"})
    [(level, data)] = _lines(caplog)
    assert level == logging.WARNING
    assert data == {
        "event": "oban.queue.shutdown",
        "elapsed": 5.0,
        "orphaned": [7, 8],
        "queue": "mail",
    }


def test_notifier_status_warns_while_polling_and_informs_otherwise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry_logger.attach()
    telemetry.execute("oban.notifier.status", {"status": "polling", "reason": "connection lost"})
    telemetry.execute("oban.notifier.status", {"status": "listening", "reason": None})

    lines = _lines(caplog)
    assert [(level, data["status"]) for level, data in lines] == [
        (logging.WARNING, "polling"),
        (logging.INFO, "listening"),
    ]
    assert lines[0][1]["reason"] == "connection lost"


def test_unserialisable_values_are_converted(caplog: pytest.LogCaptureFixture) -> None:
    telemetry_logger.attach()
    jobs = [_job(id=1), _job(id=2)]
    cron_at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    telemetry.execute("oban.enqueue.start", {"jobs": jobs, "count": 2, "system_time": 1})
    telemetry.execute(
        "oban.scheduler.evaluate.stop",
        {"cron_at": cron_at, "enqueued_count": 1, "duration": 3_000_000},
    )
    telemetry.execute(
        "oban.leader.election.stop",
        {"leader": True, "lease": timedelta(seconds=30), "nodes": {"a"}, "duration": 1},
    )

    lines = _lines(caplog)
    assert len(lines) == 3
    enqueue, evaluate, election = (data for _level, data in lines)
    assert enqueue == {"event": "oban.enqueue.start", "jobs": [1, 2], "count": 2}
    assert evaluate["cron_at"] == cron_at.isoformat()
    assert evaluate["duration"] == 3.0
    assert evaluate["enqueued_count"] == 1
    assert election["leader"] is True
    assert election["lease"] == 30.0
    assert election["nodes"] == ["a"]
    assert _handler_failures(caplog) == []


def test_job_datetimes_and_unknown_objects_in_meta_do_not_break_the_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry_logger.attach()
    job = _job()
    # A worker may put anything in meta in memory before acking; the line stays valid.
    job.meta = {"when": INSERTED, "obj": object()}
    telemetry.execute("oban.job.stop", _stop_meta(job))

    [(_level, data)] = _lines(caplog)
    assert data["meta"]["when"] == INSERTED.isoformat()
    assert data["meta"]["obj"].startswith("<object object")
    assert _handler_failures(caplog) == []


# Options


def test_lines_go_to_the_given_logger(caplog: pytest.LogCaptureFixture) -> None:
    custom = logging.getLogger("myapp.oban_events")
    telemetry_logger.attach(logger=custom)
    telemetry.execute("oban.job.stop", _stop_meta(_job()))

    assert _lines(caplog) == []
    [(level, data)] = _lines(caplog, name="myapp.oban_events")
    assert level == logging.INFO
    assert data["event"] == "oban.job.stop"


def test_only_the_given_events_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    telemetry_logger.attach(events=["oban.job.exception"])
    job = _job()
    telemetry.execute("oban.job.start", {"job": job, "monotonic_time": 1})
    telemetry.execute("oban.job.stop", _stop_meta(job))
    telemetry.execute(
        "oban.job.exception",
        _stop_meta(job, state=JobState.DISCARDED, error_type="E", error_message="m"),
    )

    assert [data["event"] for _level, data in _lines(caplog)] == ["oban.job.exception"]


def test_every_event_is_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    telemetry_logger.attach()
    for name in telemetry.EVENTS:
        assert telemetry.core.has_handlers(name), name


def test_attaching_twice_does_not_duplicate_lines(caplog: pytest.LogCaptureFixture) -> None:
    telemetry_logger.attach()
    telemetry_logger.attach()
    telemetry.execute("oban.job.stop", _stop_meta(_job()))

    assert len(_lines(caplog)) == 1


def test_detach_stops_output(caplog: pytest.LogCaptureFixture) -> None:
    telemetry_logger.attach()
    telemetry.execute("oban.job.stop", _stop_meta(_job()))
    assert len(_lines(caplog)) == 1

    telemetry_logger.detach()
    telemetry.execute("oban.job.stop", _stop_meta(_job()))
    telemetry.execute("oban.notifier.status", {"status": "polling", "reason": "x"})
    assert len(_lines(caplog)) == 1
    for name in telemetry.EVENTS:
        assert not telemetry.core.has_handlers(name), name


# Laziness


def _explode(*_args: Any, **_kwargs: Any) -> bytes:
    raise AssertionError("orjson.dumps called")


def test_no_json_is_built_when_the_logger_is_not_enabled(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = logging.getLogger("myapp.quiet_oban")
    quiet.setLevel(logging.WARNING)
    job = _job()  # built first: Job validation uses orjson too
    monkeypatch.setattr(orjson, "dumps", _explode)  # the module the logger imported
    telemetry_logger.attach(level=logging.INFO, logger=quiet)

    telemetry.execute("oban.job.start", {"job": job, "monotonic_time": 1})
    telemetry.execute("oban.job.stop", _stop_meta(job))
    with telemetry.span("oban.producer.get", {"queue": "mail"}) as span:
        span.add({"count": 0})

    assert _lines(caplog, name="myapp.quiet_oban") == []
    assert _handler_failures(caplog) == []

    # Control: at an enabled level the (patched) encoder is reached, so the check above
    # really tells that nothing was encoded.
    telemetry.execute("oban.notifier.status", {"status": "polling", "reason": "down"})
    assert any("orjson.dumps called" in str(r.exc_info) for r in caplog.records)
