"""``isolation="process"``: each job of such a worker runs in a child process.

A thread cannot be interrupted, so a sync job's ``timeout`` and ``cancel_job`` only stop
waiting for it; in a child process they stop it for real: the child is killed (Elixir Oban's
semantics, where a job is a process). Children are reused from job to job (starting Python and
importing the worker's module costs far more than a job round trip), one job at a time each;
a killed or crashed child is replaced by a fresh one for the next job.

Children are ``python -m oban._isolation_child`` processes speaking length-prefixed pickles
over their stdin and (a copy of) their stdout; see that module. Each event loop has its own
pool (asyncio pipes belong to a loop); ``close_pool`` stops the idle children of the current
loop, and any child still alive when the interpreter exits is killed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pickle
import struct
import sys
import weakref
from typing import Any

from .errors import WorkerCrashedError
from .job import Job

_HEADER = struct.Struct(">I")

#: Every child started by this process, killed at exit if still alive.
_children: weakref.WeakSet[_Child] = weakref.WeakSet()
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()


class JobError(Exception):
    """process() raised in the child: the exception's type name, message and traceback."""

    def __init__(self, type_name: str, message: str, formatted: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.formatted = formatted

    def __str__(self) -> str:
        return f"{self.type_name}: {self.args[0]}" if self.args[0] else self.type_name


class _Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> _Child:
        # The child imports workers as this process does: from the same sys.path, in the same
        # order. -P keeps Python from putting the working directory first (a planted
        # pickle.py there would run); an empty entry (the working directory) goes last.
        paths = [p for p in sys.path if p] + ([os.getcwd()] if "" in sys.path else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "oban._isolation_child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        child = cls(proc)
        _children.add(child)
        return child

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def call(self, request: dict[str, Any]) -> tuple[Any, ...]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(_HEADER.pack(len(data)) + data)
        await self.proc.stdin.drain()
        try:
            header = await self.proc.stdout.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            reply = await self.proc.stdout.readexactly(size)
        except asyncio.IncompleteReadError:
            status = await self.proc.wait()
            raise WorkerCrashedError(
                f"the job's process exited with status {status} before it returned"
            ) from None
        return tuple(pickle.loads(reply))  # noqa: S301 - our own child's reply

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()

    async def end(self) -> None:
        """Kill the child and wait (up to 2 s) until it is gone: a job that was stopped
        leaves no process behind, not even for a moment."""
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), 2.0)

    async def close(self) -> None:
        """Ask an idle child to exit (EOF on its stdin); kill it if it does not."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 2.0)
        except TimeoutError:
            self.kill()
            await self.proc.wait()


class _Pool:
    def __init__(self) -> None:
        self._idle: list[_Child] = []

    async def run(self, module: str, job: Job) -> Any:
        child = await self._acquire()
        reusable = False
        try:
            reply = await child.call({"module": module, "fields": _fields(job)})
            reusable = True
        finally:
            # Cancelled (timeout, cancel_job, shutdown) or broken: the child dies with the job.
            if reusable and child.alive:
                self._idle.append(child)
            else:
                await child.end()
        if reply[0] == "ok":
            return reply[1]
        raise JobError(reply[1], reply[2], reply[3])

    async def _acquire(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
        return await _Child.start()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(child.close() for child in idle))


def _fields(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "worker": job.worker,
        "queue": job.queue,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "args": job.args,
        "meta": job.meta,
        "errors": job.errors,
        "tags": job.tags,
        "attempted_by": job.attempted_by,
        "state": str(job.state),
        "inserted_at": job.inserted_at,
        "attempted_at": job.attempted_at,
        "scheduled_at": job.scheduled_at,
        "cancelled_at": job.cancelled_at,
        "completed_at": job.completed_at,
        "discarded_at": job.discarded_at,
    }


async def run_isolated(cls: type[Any], job: Job) -> Any:
    """Run ``cls().process(job)`` in a child process and return its result.

    Raises:
        JobError: ``process`` raised (the child's traceback is in ``formatted``).
        WorkerCrashedError: the child died before replying.
        asyncio.CancelledError: the caller was cancelled; the child was killed.
    """
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = _Pool()
    return await pool.run(cls.__module__, job)


async def close_pool() -> None:
    """Stop the idle children of the running loop's pool."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


@atexit.register
def _kill_children() -> None:
    for child in list(_children):
        child.kill()
