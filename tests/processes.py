"""Nodes as real processes: ``python -m oban start`` as a subprocess whose output goes to a
file (a full pipe would block it), for the acceptance and conformance tests that run them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from tests.helpers import eventually

OBAN = [sys.executable, "-m", "oban"]


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, its ``sys.path`` as ``PYTHONPATH`` (a child imports the
    same ``oban`` and test modules), and ``extra`` on top."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(extra or {})}


class Node:
    """One ``oban start`` process; its output goes to a file (a full pipe would block it)."""

    #: How long :meth:`kill` waits for the killed process (``None``: as long as it takes).
    kill_timeout: float | None = None

    def __init__(self, proc: asyncio.subprocess.Process, name: str, output: Path) -> None:
        self.proc = proc
        self.name = name
        self.output = output

    @classmethod
    async def start(
        cls,
        name: str,
        *args: str,
        cwd: Path,
        output: Path,
        env: Mapping[str, str] | None = None,
        stdin: int | None = None,
    ) -> Self:
        """Run ``python -m oban start *args`` in ``cwd`` with ``env`` added to this process's
        environment (see :func:`subprocess_env`), its stdout and stderr to ``output``."""
        with output.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                *OBAN,
                "start",
                *args,
                cwd=cwd,
                env=subprocess_env(env),
                stdin=stdin,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
        return cls(proc, name, output)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} output ---\n" + "\n".join(self.text().splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def exit_code(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the process to exit; fail with its output."""
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{self.name} still runs {timeout}s later\n{self.tail()}"
            ) from None

    async def kill(self) -> None:
        """SIGKILL the process if it still runs, and reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), self.kill_timeout)


async def kill_all(nodes: Sequence[Node]) -> None:
    """:meth:`Node.kill` every node, in order."""
    for node in nodes:
        await node.kill()


class Launcher:
    """Starts ``oban start`` processes in ``cwd`` and keeps them (:attr:`nodes`), for the
    fixture that made it to kill at its end (:meth:`kill_all`)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.nodes: list[Node] = []

    async def start(
        self,
        name: str,
        *args: str,
        output: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Node:
        """:meth:`Node.start` in ``cwd``, its output in ``cwd / output`` (``NAME.out`` unless
        given)."""
        node = await Node.start(
            name, *args, cwd=self.cwd, output=self.cwd / (output or f"{name}.out"), env=env
        )
        self.nodes.append(node)
        return node

    async def kill_all(self) -> None:
        await kill_all(self.nodes)


async def until(
    check: Callable[[], Any],
    *nodes: Node,
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str,
) -> Any:
    """``eventually``, with the nodes' latest output in the failure message."""
    try:
        return await eventually(check, timeout=timeout, interval=interval, message=message)
    except AssertionError as error:
        raise AssertionError("\n".join([str(error), *(node.tail() for node in nodes)])) from None
