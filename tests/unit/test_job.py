"""Unit tests for the job model: Job, JobState, Snooze, Cancel, Record and current_job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from oban import Cancel, Job, JobState, Record, Snooze, current_job
from oban._recorded import decode_recorded

WORKER = "tests.unit.test_job.SomeWorker"


def _close_to(actual: datetime | None, expected: datetime, tolerance: float = 2.0) -> bool:
    assert actual is not None
    return abs((actual - expected).total_seconds()) <= tolerance


# --- defaults ---------------------------------------------------------------------------------


def test_job_defaults_for_every_field() -> None:
    job = Job(WORKER)

    assert job.worker == WORKER
    assert job.id is None
    assert job.state == JobState.AVAILABLE
    assert isinstance(job.state, JobState)
    assert job.queue == "default"
    assert job.attempt == 0
    assert job.max_attempts == 20
    assert job.priority == 0
    assert job.args == {}
    assert job.meta == {}
    assert job.errors == []
    assert job.tags == []
    assert job.attempted_by == []
    assert job.extra == {}
    assert job.inserted_at is None
    assert job.attempted_at is None
    assert job.cancelled_at is None
    assert job.completed_at is None
    assert job.discarded_at is None
    assert job.scheduled_at is None


def test_mutable_defaults_are_not_shared_between_jobs() -> None:
    first = Job(WORKER)
    second = Job(WORKER)

    first.args["a"] = 1
    first.meta["b"] = 2
    first.errors.append("boom")
    first.extra["c"] = 3

    assert second.args == {}
    assert second.meta == {}
    assert second.errors == []
    assert second.extra == {}


def test_state_given_as_string_becomes_job_state() -> None:
    job = Job(WORKER, state="scheduled")

    assert job.state is JobState.SCHEDULED


def test_job_uses_slots() -> None:
    job = Job(WORKER)

    with pytest.raises(AttributeError):
        cast(Any, job).not_a_field = 1


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["queue", "worker"])
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_queue_or_worker_is_rejected(field: str, blank: str) -> None:
    params: dict[str, Any] = {"worker": WORKER, "queue": "default", field: blank}
    worker = params.pop("worker")

    with pytest.raises(ValueError, match=field):
        Job(worker, **params)


@pytest.mark.parametrize("field", ["queue", "worker"])
def test_queue_or_worker_over_127_characters_is_rejected(field: str) -> None:
    params: dict[str, Any] = {"worker": WORKER, "queue": "default", field: "q" * 128}
    worker = params.pop("worker")

    with pytest.raises(ValueError, match=field):
        Job(worker, **params)


@pytest.mark.parametrize("field", ["queue", "worker"])
def test_queue_or_worker_of_exactly_127_characters_is_accepted(field: str) -> None:
    params: dict[str, Any] = {"worker": WORKER, "queue": "default", field: "q" * 127}
    worker = params.pop("worker")

    job = Job(worker, **params)

    assert getattr(job, field) == "q" * 127


@pytest.mark.parametrize("value", [0, -1, 32_768])
def test_max_attempts_out_of_range_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        Job(WORKER, max_attempts=value)


# A wrong type is a TypeError naming the option, as in oban-py (it was a ValueError here).
@pytest.mark.parametrize("value", [1.5, "3", True, False, None])
def test_max_attempts_of_the_wrong_type_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="max_attempts"):
        Job(WORKER, max_attempts=value)


def test_max_attempts_of_one_is_accepted() -> None:
    assert Job(WORKER, max_attempts=1).max_attempts == 1


@pytest.mark.parametrize("value", [-1, 10, 100])
def test_priority_out_of_range_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="priority"):
        Job(WORKER, priority=value)


@pytest.mark.parametrize("value", [1.0, "1", True])
def test_priority_of_the_wrong_type_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="priority"):
        Job(WORKER, priority=value)


@pytest.mark.parametrize("value", [0, 5, 9])
def test_priority_within_0_to_9_is_accepted(value: int) -> None:
    assert Job(WORKER, priority=value).priority == value


def test_validate_false_skips_validation_for_database_rows() -> None:
    job = Job(WORKER, queue="", priority=42, _validate=False)

    assert job.queue == ""
    assert job.priority == 42


# --- tags -------------------------------------------------------------------------------------


def test_tags_are_stripped_lowercased_deduplicated_and_sorted() -> None:
    job = Job(WORKER, tags=["  Zeta ", "alpha", "ALPHA", "Beta", "", "   ", cast(Any, None)])

    assert job.tags == ["alpha", "beta", "zeta"]


def test_tags_accept_any_iterable() -> None:
    job = Job(WORKER, tags=("B", "a"))

    assert job.tags == ["a", "b"]


def test_tags_as_a_bare_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="tags"):
        Job(WORKER, tags="urgent")


# --- args and meta ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["args", "meta"])
@pytest.mark.parametrize("value", [[1, 2], "text", 3, (("a", 1),)])
def test_args_and_meta_must_be_dicts(field: str, value: Any) -> None:
    with pytest.raises(TypeError, match=field):
        Job(WORKER, **{field: value})


def test_args_with_a_set_names_the_path_and_type() -> None:
    with pytest.raises(TypeError) as info:
        Job(WORKER, args={"ids": {1, 2}})

    message = str(info.value)
    assert "args['ids']" in message
    assert "set" in message


def test_args_with_an_object_names_the_path_and_type() -> None:
    class Thing:
        pass

    with pytest.raises(TypeError) as info:
        Job(WORKER, args={"thing": Thing()})

    message = str(info.value)
    assert "args['thing']" in message
    assert "Thing" in message


def test_args_with_a_value_nested_deep_in_lists_and_dicts_names_the_full_path() -> None:
    args = {"ok": 1, "items": [{"fine": True}, {"nested": [0, 1, {"deep": {3, 4}}]}]}

    with pytest.raises(TypeError) as info:
        Job(WORKER, args=args)

    message = str(info.value)
    assert "args['items'][1]['nested'][2]['deep']" in message
    assert "set" in message


def test_args_with_a_non_string_key_names_the_key() -> None:
    with pytest.raises(TypeError) as info:
        Job(WORKER, args={"outer": {1: "one"}})

    message = str(info.value)
    assert "args['outer']" in message
    assert "key 1" in message
    assert "int" in message


def test_meta_with_an_unencodable_value_names_meta() -> None:
    with pytest.raises(TypeError) as info:
        Job(WORKER, meta={"when": object()})

    message = str(info.value)
    assert "meta['when']" in message
    assert "object" in message


def test_json_compatible_args_are_accepted_unchanged() -> None:
    args = {"a": 1, "b": [1, 2.5, "x", None, True], "c": {"d": {"e": []}}}

    assert Job(WORKER, args=args).args == args


# --- scheduling -------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["scheduled_in", "schedule_in"])
@pytest.mark.parametrize(
    ("delay", "seconds"),
    [(60, 60), (1.5, 1.5), (timedelta(minutes=5), 300), (timedelta(days=2), 172_800)],
)
def test_scheduled_in_sets_scheduled_at_relative_to_now(
    option: str, delay: Any, seconds: float
) -> None:
    before = datetime.now(UTC)
    job = Job(WORKER, **{option: delay})
    after = datetime.now(UTC)

    assert job.scheduled_at is not None
    assert job.scheduled_at.utcoffset() == timedelta(0)
    assert before + timedelta(seconds=seconds) <= job.scheduled_at
    assert job.scheduled_at <= after + timedelta(seconds=seconds)


@pytest.mark.parametrize("delay", ["60", True, [1]])
def test_scheduled_in_of_wrong_type_is_rejected(delay: Any) -> None:
    with pytest.raises(TypeError, match="scheduled_in"):
        Job(WORKER, scheduled_in=delay)


def test_explicit_scheduled_at_is_kept() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    assert Job(WORKER, scheduled_at=at).scheduled_at == at


@pytest.mark.parametrize(
    "field",
    [
        "inserted_at",
        "attempted_at",
        "cancelled_at",
        "completed_at",
        "discarded_at",
        "scheduled_at",
    ],
)
def test_naive_timestamps_are_made_utc_aware(field: str) -> None:
    naive = datetime(2024, 5, 6, 7, 8, 9)

    fields: dict[str, Any] = {field: naive}
    job = Job(WORKER, **fields)

    value = getattr(job, field)
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)
    assert value.replace(tzinfo=None) == naive


def test_aware_timestamps_keep_their_instant() -> None:
    aware = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))

    job = Job(WORKER, scheduled_at=aware)

    assert job.scheduled_at == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_naive_timestamps_from_database_rows_are_made_utc_aware() -> None:
    job = Job._from_db({"worker": WORKER, "attempted_at": datetime(2024, 1, 1, 12, 0)})

    assert job.attempted_at == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


# --- update -----------------------------------------------------------------------------------


def test_update_applies_changes_in_place_and_returns_the_job() -> None:
    job = Job(WORKER)

    result = job.update(
        {
            "args": {"x": 1},
            "meta": {"m": True},
            "max_attempts": 3,
            "priority": 4,
            "queue": "mail",
            "tags": ["  B", "a", "A"],
            "worker": "tests.unit.test_job.Other",
        }
    )

    assert result is job
    assert job.args == {"x": 1}
    assert job.meta == {"m": True}
    assert job.max_attempts == 3
    assert job.priority == 4
    assert job.queue == "mail"
    assert job.tags == ["a", "b"]
    assert job.worker == "tests.unit.test_job.Other"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"priority": 10}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"queue": " "}, "queue"),
        ({"worker": ""}, "worker"),
        ({"queue": "q" * 128}, "queue"),
    ],
)
def test_update_revalidates_with_value_error(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Job(WORKER).update(changes)


def test_update_revalidates_args_encoding() -> None:
    with pytest.raises(TypeError, match=r"args\['s'\]"):
        Job(WORKER).update({"args": {"s": {1}}})


def test_update_rejects_a_bare_string_for_tags() -> None:
    with pytest.raises(TypeError, match="tags"):
        Job(WORKER).update({"tags": "urgent"})


@pytest.mark.parametrize("option", ["scheduled_in", "schedule_in"])
@pytest.mark.parametrize(("delay", "seconds"), [(120, 120), (timedelta(hours=1), 3600)])
def test_update_supports_scheduled_in(option: str, delay: Any, seconds: int) -> None:
    job = Job(WORKER)

    job.update({option: delay})

    assert job.scheduled_at is not None
    assert job.scheduled_at.utcoffset() == timedelta(0)
    assert _close_to(job.scheduled_at, datetime.now(UTC) + timedelta(seconds=seconds))


def test_update_makes_a_naive_scheduled_at_utc_aware() -> None:
    job = Job(WORKER).update({"scheduled_at": datetime(2031, 1, 1, 0, 0)})

    assert job.scheduled_at == datetime(2031, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("field", ["state", "id", "attempt", "errors", "bogus"])
def test_update_rejects_unknown_or_non_updatable_fields(field: str) -> None:
    job = Job(WORKER)

    with pytest.raises(ValueError, match=field):
        job.update({field: 1})


# --- cancellation, repr, states ---------------------------------------------------------------


def test_cancelled_is_false_without_an_event() -> None:
    assert Job(WORKER).cancelled() is False


async def test_cancelled_follows_the_cancellation_event() -> None:
    job = Job(WORKER)
    job._cancellation = asyncio.Event()

    assert job.cancelled() is False
    job._cancellation.set()
    assert job.cancelled() is True


def test_repr_shows_id_short_worker_args_queue_and_state() -> None:
    job = Job("app.workers.Mailer", id=7, args={"to": "ada"}, queue="mail")

    assert repr(job) == 'Job(id=7, worker=Mailer, args={"to":"ada"}, queue=mail, state=available)'
    assert str(job) == repr(job)


def test_job_state_values() -> None:
    assert {state.name: state.value for state in JobState} == {
        "AVAILABLE": "available",
        "CANCELLED": "cancelled",
        "COMPLETED": "completed",
        "DISCARDED": "discarded",
        "EXECUTING": "executing",
        "RETRYABLE": "retryable",
        "SCHEDULED": "scheduled",
        "SUSPENDED": "suspended",
    }
    completed: str = "completed"  # a plain str: a StrEnum member equals its value
    assert JobState.COMPLETED == completed
    assert JobState("retryable") is JobState.RETRYABLE


# --- Snooze, Cancel, Record -------------------------------------------------------------------


def test_snooze_holds_seconds_and_meta() -> None:
    assert Snooze(60) == Snooze(seconds=60, meta=None)
    snooze = Snooze(1.5, meta={"reason": "busy"})
    assert snooze.seconds == 1.5
    assert snooze.meta == {"reason": "busy"}
    assert Snooze(0).seconds == 0


@pytest.mark.parametrize("seconds", ["60", None, True, [1]])
def test_snooze_seconds_must_be_a_number(seconds: Any) -> None:
    with pytest.raises(TypeError, match="seconds"):
        Snooze(seconds)


def test_snooze_seconds_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="seconds"):
        Snooze(-1)


def test_snooze_meta_must_be_a_json_dict() -> None:
    with pytest.raises(TypeError, match="meta"):
        Snooze(10, meta=cast(Any, ["not", "a", "dict"]))
    with pytest.raises(TypeError, match=r"\['k'\]"):
        Snooze(10, meta={"k": {1, 2}})


def test_snooze_is_frozen() -> None:
    snooze = Snooze(5)

    with pytest.raises(AttributeError):
        cast(Any, snooze).seconds = 10


def test_cancel_holds_its_reason() -> None:
    cancel = Cancel("no longer needed")

    assert cancel.reason == "no longer needed"
    assert repr(cancel) == "Cancel(reason='no longer needed')"
    assert cancel == Cancel("no longer needed")


@pytest.mark.parametrize(
    "value",
    [{"total": 3}, [1, "two", 3.5, None, True], "text", 12345678901234567890, (1, 2)],
)
def test_record_stores_the_value_encoded_for_meta(value: Any) -> None:
    record = Record(value)

    assert record.value == value
    assert isinstance(record.encoded, str)
    assert "=" not in record.encoded
    assert decode_recorded(record.encoded) == value


def test_record_known_encoding() -> None:
    assert Record({"total": 3}).encoded == "g3QAAAABbQAAAAV0b3RhbGED"


def test_record_over_the_limit_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="exceeds limit of 10"):
        Record("x" * 100, limit=10)


def test_record_at_the_limit_is_accepted() -> None:
    size = len(Record("x" * 100).encoded)

    assert Record("x" * 100, limit=size).encoded


def test_record_of_an_unencodable_value_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="set"):
        Record({"ids": {1, 2}})


def test_current_job_is_none_outside_a_job() -> None:
    assert current_job() is None


async def test_current_job_is_none_outside_a_job_in_async_code() -> None:
    assert current_job() is None


# --- the recorded value -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"total": 3}, [1, "two", None], "text", 42, 1.5, None])
def test_recorded_decodes_what_the_worker_recorded(value: Any) -> None:
    job = Job(WORKER, meta={"recorded": True, "return": Record(value).encoded})

    assert job.recorded == value


def test_recorded_reads_a_value_recorded_by_elixir() -> None:
    # %{"total" => 3} as Elixir Oban stores it: term_to_binary, base64 without padding.
    job = Job(WORKER, meta={"recorded": True, "return": "g3QAAAABbQAAAAV0b3RhbGED"})

    assert job.recorded == {"total": 3}


def test_recorded_is_none_when_nothing_was_recorded() -> None:
    assert Job(WORKER).recorded is None
    assert Job(WORKER, meta={"recorded": False, "return": Record(1).encoded}).recorded is None


@pytest.mark.parametrize("meta", [{"recorded": True}, {"recorded": True, "return": "%%%"}])
def test_recorded_with_a_missing_or_malformed_value_is_a_value_error(meta: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"return|recorded"):
        _ = Job(WORKER, meta=meta).recorded
