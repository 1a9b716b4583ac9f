"""Tests for cron expressions and cron entries."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, cast
from zoneinfo import ZoneInfo

import pytest

from oban._cron import CronEntry, Expression


def parse(text: str) -> Expression:
    return Expression.parse(text)


def field_sets(text: str) -> tuple[set[int], ...]:
    expr = parse(text)
    return (
        set(expr.minutes),
        set(expr.hours),
        set(expr.days),
        set(expr.months),
        set(expr.weekdays),
    )


# --------------------------------------------------------------------------- parsing


def test_star_fields_cover_the_full_ranges() -> None:
    minutes, hours, days, months, weekdays = field_sets("* * * * *")
    assert minutes == set(range(60))
    assert hours == set(range(24))
    assert days == set(range(1, 32))
    assert months == set(range(1, 13))
    assert weekdays == set(range(7))


def test_literals() -> None:
    assert field_sets("5 4 3 2 1") == ({5}, {4}, {3}, {2}, {1})


def test_field_boundaries_are_accepted() -> None:
    assert field_sets("59 23 31 12 6") == ({59}, {23}, {31}, {12}, {6})
    assert field_sets("0 0 1 1 0") == ({0}, {0}, {1}, {1}, {0})


def test_leading_zeros_are_accepted() -> None:
    assert parse("05 09 * * *").minutes == {5}
    assert parse("05 09 * * *").hours == {9}


def test_range() -> None:
    assert parse("10-15 * * * *").minutes == {10, 11, 12, 13, 14, 15}
    assert parse("* 9-9 * * *").hours == {9}


def test_step_over_star() -> None:
    assert parse("*/15 * * * *").minutes == {0, 15, 30, 45}
    assert parse("* */5 * * *").hours == {0, 5, 10, 15, 20}
    # Steps start at the field's minimum, which is 1 for days and months.
    assert parse("* * */10 * *").days == {1, 11, 21, 31}
    assert parse("* * * */4 *").months == {1, 5, 9}
    assert parse("* * * * */2").weekdays == {0, 2, 4, 6}


def test_step_of_one_is_the_full_range() -> None:
    assert parse("*/1 * * * *").minutes == set(range(60))


def test_step_larger_than_the_range_keeps_the_start() -> None:
    assert parse("*/90 * * * *").minutes == {0}


def test_range_with_step() -> None:
    assert parse("10-30/7 * * * *").minutes == {10, 17, 24}
    assert parse("* 1-23/11 * * *").hours == {1, 12, 23}


def test_literal_with_step_runs_to_the_field_maximum() -> None:
    assert parse("5/20 * * * *").minutes == {5, 25, 45}
    assert parse("* * 20/5 * *").days == {20, 25, 30}
    assert parse("* * * 11/1 *").months == {11, 12}
    # Day of week ends at Saturday (6), not at the alias 7.
    assert parse("* * * * 1/2").weekdays == {1, 3, 5}


def test_lists_of_every_form() -> None:
    assert parse("1,2,10-12,*/20,50/5 * * * *").minutes == {
        0,
        1,
        2,
        10,
        11,
        12,
        20,
        40,
        50,
        55,
    }
    assert parse("* 1-3/2,5 * * *").hours == {1, 3, 5}


def test_list_duplicates_collapse() -> None:
    assert parse("1,1,1-2 * * * *").minutes == {1, 2}


def test_month_names_are_case_insensitive() -> None:
    assert parse("* * * JAN *").months == {1}
    assert parse("* * * dec *").months == {12}
    assert parse("* * * Jun,aug *").months == {6, 8}


def test_month_name_ranges_and_steps() -> None:
    assert parse("* * * MAR-MAY *").months == {3, 4, 5}
    assert parse("* * * jan-dec/3 *").months == {1, 4, 7, 10}
    assert parse("* * * OCT/1 *").months == {10, 11, 12}
    assert parse("* * * FEB-4 *").months == {2, 3, 4}


def test_weekday_names() -> None:
    assert parse("* * * * SUN").weekdays == {0}
    assert parse("* * * * sat").weekdays == {6}
    assert parse("* * * * MON-FRI").weekdays == {1, 2, 3, 4, 5}
    assert parse("* * * * Tue,thu").weekdays == {2, 4}
    assert parse("* * * * sun-sat").weekdays == set(range(7))


def test_seven_is_sunday() -> None:
    assert parse("* * * * 7").weekdays == {0}
    assert parse("* * * * 5-7").weekdays == {5, 6, 0}
    assert parse("* * * * FRI-7").weekdays == {5, 6, 0}
    assert parse("* * * * 0,7").weekdays == {0}
    assert parse("* * * * 7").matches(datetime(2024, 1, 7, 0, 0))  # a Sunday
    assert not parse("* * * * 7").matches(datetime(2024, 1, 6, 0, 0))  # a Saturday


@pytest.mark.parametrize(
    ("nickname", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_nicknames(nickname: str, expanded: str) -> None:
    assert field_sets(nickname) == field_sets(expanded)
    assert field_sets(nickname.upper()) == field_sets(expanded)
    assert parse(nickname).source == nickname


def test_nicknames_differ_from_each_other() -> None:
    assert parse("@weekly").weekdays == {0}
    assert parse("@hourly").hours == set(range(24))
    assert parse("@monthly").months == set(range(1, 13))
    assert parse("@yearly").months == {1}


def test_whitespace_is_tolerated() -> None:
    assert field_sets("  1   2 3\t4  5 \n") == ({1}, {2}, {3}, {4}, {5})
    assert field_sets("  @daily  ") == field_sets("0 0 * * *")


def test_source_is_kept() -> None:
    assert parse("*/5 * * * *").source == "*/5 * * * *"
    assert "*/5 * * * *" in repr(parse("*/5 * * * *"))


def test_expression_is_frozen_and_hashable() -> None:
    expr = parse("1 2 3 4 5")
    with pytest.raises(AttributeError):
        setattr(expr, "minutes", frozenset({9}))
    assert expr == parse("1 2 3 4 5")
    assert hash(expr) == hash(parse("1 2 3 4 5"))
    assert isinstance(expr.minutes, frozenset)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("61 * * * *", "minute field '61' is out of range 0-59"),
        ("* 24 * * *", "hour field '24' is out of range 0-23"),
        ("* * 0 * *", "day of month field '0' is out of range 1-31"),
        ("* * 32 * *", "day of month field '32' is out of range 1-31"),
        ("* * * 0 *", "month field '0' is out of range 1-12"),
        ("* * * 13 *", "month field '13' is out of range 1-12"),
        ("* * * * 8", "day of week field '8' is out of range 0-7"),
        ("1-60 * * * *", "minute field '60' is out of range 0-59"),
        ("1,2,99 * * * *", "minute field '99' is out of range 0-59"),
    ],
)
def test_out_of_range_values(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert str(info.value) == f"invalid cron expression {text!r}: {message}"


def test_out_of_range_message_matches_the_documented_format() -> None:
    with pytest.raises(ValueError) as info:
        parse("61 * * * *")
    assert str(info.value) == (
        "invalid cron expression '61 * * * *': minute field '61' is out of range 0-59"
    )


@pytest.mark.parametrize(
    ("text", "count"),
    [("* * * *", 4), ("* * * * * *", 6), ("*", 1), ("0 0 * * * 2024", 6)],
)
def test_wrong_number_of_fields(text: str, count: int) -> None:
    with pytest.raises(ValueError, match=f"expected 5 fields, got {count}"):
        parse(text)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("30-10 * * * *", "minute", "30-10"),
        ("* 5-2 * * *", "hour", "5-2"),
        ("* * 20-10 * *", "day of month", "20-10"),
        ("* * * DEC-JAN *", "month", "DEC-JAN"),
        ("* * * * SAT-MON", "day of week", "SAT-MON"),
        ("* * * * 7-1", "day of week", "7-1"),
    ],
)
def test_reversed_ranges(text: str, field: str, value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert f"{field} field {value!r}" in str(info.value)
    assert "greater than its end" in str(info.value)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("*/0 * * * *", "minute", "*/0"),
        ("* 1-5/0 * * *", "hour", "1-5/0"),
        ("* * 3/0 * *", "day of month", "3/0"),
    ],
)
def test_zero_step(text: str, field: str, value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert f"{field} field {value!r} has a zero step" in str(info.value)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("a * * * *", "minute", "a"),
        ("* x * * *", "hour", "x"),
        ("* * MON * *", "day of month", "MON"),
        ("* * * MON *", "month", "MON"),
        ("* * * * JAN", "day of week", "JAN"),
        ("* * * * SUNDAY", "day of week", "SUNDAY"),
        ("* * * JANUARY *", "month", "JANUARY"),
    ],
)
def test_unknown_words(text: str, field: str, value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert f"{field} field {value!r}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("-5 * * * *", "minute", "-5"),
        ("1- * * * *", "minute", "1-"),
        ("*/ * * * *", "minute", "*/"),
        ("*/x * * * *", "minute", "*/x"),
        ("1-2-3 * * * *", "minute", "1-2-3"),
        ("*-5 * * * *", "minute", "*-5"),
        ("? * * * *", "minute", "?"),
        ("* 1/2/3 * * *", "hour", "1/2/3"),
        ("* * L * *", "day of month", "L"),
        ("* * * * 1#2", "day of week", "1#2"),
        ("* * 1.5 * *", "day of month", "1.5"),
        ("* * * * */-1", "day of week", "*/-1"),
        ("* * \u0661 * *", "day of month", "\u0661"),  # ARABIC-INDIC DIGIT ONE
    ],
)
def test_garbage_tokens(text: str, field: str, value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse(text)
    assert f"{field} field {value!r}" in str(info.value)
    assert str(info.value).startswith(f"invalid cron expression {text!r}: ")


@pytest.mark.parametrize("text", ["1,,2 * * * *", ",1 * * * *", "1, * * * *"])
def test_empty_list_items(text: str) -> None:
    with pytest.raises(ValueError, match=r"minute field .* has an empty list item"):
        parse(text)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_expression(text: str) -> None:
    with pytest.raises(ValueError, match="the expression is empty"):
        parse(text)


def test_reboot_is_not_supported() -> None:
    with pytest.raises(ValueError, match="@reboot is not supported"):
        parse("@reboot")


def test_unknown_nickname() -> None:
    with pytest.raises(ValueError, match="unknown nickname '@often'"):
        parse("@often")
    with pytest.raises(ValueError, match="unknown nickname"):
        parse("@daily 5")


@pytest.mark.parametrize("value", [None, 5, b"* * * * *", ["*"] * 5])
def test_non_string_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match="must be a string"):
        Expression.parse(value)


# --------------------------------------------------------------------------- matching


def test_matches_uses_every_field() -> None:
    expr = parse("30 9 15 6 *")
    assert expr.matches(datetime(2024, 6, 15, 9, 30))
    assert not expr.matches(datetime(2024, 6, 15, 9, 31))
    assert not expr.matches(datetime(2024, 6, 15, 10, 30))
    assert not expr.matches(datetime(2024, 6, 16, 9, 30))
    assert not expr.matches(datetime(2024, 7, 15, 9, 30))


def test_matches_ignores_seconds() -> None:
    assert parse("30 9 * * *").matches(datetime(2024, 6, 15, 9, 30, 59, 999999))


def test_matches_uses_the_wall_clock_of_aware_datetimes() -> None:
    expr = parse("0 9 * * *")
    paris = datetime(2024, 1, 10, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert expr.matches(paris)
    assert not expr.matches(paris.astimezone(UTC))


def test_weekday_only() -> None:
    expr = parse("0 0 * * MON")
    assert expr.matches(datetime(2024, 1, 1))  # Monday
    assert not expr.matches(datetime(2024, 1, 2))  # Tuesday
    assert expr.matches(datetime(2024, 1, 8))


def test_sunday_is_zero() -> None:
    expr = parse("0 0 * * 0")
    assert expr.matches(datetime(2024, 1, 7))  # Sunday
    assert not expr.matches(datetime(2024, 1, 1))  # Monday


def test_day_of_month_only() -> None:
    expr = parse("0 0 13 * *")
    assert expr.matches(datetime(2024, 9, 13))  # a Friday
    assert expr.matches(datetime(2024, 1, 13))  # a Saturday
    assert not expr.matches(datetime(2024, 1, 12))  # a Friday, but not the 13th


def test_both_day_fields_restricted_match_either() -> None:
    # Vixie cron: "the 13th, and also every Friday".
    expr = parse("0 0 13 * FRI")
    assert expr.matches(datetime(2024, 1, 13))  # 13th, a Saturday
    assert expr.matches(datetime(2024, 1, 12))  # a Friday, the 12th
    assert expr.matches(datetime(2024, 9, 13))  # both
    assert not expr.matches(datetime(2024, 1, 11))  # neither (Thursday the 11th)


def test_either_rule_applies_to_steps() -> None:
    expr = parse("0 0 */10 * 1")  # days 1, 11, 21, 31 or Mondays
    assert expr.matches(datetime(2024, 1, 11))  # Thursday the 11th
    assert expr.matches(datetime(2024, 1, 15))  # Monday the 15th
    assert not expr.matches(datetime(2024, 1, 16))


def test_either_rule_still_requires_the_month() -> None:
    expr = parse("0 0 1 JAN MON")
    assert expr.matches(datetime(2024, 1, 8))  # a Monday in January
    assert not expr.matches(datetime(2024, 2, 5))  # a Monday in February
    assert not expr.matches(datetime(2024, 2, 1))


def test_weekday_star_with_seven_days_is_unrestricted() -> None:
    # 0-7 covers every weekday, so only the day of month applies.
    expr = parse("0 0 13 * 0-7")
    assert expr.matches(datetime(2024, 1, 13))
    assert not expr.matches(datetime(2024, 1, 12))


# --------------------------------------------------------------------------- next_after


def test_next_after_is_strictly_after() -> None:
    expr = parse("* * * * *")
    assert expr.next_after(datetime(2024, 1, 1, 10, 0)) == datetime(2024, 1, 1, 10, 1)


def test_next_after_zeroes_seconds() -> None:
    expr = parse("* * * * *")
    start = datetime(2024, 1, 1, 10, 0, 59, 123456)
    assert expr.next_after(start) == datetime(2024, 1, 1, 10, 1)
    assert parse("0 * * * *").next_after(datetime(2024, 1, 1, 10, 0, 1)) == datetime(
        2024, 1, 1, 11, 0
    )


def test_next_after_within_the_hour() -> None:
    expr = parse("*/15 * * * *")
    assert expr.next_after(datetime(2024, 1, 1, 10, 7)) == datetime(2024, 1, 1, 10, 15)
    assert expr.next_after(datetime(2024, 1, 1, 10, 15)) == datetime(2024, 1, 1, 10, 30)


def test_next_after_crosses_the_hour() -> None:
    expr = parse("5 * * * *")
    assert expr.next_after(datetime(2024, 1, 1, 10, 30)) == datetime(2024, 1, 1, 11, 5)


def test_next_after_resets_minutes_when_moving_to_a_later_hour() -> None:
    expr = parse("10,50 12,18 * * *")
    assert expr.next_after(datetime(2024, 1, 1, 12, 30)) == datetime(2024, 1, 1, 12, 50)
    assert expr.next_after(datetime(2024, 1, 1, 12, 55)) == datetime(2024, 1, 1, 18, 10)
    assert expr.next_after(datetime(2024, 1, 1, 13, 0)) == datetime(2024, 1, 1, 18, 10)


def test_next_after_crosses_the_day() -> None:
    expr = parse("30 9 * * *")
    assert expr.next_after(datetime(2024, 1, 1, 9, 30)) == datetime(2024, 1, 2, 9, 30)
    assert expr.next_after(datetime(2024, 1, 1, 23, 59)) == datetime(2024, 1, 2, 9, 30)


def test_next_after_crosses_the_month() -> None:
    expr = parse("0 0 1 * *")
    assert expr.next_after(datetime(2024, 1, 15, 12, 0)) == datetime(2024, 2, 1)
    assert expr.next_after(datetime(2024, 4, 30, 23, 59)) == datetime(2024, 5, 1)


def test_next_after_skips_months_without_the_day() -> None:
    expr = parse("0 0 31 * *")
    assert expr.next_after(datetime(2024, 1, 31)) == datetime(2024, 3, 31)
    assert expr.next_after(datetime(2024, 4, 1)) == datetime(2024, 5, 31)


def test_next_after_crosses_the_year() -> None:
    assert parse("@yearly").next_after(datetime(2024, 12, 31, 23, 59)) == datetime(2025, 1, 1)
    assert parse("0 0 1 1 *").next_after(datetime(2024, 1, 1)) == datetime(2025, 1, 1)
    assert parse("59 23 31 12 *").next_after(datetime(2024, 6, 1)) == datetime(2024, 12, 31, 23, 59)


def test_next_after_leap_day() -> None:
    expr = parse("0 0 29 2 *")
    assert expr.next_after(datetime(2023, 3, 1)) == datetime(2024, 2, 29)
    assert expr.next_after(datetime(2024, 2, 29)) == datetime(2028, 2, 29)
    # 2100 is not a leap year: the next leap day after 2096 is in 2104.
    assert expr.next_after(datetime(2096, 3, 1)) == datetime(2104, 2, 29)


def test_next_after_the_end_of_february() -> None:
    expr = parse("0 12 28-31 2 *")
    assert expr.next_after(datetime(2023, 2, 28, 12, 0)) == datetime(2024, 2, 28, 12, 0)
    assert expr.next_after(datetime(2024, 2, 28, 12, 0)) == datetime(2024, 2, 29, 12, 0)


def test_next_after_weekday() -> None:
    expr = parse("0 9 * * MON-FRI")
    # Friday 2024-01-05 after 9:00 -> Monday 2024-01-08.
    assert expr.next_after(datetime(2024, 1, 5, 9, 0)) == datetime(2024, 1, 8, 9, 0)


def test_next_after_uses_the_either_rule() -> None:
    expr = parse("0 0 13 * FRI")
    assert expr.next_after(datetime(2024, 1, 1)) == datetime(2024, 1, 5)  # Friday
    assert expr.next_after(datetime(2024, 1, 12)) == datetime(2024, 1, 13)  # the 13th


def test_next_after_keeps_tzinfo_and_wall_clock() -> None:
    tz = ZoneInfo("America/New_York")
    start = datetime(2024, 7, 1, 8, 30, tzinfo=tz)
    result = parse("0 9 * * *").next_after(start)
    assert result == datetime(2024, 7, 1, 9, 0, tzinfo=tz)
    assert result.tzinfo is tz
    utc_result = parse("0 9 * * *").next_after(datetime(2024, 7, 1, 8, 30, tzinfo=UTC))
    assert utc_result.tzinfo is UTC
    assert utc_result == datetime(2024, 7, 1, 9, 0, tzinfo=UTC)


def test_next_after_naive_stays_naive() -> None:
    assert parse("@hourly").next_after(datetime(2024, 1, 1, 0, 0)).tzinfo is None


@pytest.mark.parametrize("text", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_next_after_impossible_expressions(text: str) -> None:
    with pytest.raises(ValueError, match="no match"):
        parse(text).next_after(datetime(2024, 1, 1))


def test_next_after_near_the_end_of_time() -> None:
    with pytest.raises(ValueError, match="no match"):
        parse("0 0 1 1 *").next_after(datetime(9999, 6, 1))
    with pytest.raises(ValueError, match="no match"):
        parse("* * * * *").next_after(datetime(9999, 12, 31, 23, 59))


def test_next_after_impossible_is_fast() -> None:
    # A minute-by-minute search over years would take far longer than this.
    expr = parse("0 0 31 2 *")
    for _ in range(20):
        with pytest.raises(ValueError):
            expr.next_after(datetime(2024, 1, 1))


def brute_force_next(expr: Expression, start: datetime) -> datetime:
    candidate = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while not expr.matches(candidate):
        candidate += timedelta(minutes=1)
    return candidate


@pytest.mark.parametrize(
    "text",
    [
        "*/7 */5 * * *",
        "13 2-4 * * *",
        "0 0 10-12 * 2",
        "45 23 * * SAT",
        "0 12 1,15 * *",
        "*/20 6-8 * JAN,MAR *",
        "0 0 */9 * 5-7",
    ],
)
def test_next_after_agrees_with_a_brute_force_search(text: str) -> None:
    expr = parse(text)
    rng = random.Random(text)
    for _ in range(15):
        start = datetime(2024, 1, 1) + timedelta(minutes=rng.randrange(365 * 24 * 60))
        start = start.replace(second=rng.randrange(60))
        expected = brute_force_next(expr, start)
        assert expr.next_after(start) == expected
        assert expr.matches(expected)


# --------------------------------------------------------------------------- CronEntry


class Mailer:
    _opts: ClassVar[dict[str, Any]] = {"queue": "mailers", "max_attempts": 5}


class Reporter:
    pass


def expected_name(expr: str, worker: type, opts: str) -> str:
    key = f"{expr}:{worker.__module__}.{worker.__qualname__}:{opts}"
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def test_build_from_string() -> None:
    entry = CronEntry.build("*/5 * * * *", Mailer)
    assert entry.expression == parse("*/5 * * * *")
    assert entry.worker is Mailer
    assert entry.timezone is None


def test_build_from_dict() -> None:
    entry = CronEntry.build({"expr": "0 9 * * *", "timezone": "Europe/Paris"}, Mailer)
    assert entry.expression == parse("0 9 * * *")
    assert entry.timezone == "Europe/Paris"
    assert entry.worker is Mailer


def test_build_from_dict_without_timezone() -> None:
    entry = CronEntry.build({"expr": "@daily"}, Mailer)
    assert entry.timezone is None
    assert entry.expression.hours == {0}
    assert CronEntry.build({"expr": "@daily", "timezone": None}, Mailer).timezone is None


def test_build_rejects_unknown_keys_and_names_them() -> None:
    with pytest.raises(ValueError) as info:
        CronEntry.build({"expr": "* * * * *", "tz": "UTC", "args": {}}, Mailer)
    assert "args" in str(info.value)
    assert "tz" in str(info.value)


def test_build_requires_expr() -> None:
    with pytest.raises(ValueError, match="'expr' is required"):
        CronEntry.build({"timezone": "UTC"}, Mailer)


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "../etc/passwd", "/etc/localtime"])
def test_build_rejects_unknown_timezones(tz: str) -> None:
    with pytest.raises(ValueError) as info:
        CronEntry.build({"expr": "* * * * *", "timezone": tz}, Mailer)
    assert f"unknown timezone {tz!r}" in str(info.value)


def test_build_rejects_a_timezone_directory() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'America'"):
        CronEntry.build({"expr": "* * * * *", "timezone": "America"}, Mailer)


def test_build_propagates_expression_errors() -> None:
    with pytest.raises(ValueError, match="minute field '61'"):
        CronEntry.build("61 * * * *", Mailer)
    with pytest.raises(ValueError, match="hour field '25'"):
        CronEntry.build({"expr": "0 25 * * *"}, Mailer)


def test_build_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        CronEntry.build(cast(Any, ["* * * * *"]), Mailer)
    with pytest.raises(TypeError):
        CronEntry.build({"expr": 5}, Mailer)


def test_name_is_the_documented_hash() -> None:
    entry = CronEntry.build("*/5 * * * *", Mailer)
    opts = '{"max_attempts": 5, "queue": "mailers"}'
    assert entry.name == expected_name("*/5 * * * *", Mailer, opts)
    assert len(entry.name) == 8
    assert int(entry.name, 16) >= 0


def test_name_without_opts_uses_an_empty_object() -> None:
    entry = CronEntry.build("@hourly", Reporter)
    assert entry.name == expected_name("@hourly", Reporter, "{}")


def test_name_uses_default_str_for_non_json_opts() -> None:
    class Odd:
        _opts: ClassVar[dict[str, Any]] = {"when": datetime(2024, 1, 1)}

    entry = CronEntry.build("@hourly", Odd)
    assert entry.name == expected_name("@hourly", Odd, '{"when": "2024-01-01 00:00:00"}')


def test_name_is_stable() -> None:
    first = CronEntry.build("0 9 * * *", Mailer)
    second = CronEntry.build({"expr": "0 9 * * *", "timezone": "UTC"}, Mailer)
    assert first.name == second.name == CronEntry.build("0 9 * * *", Mailer).name


def test_name_differs_for_different_expressions() -> None:
    assert CronEntry.build("0 9 * * *", Mailer).name != CronEntry.build("0 10 * * *", Mailer).name


def test_name_differs_for_different_workers() -> None:
    assert CronEntry.build("0 9 * * *", Mailer).name != CronEntry.build("0 9 * * *", Reporter).name


def test_name_differs_for_different_opts() -> None:
    class A:
        _opts: ClassVar[dict[str, Any]] = {"queue": "a"}

    first = CronEntry.build("0 9 * * *", A)
    A._opts = {"queue": "b"}
    assert CronEntry.build("0 9 * * *", A).name != first.name


def test_name_ignores_opts_key_order() -> None:
    class A:
        _opts: ClassVar[dict[str, Any]] = {"queue": "a", "priority": 1}

    first = CronEntry.build("0 9 * * *", A)
    A._opts = {"priority": 1, "queue": "a"}
    assert CronEntry.build("0 9 * * *", A).name == first.name


def test_entry_is_frozen() -> None:
    entry = CronEntry.build("@daily", Mailer)
    with pytest.raises(AttributeError):
        setattr(entry, "name", "x")


# --------------------------------------------------------------------------- is_due


def test_is_due_in_utc_by_default() -> None:
    entry = CronEntry.build("0 9 * * *", Mailer)
    assert entry.is_due(datetime(2024, 1, 10, 9, 0, tzinfo=UTC))
    assert not entry.is_due(datetime(2024, 1, 10, 10, 0, tzinfo=UTC))


def test_is_due_ignores_seconds() -> None:
    entry = CronEntry.build("0 9 * * *", Mailer)
    assert entry.is_due(datetime(2024, 1, 10, 9, 0, 42, tzinfo=UTC))


def test_is_due_in_the_entry_timezone_follows_dst() -> None:
    entry = CronEntry.build({"expr": "0 9 * * *", "timezone": "America/New_York"}, Mailer)
    # Winter: EST is UTC-5.
    assert entry.is_due(datetime(2024, 1, 15, 14, 0, tzinfo=UTC))
    assert not entry.is_due(datetime(2024, 1, 15, 13, 0, tzinfo=UTC))
    assert not entry.is_due(datetime(2024, 1, 15, 9, 0, tzinfo=UTC))
    # Summer: EDT is UTC-4.
    assert entry.is_due(datetime(2024, 7, 15, 13, 0, tzinfo=UTC))
    assert not entry.is_due(datetime(2024, 7, 15, 14, 0, tzinfo=UTC))


def test_is_due_uses_the_local_date_for_day_fields() -> None:
    # 02:00 UTC on Tuesday is still 21:00 Monday in New York (EST).
    entry = CronEntry.build({"expr": "0 21 * * MON", "timezone": "America/New_York"}, Mailer)
    assert entry.is_due(datetime(2024, 1, 16, 2, 0, tzinfo=UTC))


def test_is_due_uses_the_default_timezone_when_the_entry_has_none() -> None:
    entry = CronEntry.build("0 9 * * *", Mailer)
    assert entry.is_due(datetime(2024, 1, 15, 8, 0, tzinfo=UTC), default_timezone="Europe/Paris")
    assert not entry.is_due(datetime(2024, 1, 15, 9, 0, tzinfo=UTC), "Europe/Paris")


def test_is_due_prefers_the_entry_timezone_over_the_default() -> None:
    entry = CronEntry.build({"expr": "0 9 * * *", "timezone": "Asia/Tokyo"}, Mailer)
    assert entry.is_due(datetime(2024, 1, 15, 0, 0, tzinfo=UTC), default_timezone="Europe/Paris")


def test_is_due_accepts_other_aware_datetimes() -> None:
    entry = CronEntry.build("0 9 * * *", Mailer)
    plus_two = timezone(timedelta(hours=2))
    assert entry.is_due(datetime(2024, 1, 15, 11, 0, tzinfo=plus_two))


def test_is_due_rejects_naive_datetimes() -> None:
    entry = CronEntry.build("0 9 * * *", Mailer)
    with pytest.raises(ValueError, match="aware"):
        entry.is_due(datetime(2024, 1, 15, 9, 0))


def test_is_due_rejects_an_unknown_default_timezone() -> None:
    entry = CronEntry.build("0 9 * * *", Mailer)
    with pytest.raises(ValueError, match="unknown timezone 'Nowhere/Land'"):
        entry.is_due(datetime(2024, 1, 15, 9, 0, tzinfo=UTC), "Nowhere/Land")
