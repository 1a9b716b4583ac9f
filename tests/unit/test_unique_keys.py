"""Unique jobs without a database: option validation (``normalize_unique``,
``normalize_replace``, and the same checks through ``Job``, ``new()`` and the decorators),
the state bitmaps of each group, and the key a unique job carries (``Unique.key``, ``stamp``).

A key is persisted in ``meta.uniq_key`` and compared with keys written by earlier versions and
other nodes, so its format is pinned here by golden values: changing it silently turns every
existing unique job into a non-duplicate.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from oban import Job, job, worker
from oban._unique import (
    GROUPS,
    STATE_BITS,
    Unique,
    normalize_replace,
    normalize_unique,
    stamp,
)

KEY_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
ALL_STATES = (
    "scheduled",
    "available",
    "executing",
    "retryable",
    "completed",
    "cancelled",
    "discarded",
    "suspended",
)
AT_10_00 = datetime(2030, 1, 2, 10, 0, 0, tzinfo=UTC)
AT_10_59 = datetime(2030, 1, 2, 10, 59, 59, tzinfo=UTC)
AT_11_00 = datetime(2030, 1, 2, 11, 0, 0, tzinfo=UTC)


@worker(queue="unit_unique")
class UnitUniqPlain:
    async def process(self, job: Job) -> None:
        return None


def unique(value: object) -> Unique:
    normalized = normalize_unique(value)
    assert normalized is not None
    return normalized


def key_of(
    options: object = True,
    *,
    args: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    queue: str = "default",
    worker_name: str = "app.workers.W",
    scheduled_at: datetime | None = None,
    now: datetime | None = None,
) -> str:
    """The key of a job built from these fields under the ``unique=`` option ``options``."""
    spec = unique(options)
    built = Job(
        worker_name,
        args=args,
        meta=meta,
        queue=queue,
        scheduled_at=scheduled_at,
        unique=spec,
    )
    return spec.key(built, now)


# ---------------------------------------------------------------------------------------------
# normalize_unique
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, False])
def test_normalize_unique_of_none_or_false_is_not_unique(value: object) -> None:
    assert normalize_unique(value) is None


def test_normalize_unique_true_has_the_documented_defaults() -> None:
    spec = unique(True)

    assert spec == Unique()
    assert spec.fields == ("args", "queue", "worker")
    assert spec.keys is None
    assert spec.period is None
    assert set(spec.states) == set(ALL_STATES)


def test_normalize_unique_of_an_empty_dict_is_the_same_as_true() -> None:
    assert unique({}) == unique(True)


def test_normalize_unique_keeps_an_already_normalized_value() -> None:
    spec = unique({"period": 60, "group": "incomplete"})
    assert normalize_unique(spec) == spec


@pytest.mark.parametrize(
    ("period", "seconds"),
    [
        (1, 1),
        (60, 60),
        (3600, 3600),
        (timedelta(hours=1), 3600),
        (timedelta(minutes=2), 120),
        (timedelta(days=7), 7 * 86400),
        (None, None),
    ],
)
def test_period_is_whole_seconds(period: object, seconds: int | None) -> None:
    assert unique({"period": period}).period == seconds


@pytest.mark.parametrize(
    "period",
    [
        0,
        -1,
        -3600,
        0.5,
        1.5,
        59.9,
        timedelta(0),
        timedelta(milliseconds=500),
        timedelta(seconds=1.5),
    ],
)
def test_period_that_is_not_a_whole_number_of_seconds_of_at_least_one_is_a_value_error(
    period: object,
) -> None:
    with pytest.raises(ValueError, match="period"):
        normalize_unique({"period": period})


@pytest.mark.parametrize(
    ("group", "bitmap"),
    [
        ("all", [0, 1, 2, 3, 4, 5, 6, 7]),
        ("incomplete", [0, 1, 2, 3, 7]),
        ("scheduled", [0]),
        ("successful", [0, 1, 2, 3, 4, 7]),
    ],
)
def test_each_group_has_its_states_and_bitmap(group: str, bitmap: list[int]) -> None:
    spec = unique({"group": group})

    assert spec.bitmap == bitmap
    assert sorted(STATE_BITS[state] for state in spec.states) == bitmap


def test_the_default_group_is_all() -> None:
    assert unique(True).bitmap == [0, 1, 2, 3, 4, 5, 6, 7]
    assert unique({"period": 60}).bitmap == unique({"group": "all"}).bitmap


def test_groups_are_the_documented_state_lists() -> None:
    incomplete = {"available", "executing", "retryable", "scheduled", "suspended"}
    assert set(GROUPS["all"]) == set(ALL_STATES)
    assert set(GROUPS["incomplete"]) == incomplete
    assert set(GROUPS["scheduled"]) == {"scheduled"}
    assert set(GROUPS["successful"]) == incomplete | {"completed"}


def test_state_numbers_are_the_documented_ones() -> None:
    assert STATE_BITS == {
        "scheduled": 0,
        "available": 1,
        "executing": 2,
        "retryable": 3,
        "completed": 4,
        "cancelled": 5,
        "discarded": 6,
        "suspended": 7,
    }


def test_explicit_states_give_a_sorted_bitmap_without_repeats() -> None:
    spec = unique(
        {"states": ["completed", "executing", "retryable", "scheduled", "available", "completed"]}
    )

    assert spec.bitmap == [0, 1, 2, 3, 4]
    assert set(spec.states) == {"available", "completed", "executing", "retryable", "scheduled"}


def test_explicit_states_need_only_the_insert_and_return_states() -> None:
    # available and scheduled: the states jobs are inserted in; executing and retryable: a job
    # goes back to available from them (rescued, staged), where it must not meet a duplicate.
    spec = unique({"states": ["scheduled", "executing", "retryable", "available"]})

    assert spec.bitmap == [0, 1, 2, 3]
    required = ["available", "executing", "retryable", "scheduled"]
    assert Job("app.W", unique={"states": required}).unique == spec
    with pytest.raises(ValueError, match="missing: executing, retryable"):
        unique({"states": ["scheduled", "available"]})
    with pytest.raises(ValueError, match="missing: retryable"):
        unique({"states": ["scheduled", "available", "executing"]})


def test_explicit_states_with_every_state_equal_group_all() -> None:
    assert unique({"states": list(reversed(ALL_STATES))}).bitmap == unique(True).bitmap


def test_fields_are_kept_in_a_canonical_order_without_repeats() -> None:
    spec = unique({"fields": ["worker", "meta", "worker", "args"]})
    assert spec.fields == ("args", "meta", "worker")


def test_keys_are_kept() -> None:
    assert unique({"keys": ["account", "id"]}).keys == ("account", "id")
    assert unique({"fields": ["meta", "worker"], "keys": ["tenant"]}).keys == ("tenant",)


BAD_UNIQUE: list[tuple[dict[str, Any], str]] = [
    ({"perod": 60}, "period"),  # a typo: the message suggests the near match
    ({"bogus": 1}, "bogus"),
    ({"fields": ["args", "state"]}, "state"),
    ({"fields": ["id"]}, "id"),
    ({"group": "done"}, "done"),
    ({"group": "completed"}, "completed"),
    ({"states": ["available", "scheduled", "finished"]}, "finished"),
    ({"states": ["scheduled", "executing"]}, "available"),
    ({"states": ["available", "executing"]}, "scheduled"),
    ({"states": ["completed"]}, "available"),
    ({"group": "all", "states": list(ALL_STATES)}, "group"),
    ({"fields": ["worker", "queue"], "keys": ["id"]}, "keys"),
    ({"period": 0}, "period"),
    ({"period": 1.5}, "period"),
]


@pytest.mark.parametrize(("options", "named"), BAD_UNIQUE)
def test_bad_unique_options_are_value_errors_naming_the_problem(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        normalize_unique(options)


# ---------------------------------------------------------------------------------------------
# The same checks through the public API (Job, new(), the decorators)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "named"), BAD_UNIQUE)
def test_bad_unique_options_are_refused_by_job_and_new(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Job("app.workers.W", unique=cast(Any, options))
    with pytest.raises(ValueError, match=named):
        UnitUniqPlain.new({}, unique=cast(Any, options))


@pytest.mark.parametrize(("options", "named"), BAD_UNIQUE)
def test_bad_unique_options_are_refused_by_the_decorators_at_definition(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):

        @worker(unique=cast(Any, options))
        class UnitUniqBad:
            async def process(self, job: Job) -> None:
                return None

    with pytest.raises(ValueError, match=named):

        @job(unique=cast(Any, options))
        def unit_uniq_bad() -> None:
            return None


def test_unique_options_are_accepted_everywhere() -> None:
    options: Any = {"period": 60, "fields": ["args", "worker"], "keys": ["id"], "group": "all"}

    @worker(unique=options)
    class UnitUniqDeclared:
        async def process(self, job: Job) -> None:
            return None

    @job(unique=options)
    def unit_uniq_declared(id: int) -> None:
        return None

    expected = unique(options)
    assert UnitUniqDeclared.new({"id": 1}).unique == expected
    assert unit_uniq_declared.new(1).unique == expected
    assert UnitUniqPlain.new({"id": 1}, unique=options).unique == expected
    assert Job("app.W", args={"id": 1}, unique=options).unique == expected
    assert UnitUniqPlain.new({}).unique is None
    assert Job("app.W").unique is None


def test_replace_without_unique_is_a_value_error() -> None:
    replace = {"scheduled": ["scheduled_at"]}
    with pytest.raises(ValueError, match="unique"):
        Job("app.workers.W", replace=replace)
    with pytest.raises(ValueError, match="unique"):
        UnitUniqPlain.new({}, replace=replace)
    with pytest.raises(ValueError, match="unique"):

        @worker(replace=replace)
        class UnitUniqReplaceOnly:
            async def process(self, job: Job) -> None:
                return None


def test_replace_with_unique_is_accepted() -> None:
    built = UnitUniqPlain.new({}, unique=True, replace={"scheduled": ["scheduled_at", "args"]})

    assert built.unique == Unique()
    assert built.replace == {"scheduled": ("scheduled_at", "args")}


# ---------------------------------------------------------------------------------------------
# normalize_replace
# ---------------------------------------------------------------------------------------------


def test_normalize_replace_of_none_is_none() -> None:
    assert normalize_replace(None) is None


def test_normalize_replace_keeps_states_and_fields() -> None:
    replace = normalize_replace(
        {"scheduled": ["scheduled_at", "args"], "available": ["priority", "priority", "tags"]}
    )

    assert replace == {"scheduled": ("scheduled_at", "args"), "available": ("priority", "tags")}


def test_normalize_replace_accepts_every_replaceable_field() -> None:
    fields = [
        "args",
        "max_attempts",
        "meta",
        "priority",
        "queue",
        "scheduled_at",
        "tags",
        "worker",
    ]
    replace = normalize_replace({state: fields for state in ALL_STATES})

    assert replace is not None
    assert set(replace) == set(ALL_STATES)
    assert all(set(names) == set(fields) for names in replace.values())


@pytest.mark.parametrize(
    ("replace", "named"),
    [
        ({"finished": ["args"]}, "finished"),
        ({"scheduled": ["state"]}, "state"),
        ({"scheduled": ["id"]}, "id"),
        ({"scheduled": ["scheduled_in"]}, "scheduled_in"),
        ({"available": ["args", "attempt"]}, "attempt"),
    ],
)
def test_normalize_replace_refuses_unknown_states_and_fields(
    replace: dict[str, list[str]], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        normalize_replace(replace)
    with pytest.raises(ValueError, match=named):
        Job("app.workers.W", unique=True, replace=replace)


# ---------------------------------------------------------------------------------------------
# Unique.key
# ---------------------------------------------------------------------------------------------


def test_key_golden_value_and_format() -> None:
    # The canonical JSON of the default fields, keys sorted at every level, hashed with
    # BLAKE2s and written as unpadded URL-safe base64 (43 characters).
    canonical = b'{"args":{"n":[1,2],"to":"ada"},"queue":"mail","worker":"app.workers.Mailer"}'
    derived = base64.urlsafe_b64encode(hashlib.blake2s(canonical).digest()).rstrip(b"=").decode()

    key = key_of(args={"to": "ada", "n": [1, 2]}, queue="mail", worker_name="app.workers.Mailer")

    assert key == "tWmBmKv1JB-kuz0Vf9xYQD5haurgLFKFz7cJAQ2o25s"
    assert key == derived
    assert KEY_SHAPE.fullmatch(key)


def test_key_golden_value_with_a_period() -> None:
    key = key_of(
        {"period": 3600},
        args={"to": "ada"},
        queue="mail",
        worker_name="app.workers.Mailer",
        scheduled_at=datetime(2030, 1, 2, 10, 30, tzinfo=UTC),
    )

    assert key == "Lspeo5q_w6V4zURQH_p_jwcB44FQTXcLnxrCqxyUPuU"


def test_key_is_the_same_on_every_call() -> None:
    assert key_of(args={"a": 1}) == key_of(args={"a": 1})


def test_key_ignores_the_order_of_dict_keys() -> None:
    assert key_of(args={"a": 1, "b": 2}) == key_of(args={"b": 2, "a": 1})


def test_key_ignores_the_order_of_nested_dict_keys() -> None:
    one = {"a": {"x": 1, "y": {"p": [1, {"k": 1, "j": 2}], "q": None}}}
    two = {"a": {"y": {"q": None, "p": [1, {"j": 2, "k": 1}]}, "x": 1}}

    assert key_of(args=one) == key_of(args=two)


def test_key_sees_differences_deep_inside() -> None:
    assert key_of(args={"a": {"b": [1, {"c": 1}]}}) != key_of(args={"a": {"b": [1, {"c": 2}]}})


def test_key_keeps_the_order_of_lists() -> None:
    assert key_of(args={"a": [1, 2]}) != key_of(args={"a": [2, 1]})


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ({"id": 1}, {"id": "1"}),
        ({"id": 1}, {"id": 1.5}),
        ({"id": True}, {"id": 1}),
        ({"id": None}, {}),
        ({"id": []}, {"id": {}}),
        ({"id": ""}, {"id": None}),
    ],
)
def test_key_tells_values_of_different_types_apart(
    one: dict[str, Any], two: dict[str, Any]
) -> None:
    assert key_of(args=one) != key_of(args=two)


def test_key_by_default_is_made_of_worker_queue_and_args() -> None:
    base = key_of(args={"a": 1}, queue="q1", worker_name="app.W1")

    assert key_of(args={"a": 2}, queue="q1", worker_name="app.W1") != base
    assert key_of(args={"a": 1}, queue="q2", worker_name="app.W1") != base
    assert key_of(args={"a": 1}, queue="q1", worker_name="app.W2") != base
    assert key_of(args={"a": 1}, queue="q1", worker_name="app.W1", meta={"m": 1}) == base
    assert key_of(args={"a": 1}, queue="q1", worker_name="app.W1", scheduled_at=AT_10_00) == base


def test_key_of_chosen_fields_ignores_the_others() -> None:
    only_worker = {"fields": ["worker"]}

    assert key_of(only_worker, args={"a": 1}, queue="q1") == key_of(
        only_worker, args={"a": 2}, queue="q2"
    )
    assert key_of(only_worker, worker_name="app.W1") != key_of(only_worker, worker_name="app.W2")


def test_key_with_meta_in_fields_depends_on_meta() -> None:
    with_meta = {"fields": ["worker", "meta"]}

    assert key_of(with_meta, meta={"tenant": 1}) != key_of(with_meta, meta={"tenant": 2})
    assert key_of(with_meta, meta={"tenant": 1}, args={"a": 1}) == key_of(
        with_meta, meta={"tenant": 1}, args={"a": 2}
    )


def test_key_of_meta_ignores_the_uniq_entries_it_writes() -> None:
    with_meta = {"fields": ["worker", "meta"]}
    stamped = {"tenant": 1, "uniq": True, "uniq_key": "x" * 43, "uniq_bmp": [0, 1]}

    assert key_of(with_meta, meta=stamped) == key_of(with_meta, meta={"tenant": 1})


def test_keys_restrict_args_to_those_keys() -> None:
    by_account = {"keys": ["account"]}

    assert key_of(by_account, args={"account": 1, "n": 1}) == key_of(
        by_account, args={"account": 1, "n": 2}
    )
    assert key_of(by_account, args={"account": 1}) != key_of(by_account, args={"account": 2})


def test_a_key_missing_from_args_is_simply_absent() -> None:
    two_keys = {"keys": ["account", "region"]}

    assert key_of(two_keys, args={"account": 1}) == key_of(two_keys, args={"account": 1, "n": 9})
    assert key_of(two_keys, args={}) == key_of(two_keys, args={"other": 1})
    # Absent is not null.
    assert key_of(two_keys, args={"account": 1}) != key_of(
        two_keys, args={"account": 1, "region": None}
    )


def test_keys_restrict_meta_to_those_keys() -> None:
    by_tenant = {"fields": ["worker", "meta"], "keys": ["tenant"]}

    assert key_of(by_tenant, meta={"tenant": 1, "trace": "a"}) == key_of(
        by_tenant, meta={"tenant": 1, "trace": "b"}
    )
    assert key_of(by_tenant, meta={"tenant": 1}) != key_of(by_tenant, meta={"tenant": 2})


def test_key_depends_on_the_group_not_at_all() -> None:
    # The states a job holds its key in live in uniq_bmp, not in the key: jobs of different
    # groups with the same fields are still each other's duplicates.
    assert key_of({"group": "incomplete"}, args={"a": 1}) == key_of({"group": "all"}, args={"a": 1})


# Periods


def test_period_buckets_scheduled_at_into_fixed_windows() -> None:
    hourly = {"period": 3600}

    assert key_of(hourly, scheduled_at=AT_10_00) == key_of(hourly, scheduled_at=AT_10_59)
    assert key_of(hourly, scheduled_at=AT_10_59) != key_of(hourly, scheduled_at=AT_11_00)


def test_period_as_a_timedelta_gives_the_same_key_as_seconds() -> None:
    assert key_of({"period": timedelta(hours=1)}, scheduled_at=AT_10_59) == key_of(
        {"period": 3600}, scheduled_at=AT_10_59
    )


def test_period_buckets_the_given_now_when_there_is_no_scheduled_at() -> None:
    hourly = {"period": 3600}

    assert key_of(hourly, now=AT_10_00) == key_of(hourly, now=AT_10_59)
    assert key_of(hourly, now=AT_10_59) != key_of(hourly, now=AT_11_00)
    assert key_of(hourly, now=AT_10_59) == key_of(hourly, scheduled_at=AT_10_00)


def test_period_prefers_scheduled_at_over_now() -> None:
    hourly = {"period": 3600}

    assert key_of(hourly, scheduled_at=AT_10_00, now=AT_11_00) == key_of(
        hourly, scheduled_at=AT_10_00
    )


def test_period_buckets_are_aligned_on_the_epoch_in_utc() -> None:
    daily = {"period": 86400}
    plus_five = timezone(timedelta(hours=5))

    # 2030-01-02 04:00 at +05:00 is 2030-01-01 23:00 UTC: the previous UTC day.
    local = datetime(2030, 1, 2, 4, 0, tzinfo=plus_five)
    assert key_of(daily, scheduled_at=local) == key_of(
        daily, scheduled_at=datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
    )
    assert key_of(daily, scheduled_at=local) != key_of(daily, scheduled_at=AT_10_00)


def test_bucket_start_is_floor_of_epoch_seconds_over_period() -> None:
    period = 7  # does not divide an hour: the boundaries are epoch multiples, not clock times
    start = datetime.fromtimestamp(1_900_000_003 - 1_900_000_003 % period, tz=UTC)
    seven = {"period": period}

    assert key_of(seven, scheduled_at=start) == key_of(
        seven, scheduled_at=start + timedelta(seconds=6, microseconds=999_999)
    )
    assert key_of(seven, scheduled_at=start) != key_of(
        seven, scheduled_at=start + timedelta(seconds=7)
    )
    assert key_of(seven, scheduled_at=start) != key_of(
        seven, scheduled_at=start - timedelta(microseconds=1)
    )


def test_periods_of_different_lengths_give_different_keys() -> None:
    # 11:00:00 starts a bucket of both; the jobs are still not duplicates of each other.
    assert key_of({"period": 60}, scheduled_at=AT_11_00) != key_of(
        {"period": 3600}, scheduled_at=AT_11_00
    )
    assert key_of({"period": 60}, scheduled_at=AT_11_00) != key_of(True, scheduled_at=AT_11_00)


# ---------------------------------------------------------------------------------------------
# stamp
# ---------------------------------------------------------------------------------------------


def test_stamp_writes_the_key_entries_into_meta() -> None:
    spec = unique({"group": "incomplete"})
    built = Job("app.W", args={"a": 1}, meta={"trace": "t"}, unique=spec)
    expected = spec.key(built)

    assert stamp([built]) is True
    assert built.meta == {
        "trace": "t",
        "uniq": True,
        "uniq_key": expected,
        "uniq_bmp": [0, 1, 2, 3, 7],
    }


def test_stamp_leaves_jobs_that_are_not_unique_alone() -> None:
    plain = Job("app.W", args={"a": 1}, meta={"trace": "t"})
    marked = Job("app.W", args={"a": 1}, unique=True)

    assert stamp([plain]) is False
    assert plain.meta == {"trace": "t"}
    assert stamp([plain, marked]) is True
    assert plain.meta == {"trace": "t"}
    assert marked.meta["uniq"] is True
    assert marked.meta["uniq_bmp"] == [0, 1, 2, 3, 4, 5, 6, 7]


def test_stamp_twice_gives_the_same_meta() -> None:
    built = Job("app.W", args={"a": 1}, unique={"fields": ["worker", "meta"]}, meta={"m": 1})

    stamp([built])
    first = dict(built.meta)
    stamp([built])

    assert built.meta == first


def test_stamp_uses_now_for_a_period_without_scheduled_at() -> None:
    one = Job("app.W", unique={"period": 3600})
    two = Job("app.W", unique={"period": 3600})
    three = Job("app.W", unique={"period": 3600})

    stamp([one], AT_10_00)
    stamp([two], AT_10_59)
    stamp([three], AT_11_00)

    assert one.meta["uniq_key"] == two.meta["uniq_key"]
    assert two.meta["uniq_key"] != three.meta["uniq_key"]
