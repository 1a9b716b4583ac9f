"""Args and meta are JSON, exactly: what JSON cannot represent is a TypeError naming the path
and the type when the job is built, so a worker receives what was stored, on every engine and
in inline mode."""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from oban import Job, Snooze, worker
from oban._jsonable import check_list, check_object
from oban.testing import mode

WORKER = "tests.unit.test_jsonable.W"
SEEN: list[Any] = []


@worker()
class JsonSeen:
    async def process(self, job: Job) -> None:
        SEEN.append((job.args, job.meta))


class Color(enum.Enum):
    RED = "red"


class Size(enum.StrEnum):
    LARGE = "large"


class Level(enum.IntEnum):
    HIGH = 3


@dataclass
class Point:
    x: int


class Meters(float):
    """Like numpy.float64: a float subclass, which the JSON encoder refuses."""


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


NOT_JSON = [
    (datetime(2024, 1, 2, 3, 4, 5), "datetime", "isoformat"),
    (datetime(2024, 1, 2, tzinfo=UTC), "datetime", "isoformat"),
    (date(2024, 1, 2), "date", "isoformat"),
    (time(3, 4), "time", "isoformat"),
    (timedelta(seconds=5), "timedelta", "total_seconds"),
    (uuid.UUID(int=1), "UUID", "str(value)"),
    (Decimal("1.10"), "Decimal", "str(value)"),
    (b"raw", "bytes", "base64"),
    (bytearray(b"raw"), "bytearray", "base64"),
    ({1, 2}, "set", "list"),
    (frozenset({1}), "frozenset", "list"),
    (math.nan, "nan", "cannot represent"),
    (math.inf, "inf", "cannot represent"),
    (-math.inf, "-inf", "cannot represent"),
    (2**64, "64-bit", "int"),
    (-(2**63) - 1, "64-bit", "int"),
    (Color.RED, "Color", "JSON value"),
    (Point(1), "Point", "JSON value"),
    (object(), "object", "JSON value"),
    (Meters(1.5), "Meters", "float(value)"),
    ("lone \ud800 surrogate", "surrogate", "UTF-8"),
]


@pytest.mark.parametrize(("value", "kind", "hint"), NOT_JSON)
def test_a_value_json_cannot_represent_is_a_type_error_naming_the_path_and_type(
    value: Any, kind: str, hint: str
) -> None:
    with pytest.raises(TypeError) as info:
        Job(WORKER, args={"ok": 1, "when": value})

    message = str(info.value)
    assert "args['when']" in message
    assert kind in message
    assert hint in message


@pytest.mark.parametrize(("value", "kind", "hint"), NOT_JSON)
def test_meta_is_checked_the_same_way(value: Any, kind: str, hint: str) -> None:
    with pytest.raises(TypeError, match=r"meta\['m'\]\[0\]"):
        Job(WORKER, meta={"m": [value]})


def test_the_path_runs_through_lists_and_dicts() -> None:
    args = {"items": [1, "two", datetime(2024, 1, 1)], "fine": {"a": [None]}}

    with pytest.raises(TypeError, match=r"args\['items'\]\[2\] is datetime"):
        Job(WORKER, args=args)


@pytest.mark.parametrize("key", [1, 1.5, None, ("a", "b"), Size.LARGE])
def test_a_key_that_is_not_a_plain_str_is_a_type_error(key: Any) -> None:
    with pytest.raises(TypeError) as info:
        Job(WORKER, args={"outer": {key: "v"}})

    message = str(info.value)
    assert "args['outer'] has the key" in message
    assert type(key).__name__ in message


def test_containers_nested_deeper_than_the_encoder_allows_are_refused() -> None:
    assert Job(WORKER, args={"deep": _nested(253)}).args["deep"] == _nested(253)
    orjson.dumps({"deep": _nested(253)})  # the encoder's limit: 254 containers in all

    with pytest.raises(TypeError, match="nested more than 254 levels"):
        Job(WORKER, args={"deep": _nested(254)})


def test_a_cycle_is_refused_instead_of_recursing_forever() -> None:
    loop: list[Any] = []
    loop.append(loop)

    with pytest.raises(TypeError, match="nested more than"):
        Job(WORKER, args={"loop": loop})


def test_json_values_are_accepted_as_they_are() -> None:
    args = {
        "s": "ünïcødé 😀",
        "i": 2**64 - 1,
        "neg": -(2**63),
        "f": 1e308,
        "tiny": 5e-324,
        "b": False,
        "n": None,
        "l": [[], {}, [1.5, "x"]],
        "d": {"": {"k": [True]}},
    }

    job = Job(WORKER, args=args)

    assert job.args is args
    assert orjson.loads(orjson.dumps(job.args)) == args


def test_str_and_int_enum_members_are_stored_as_their_equal_values() -> None:
    args = {"size": Size.LARGE, "level": Level.HIGH}

    stored = orjson.loads(orjson.dumps(Job(WORKER, args=args).args))

    assert stored == args
    assert stored == {"size": "large", "level": 3}


def test_tuples_become_lists_in_a_copy_so_job_args_show_what_is_stored() -> None:
    args = {"pair": (1, 2), "nested": {"t": ("a", ("b",))}, "list": [(3,)]}

    job = Job(WORKER, args=args, meta={"m": (1,)})

    assert job.args == {"pair": [1, 2], "nested": {"t": ["a", ["b"]]}, "list": [[3]]}
    assert job.meta == {"m": [1]}
    assert args["pair"] == (1, 2)  # the caller's dict is left alone


def test_a_tuple_with_a_bad_value_is_still_refused() -> None:
    with pytest.raises(TypeError, match=r"args\['t'\]\[1\] is set"):
        Job(WORKER, args={"t": (1, {2})})


def test_update_checks_args_and_meta_the_same_way() -> None:
    with pytest.raises(TypeError, match=r"args\['when'\] is datetime"):
        Job(WORKER).update({"args": {"when": datetime(2024, 1, 1)}})
    with pytest.raises(TypeError, match=r"meta\['x'\] is the float nan"):
        Job(WORKER).update({"meta": {"x": math.nan}})


def test_errors_must_be_a_json_list() -> None:
    with pytest.raises(TypeError, match=r"errors\[0\]\['at'\] is datetime"):
        Job(WORKER, errors=[{"at": datetime(2024, 1, 1)}])


def test_snooze_meta_is_checked_and_its_tuples_become_lists() -> None:
    with pytest.raises(TypeError, match=r"Snooze meta\['at'\] is datetime"):
        Snooze(5, meta={"at": datetime(2024, 1, 1)})

    assert Snooze(5, meta={"pair": (1, 2)}).meta == {"pair": [1, 2]}


def test_a_worker_new_call_is_checked_too() -> None:
    with pytest.raises(TypeError, match=r"args\['when'\] is datetime"):
        JsonSeen.new({"when": datetime(2024, 1, 1)})


async def test_inline_mode_refuses_the_job_before_the_worker_runs() -> None:
    SEEN.clear()
    with mode("inline"), pytest.raises(TypeError, match=r"args\['when'\] is datetime"):
        await JsonSeen.enqueue({"when": datetime(2024, 1, 1)})

    assert SEEN == []


async def test_in_inline_mode_the_worker_receives_what_the_job_holds() -> None:
    SEEN.clear()
    with mode("inline"):
        job = await JsonSeen.enqueue(
            {"pair": (1, 2), "size": Size.LARGE, "big": 2**63}, meta={"m": ("x",)}
        )

    assert SEEN == [(job.args, job.meta)]
    assert SEEN[0][0] == {"pair": [1, 2], "size": "large", "big": 2**63}


def test_check_object_and_check_list_name_what_they_check() -> None:
    with pytest.raises(TypeError, match="things must be a dict, got list"):
        check_object("things", [])
    with pytest.raises(TypeError, match="things must be a list, got dict"):
        check_list("things", {})
    assert check_object("things", {}) == {}
    assert check_list("things", [("a",)]) == [["a"]]
