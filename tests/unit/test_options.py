"""Every option is checked where it is given: ``@worker``, ``@job``, ``new``, ``enqueue``,
``Job(...)`` and ``Job.update``. An unknown name, an option not implemented yet, a wrong type
or a wrong value raises at once; nothing is accepted and ignored."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from oban import Job, JobState, job, worker
from oban._config import _unknown_option
from oban._options import NOT_IMPLEMENTED, check_names, unknown_option
from oban.decorators import WORKER_OPTIONS, EnqueueOptions, JobOptions, WorkerOptions
from oban.errors import ObanError, OptionNotImplementedError
from oban.job import JOB_FIELDS
from oban.testing import mode

MODULE = __name__


@worker(queue="opts_q", scheduled_in=600)
class OptsWorker:
    async def process(self, job: Job) -> Any:
        return job.args


@worker(oban="OptsNoSuchInstance")
class OptsOrphanWorker:
    async def process(self, job: Job) -> Any:
        return None


@job(queue="opts_fn")
def opts_add(a: int, b: int = 2) -> int:
    return a + b


RECEIVED: list[Any] = []


@job()
def opts_with_conn(conn: str, n: int = 1) -> None:
    RECEIVED.append((conn, n))


def _loose(**options: Any) -> Any:
    """Options deliberately outside the typed surface (the type checkers reject them too)."""
    return options


# --- the quoted examples ----------------------------------------------------------------------


def test_a_typo_in_a_worker_option_raises_at_decoration_with_a_did_you_mean() -> None:
    with pytest.raises(ValueError) as info:

        @worker(queue="x", **_loose(max_attempt=5))
        class Typo:
            async def process(self, job: Job) -> None:
                return None

    message = str(info.value)
    assert f"@worker on {MODULE}." in message
    assert "unknown option 'max_attempt', did you mean 'max_attempts'?" in message
    for accepted in ("max_attempts", "meta", "priority", "queue", "scheduled_in", "tags"):
        assert accepted in message


def test_a_typo_in_a_per_call_option_raises_instead_of_running_at_once() -> None:
    with pytest.raises(ValueError) as info:
        OptsWorker.new({}, **_loose(shedule_in=60))

    message = str(info.value)
    assert f"{MODULE}.OptsWorker.new()" in message
    assert "unknown option 'shedule_in', did you mean" in message
    assert "scheduled_in" in message


async def test_a_typo_in_enqueue_raises_before_looking_for_the_instance() -> None:
    with pytest.raises(
        ValueError, match=r"OptsOrphanWorker\.enqueue\(\): unknown option 'priorty'"
    ):
        await OptsOrphanWorker.enqueue({}, **_loose(priorty=1))


def test_a_typo_in_a_job_decorator_option_raises_at_decoration() -> None:
    with pytest.raises(
        ValueError, match=r"@job on .*: unknown option 'queu', did you mean 'queue'"
    ):

        @job(**_loose(queu="x"))
        def typo() -> None:
            return None


def test_a_typo_in_job_construction_raises_with_a_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"Job\(\): unknown option 'prority', did you mean"):
        Job("app.W", **_loose(prority=1))


def test_a_typo_in_job_update_raises_with_a_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'taggs', did you mean 'tags'"):
        Job("app.W").update({"taggs": ["a"]})


def test_a_name_far_from_every_option_lists_the_accepted_names() -> None:
    with pytest.raises(ValueError) as info:
        OptsWorker.new({}, **_loose(zzzzzz=1))

    assert "did you mean" not in str(info.value)
    assert "max_attempts" in str(info.value)


# --- options not implemented yet --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NOT_IMPLEMENTED))
def test_options_not_implemented_yet_are_refused_by_the_decorators(name: str) -> None:
    with pytest.raises(OptionNotImplementedError, match=rf"option '{name}' .* not implemented yet"):

        @worker(**_loose(**{name: True}))
        class Unsupported:
            async def process(self, job: Job) -> None:
                return None

    with pytest.raises(OptionNotImplementedError, match=name):

        @job(**_loose(**{name: True}))
        def unsupported() -> None:
            return None


@pytest.mark.parametrize("name", ["rate_limit", "partition", "workflow", "global_limit"])
def test_options_not_implemented_yet_are_refused_per_job(name: str) -> None:
    with pytest.raises(OptionNotImplementedError, match=name):
        OptsWorker.new({}, **_loose(**{name: {"period": 60}}))
    with pytest.raises(OptionNotImplementedError, match=name):
        Job("app.W", **_loose(**{name: {"period": 60}}))


def test_option_not_implemented_error_is_not_implemented_a_value_error_and_an_oban_error() -> None:
    with pytest.raises(OptionNotImplementedError) as info:
        OptsWorker.new({}, **_loose(rate_limit={"period": 60}))

    assert isinstance(info.value, NotImplementedError)
    assert isinstance(info.value, ValueError)  # like every other unusable option
    assert isinstance(info.value, ObanError)
    assert "rate limiting" in str(info.value)


# --- per-job fields given to a decorator ------------------------------------------------------


@pytest.mark.parametrize("name", ["id", "state", "attempt", "scheduled_at", "errors", "args"])
def test_a_field_of_one_job_given_to_the_decorator_says_where_it_goes(name: str) -> None:
    with pytest.raises(ValueError, match=rf"'{name}' belongs to one job: give it to new"):

        @worker(**_loose(**{name: None}))
        class PerJob:
            async def process(self, job: Job) -> None:
                return None


# --- wrong types and values -------------------------------------------------------------------

WRONG_TYPES = [
    ("queue", 1),
    ("priority", "1"),
    ("max_attempts", 1.5),
    ("tags", 5),
    ("meta", ["not", "a", "dict"]),
    ("extra", ["not", "a", "dict"]),
    ("scheduled_in", "60"),
]
PER_JOB_WRONG_TYPES = [
    ("state", 1),
    ("attempt", "1"),
    ("id", "7"),
    ("inserted_at", "2024-01-01T00:00:00Z"),
    ("scheduled_at", 1_700_000_000),
    ("errors", {"not": "a list"}),
    ("attempted_by", "node-1"),
]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES)
def test_a_decorator_option_of_the_wrong_type_is_a_type_error_naming_it(
    name: str, value: Any
) -> None:
    with pytest.raises(TypeError, match=name):

        @worker(**_loose(**{name: value}))
        class WrongType:
            async def process(self, job: Job) -> None:
                return None


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES + PER_JOB_WRONG_TYPES)
def test_a_per_job_option_of_the_wrong_type_is_a_type_error_naming_it(
    name: str, value: Any
) -> None:
    with pytest.raises(TypeError, match=name):
        OptsWorker.new({}, **_loose(**{name: value}))
    with pytest.raises(TypeError, match=name):
        Job("app.W", **_loose(**{name: value}))


WRONG_VALUES = [
    ("queue", ""),
    ("priority", 10),
    ("max_attempts", 0),
    ("max_attempts", 40_000),
    ("scheduled_in", math.nan),
    ("scheduled_in", 10**20),
]
PER_JOB_WRONG_VALUES = [
    ("state", "finished"),
    ("attempt", -1),
    ("attempt", 21),  # more than max_attempts (20)
    ("id", 0),
]


@pytest.mark.parametrize(("name", "value"), WRONG_VALUES)
def test_a_decorator_option_with_a_wrong_value_is_a_value_error_naming_it(
    name: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=name):

        @worker(**_loose(**{name: value}))
        class WrongValue:
            async def process(self, job: Job) -> None:
                return None


@pytest.mark.parametrize(("name", "value"), WRONG_VALUES + PER_JOB_WRONG_VALUES)
def test_a_per_job_option_with_a_wrong_value_is_a_value_error_naming_it(
    name: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=name):
        OptsWorker.new({}, **_loose(**{name: value}))
    with pytest.raises(ValueError, match=name):
        Job("app.W", **_loose(**{name: value}))


def test_an_unknown_state_lists_the_states() -> None:
    with pytest.raises(ValueError, match="available, cancelled, completed"):
        Job("app.W", state="finished")


# --- scheduling options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"scheduled_in": 60, "schedule_in": 60},
        {"scheduled_in": 60, "scheduled_at": datetime(2031, 1, 1, tzinfo=UTC)},
    ],
)
def test_two_ways_of_scheduling_one_job_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not both"):
        Job("app.W", **options)
    with pytest.raises(ValueError, match="not both"):
        Job("app.W").update(options)


def test_a_per_call_time_replaces_the_decorators_scheduled_in() -> None:
    at = datetime(2031, 1, 1, tzinfo=UTC)

    assert OptsWorker.new({}, scheduled_at=at).scheduled_at == at
    later = OptsWorker.new({}, scheduled_in=timedelta(days=1)).scheduled_at
    assert later is not None
    assert later - datetime.now(UTC) > timedelta(hours=23)


# --- every Job field per job, not in extra ----------------------------------------------------


def test_new_sets_every_job_field_on_the_job_not_in_extra() -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    errors = [{"attempt": 1, "at": "2024-01-02T03:04:05Z", "error": "boom"}]

    job = OptsWorker.new(
        {"a": 1},
        id=7,
        state="completed",
        attempt=2,
        max_attempts=3,
        attempted_at=at,
        attempted_by=["node-1", "uuid-1"],
        errors=errors,
        inserted_at=at,
        cancelled_at=at,
        completed_at=at,
        discarded_at=at,
        scheduled_at=at,
    )

    assert job.extra == {}
    assert (job.id, job.state, job.attempt, job.max_attempts) == (7, JobState.COMPLETED, 2, 3)
    assert job.attempted_by == ["node-1", "uuid-1"]
    assert job.errors == errors
    for name in ("attempted_at", "inserted_at", "cancelled_at", "completed_at", "discarded_at"):
        assert getattr(job, name) == at
    assert job.scheduled_at == at


INSERT_SETS = [
    "id",
    "attempt",
    "attempted_at",
    "attempted_by",
    "errors",
    "inserted_at",
    "cancelled_at",
    "completed_at",
    "discarded_at",
]


@pytest.mark.parametrize("name", INSERT_SETS)
async def test_enqueue_refuses_fields_the_database_sets_on_insert(name: str) -> None:
    # An insert stores none of these; accepting them would silently drop them.
    with pytest.raises(ValueError, match=rf"'{name}' is set by the database .* new\(\)"):
        await OptsWorker.enqueue({}, **_loose(**{name: None}))
    with mode("inline"), pytest.raises(ValueError, match=name):
        await OptsWorker.enqueue({}, **_loose(**{name: None}))


async def test_enqueue_accepts_the_fields_an_insert_stores() -> None:
    at = datetime(2031, 1, 1, tzinfo=UTC)
    with mode("inline"):
        ran = await OptsWorker.enqueue({"a": 1}, state="scheduled", scheduled_at=at)

    assert (ran.args, ran.state, ran.scheduled_at) == ({"a": 1}, JobState.SCHEDULED, at)


def test_extra_stays_available_for_runtime_only_data() -> None:
    assert OptsWorker.new({}, extra={"trace": object}).extra == {"trace": object}


async def test_args_are_given_positionally_not_as_a_keyword() -> None:
    with pytest.raises(TypeError, match="give args positionally"):
        OptsWorker.new(**_loose(args={"a": 1}))
    with pytest.raises(TypeError, match="give args positionally"):
        await OptsWorker.enqueue(**_loose(args={"a": 1}))


# --- @job functions ---------------------------------------------------------------------------


def test_a_job_option_given_to_a_job_function_call_says_it_belongs_to_the_decorator() -> None:
    with pytest.raises(TypeError, match=r"queue: job options of a @job function go to @job"):
        cast(Any, opts_add).new(1, queue="elsewhere")


async def test_a_job_function_with_a_conn_parameter_keeps_it_as_its_argument() -> None:
    RECEIVED.clear()
    with mode("inline"):
        await opts_with_conn.enqueue(conn="mine", n=2)

    assert RECEIVED == [("mine", 2)]


# --- the typed surface matches the runtime one ------------------------------------------------


def test_job_options_name_exactly_the_fields_job_accepts() -> None:
    assert set(JobOptions.__optional_keys__) == JOB_FIELDS - {"args"}  # args come first
    assert not JobOptions.__required_keys__


def test_enqueue_options_are_what_an_insert_stores() -> None:
    assert set(EnqueueOptions.__optional_keys__) == JOB_FIELDS - {"args", *INSERT_SETS}


def test_worker_options_are_the_job_defaults_a_decorator_accepts() -> None:
    assert WORKER_OPTIONS == set(WorkerOptions.__optional_keys__)
    assert WORKER_OPTIONS == {
        "extra",
        "max_attempts",
        "meta",
        "priority",
        "queue",
        "replace",
        "schedule_in",
        "scheduled_in",
        "tags",
        "unique",
    }
    assert WORKER_OPTIONS < JOB_FIELDS
    assert not WORKER_OPTIONS & set(NOT_IMPLEMENTED)


# --- the shared helper ------------------------------------------------------------------------


def test_configuration_and_the_model_share_one_did_you_mean_helper() -> None:
    assert _unknown_option is unknown_option
    assert str(unknown_option("intervl", ["interval", "limit"])) == (
        "unknown option 'intervl', did you mean 'interval'?"
    )
    assert str(unknown_option("intervl", ["interval", "limit"], list_known=True)) == (
        "unknown option 'intervl', did you mean 'interval'? (known options: interval, limit)"
    )


def test_check_names_accepts_known_names() -> None:
    check_names(["queue", "priority"], {"queue", "priority"}, "here")
