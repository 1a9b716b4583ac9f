"""The supervisor's restart backoff and status messages (its processes: test_processes.py)."""

from __future__ import annotations

import signal

from oban._supervisor import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    STABLE_AFTER,
    Supervisor,
    _Child,
    describe_status,
    supervisor_pid,
)


def test_restart_delay_doubles_up_to_the_maximum() -> None:
    child = _Child(1, ["true"], None)

    delays = [Supervisor._next_delay(child, ran=1.0) for _ in range(9)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert (delays[0], delays[-1]) == (BACKOFF_MIN, BACKOFF_MAX)


def test_restart_delay_starts_over_after_a_child_ran_long_enough() -> None:
    child = _Child(1, ["true"], None)
    for _ in range(5):
        Supervisor._next_delay(child, ran=1.0)

    assert Supervisor._next_delay(child, ran=STABLE_AFTER) == BACKOFF_MIN
    assert Supervisor._next_delay(child, ran=1.0) == 2 * BACKOFF_MIN


def test_exit_statuses_are_described() -> None:
    assert describe_status(0) == "exited with status 0"
    assert describe_status(3) == "exited with status 3"
    assert describe_status(-signal.SIGKILL) == "was killed by SIGKILL"


def test_supervisor_pid_comes_from_the_environment() -> None:
    assert supervisor_pid({}) is None
    assert supervisor_pid({"OBAN_SUPERVISOR_PID": "123"}) == 123
    assert supervisor_pid({"OBAN_SUPERVISOR_PID": "x"}) is None


def test_a_child_without_a_node_name_is_named_as_its_node_names_itself() -> None:
    assert _Child(2, ["true"], "web-2").label == "process 2 (node web-2, pid None)"
    assert _Child(1, ["true"], None).label == "process 1 (node ?, pid None)"
