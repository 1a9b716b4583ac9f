"""``oban start --processes N``: N node processes under one supervisor.

A CPU-bound sync job holds the GIL, so one process uses one core however high its queue
limits. The supervisor runs N children, each ``python -m oban start ... --processes 1``: a full
node with its own producers, pool and LISTEN connection. The supervisor runs no queue itself.

- A child that exits while the supervisor is not stopping is restarted after a backoff: 0.5 s,
  doubling up to 30 s, back to 0.5 s once a child has run for 60 s. Each exit is logged with
  its status.
- On SIGTERM or SIGINT it forwards SIGTERM to every child and waits for them all (each stops
  gracefully, within its own deadline of twice ``shutdown_grace_period``), then exits 0, or 1
  if any child exited with another status.
- On a second SIGTERM or SIGINT it kills every child (SIGKILL) and exits 1 at once. A repeat
  that comes within ``SIGNAL_COPY_WINDOW`` (0.5 s) of the first is a copy of it, not a second
  request: ``timeout`` sends its TERM to the child and then to the child's process group, and
  init systems that signal a whole group do the same.

Each child runs in a process group of its own, so a Ctrl-C in a terminal reaches the
supervisor alone, which forwards it once. A child knows it is supervised by
``OBAN_SUPERVISOR_PID``: it then treats every further SIGTERM/SIGINT as the first (when
systemd signals the whole control group, a child gets the supervisor's copy too; the
supervisor does the killing on a second signal), and it stops gracefully as soon as its parent
is no longer the supervisor (a supervisor killed with SIGKILL leaves no node running).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "SIGNAL_COPY_WINDOW",
    "STABLE_AFTER",
    "SUPERVISOR_ENV",
    "Supervisor",
    "describe_status",
    "is_signal_copy",
    "supervisor_pid",
]

#: Set in every child's environment: the supervisor's pid.
SUPERVISOR_ENV = "OBAN_SUPERVISOR_PID"
#: The first restart delay; it doubles with every exit up to BACKOFF_MAX.
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
#: A child that ran this long before it exited is restarted after BACKOFF_MIN again.
STABLE_AFTER = 60.0
#: How often the supervisor looks at its children (signals interrupt the wait).
_TICK = 0.05
#: A SIGTERM/SIGINT this soon after the first is a duplicate delivery, not a second request.
SIGNAL_COPY_WINDOW = 0.5
#: How long a second signal waits for killed children to be reaped before exiting.
_REAP_AFTER_KILL = 1.0

logger = logging.getLogger("oban.supervisor")


def supervisor_pid(env: Mapping[str, str] | None = None) -> int | None:
    """The supervisor's pid when this process is one of its children, else ``None``."""
    raw = (os.environ if env is None else env).get(SUPERVISOR_ENV, "")
    return int(raw) if raw.strip().isdigit() else None


def is_signal_copy(first_at: float, now: float) -> bool:
    """Whether a signal at ``now`` (monotonic) repeats the one handled at ``first_at``."""
    return now - first_at < SIGNAL_COPY_WINDOW


def describe_status(code: int) -> str:
    """``exited with status 1`` or ``was killed by SIGKILL``, from a ``Popen.returncode``."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


@dataclass
class _Child:
    index: int
    argv: list[str]
    node: str | None  # the name given with --node; None: the child's default, hostname.pid
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = BACKOFF_MIN
    restart_at: float | None = None

    @property
    def label(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        node = self.node or (f"{socket.gethostname()}.{pid}" if pid is not None else "?")
        return f"process {self.index} (node {node}, pid {pid})"

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    """Runs one child per command and keeps them running until SIGTERM/SIGINT.

    ``commands`` holds, per child, its argv and its node name (``None`` when the child picks
    its default name). :meth:`run` blocks and returns the exit status for the supervisor.
    """

    def __init__(
        self, commands: Sequence[tuple[list[str], str | None]], *, env: Mapping[str, str]
    ) -> None:
        self._children = [
            _Child(index, list(argv), node) for index, (argv, node) in enumerate(commands, 1)
        ]
        self._env = {**env, SUPERVISOR_ENV: str(os.getpid())}
        self._signals = 0
        self._first_signal_at = 0.0

    def run(self) -> int:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            logger.info(
                "supervisor (pid %d) starting %d node processes", os.getpid(), len(self._children)
            )
            for child in self._children:
                if self._signals:
                    break
                self._spawn(child)
            while not self._signals:
                self._tick()
                time.sleep(_TICK)
            return self._stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # Running

    def _spawn(self, child: _Child) -> None:
        try:
            child.proc = subprocess.Popen(  # noqa: S603 (our own command line)
                child.argv, env=self._env, stdin=subprocess.DEVNULL, process_group=0
            )
        except OSError as error:
            delay = self._next_delay(child, ran=0.0)
            logger.error(
                "process %d could not start (%s); retrying in %.1f s", child.index, error, delay
            )
            child.restart_at = time.monotonic() + delay
            return
        child.started = time.monotonic()
        logger.info("%s started", child.label)

    def _tick(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if (
                child.proc is not None
                and child.restart_at is None
                and child.proc.poll() is not None
            ):
                ran = now - child.started
                delay = self._next_delay(child, ran=ran)
                logger.warning(
                    "%s %s after %.1f s; restarting it in %.1f s",
                    child.label,
                    describe_status(child.proc.returncode),
                    ran,
                    delay,
                )
                child.restart_at = now + delay
            elif child.restart_at is not None and now >= child.restart_at and not self._signals:
                child.restart_at = None
                self._spawn(child)

    @staticmethod
    def _next_delay(child: _Child, *, ran: float) -> float:
        """The delay before restarting ``child``, which ran ``ran`` seconds; doubles the next."""
        if ran >= STABLE_AFTER:
            child.backoff = BACKOFF_MIN
        delay = child.backoff
        child.backoff = min(child.backoff * 2, BACKOFF_MAX)
        return delay

    # Stopping

    def _stop(self) -> int:
        """Forward SIGTERM to every running child and wait for them all; 0 if all exit 0."""
        running = [child for child in self._children if child.proc and child.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.proc.pid, signal.SIGTERM)
        failed = 0
        for child in running:
            assert child.proc is not None
            while child.proc.poll() is None:
                time.sleep(_TICK)  # a second signal interrupts this and exits
            code = child.proc.returncode
            # Killed by the SIGTERM itself: the child had not set up its handlers, so it ran
            # no node yet.
            clean = code in (0, -signal.SIGTERM)
            failed += not clean
            log = logger.info if clean else logger.warning
            log("%s %s", child.label, describe_status(code))
        if failed:
            logger.warning("stopped; %d of %d processes did not exit cleanly", failed, len(running))
            return 1
        logger.info("stopped")
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if not self._signals:
            self._signals = 1
            self._first_signal_at = now
            logger.info("received %s, stopping every node process gracefully", name)
            return
        if is_signal_copy(self._first_signal_at, now):
            logger.info("received %s again at once; a copy of the first, still stopping", name)
            return
        self._signals += 1
        logger.warning("second %s: killing every node process without waiting for jobs", name)
        pids = [child.proc.pid for child in self._children if child.running() and child.proc]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Reap them (no zombie outlives us), without Popen: its lock may be held by the
        # interrupted main loop.
        deadline = time.monotonic() + _REAP_AFTER_KILL
        waiting = set(pids)
        while waiting and time.monotonic() < deadline:
            for pid in list(waiting):
                try:
                    done, _status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    waiting.discard(pid)
            if waiting:
                time.sleep(0.01)
        logging.shutdown()
        os._exit(1)
