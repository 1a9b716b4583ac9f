"""Real Elixir Oban nodes for the interop tests, from the offline kit (``elixir-kit.tgz``).

:func:`prepare_kit` unpacks the kit once into a cache directory outside the project tree
(``${XDG_CACHE_HOME:-~/.cache}/oban-interop/<first 12 hex digits of the kit's sha256>``),
lays this directory's ``exapp/`` overlay over the kit's Mix app (a config that takes the
database port from ``DB_PORT``, and scripts of our own) and runs ``mix compile`` there: 30 to
55 s the first time, under a second when nothing changed. :class:`Kit` then runs the app's
scripts (``mix run scripts/x.exs``) and long-running nodes (``scripts/node.exs``) as
subprocesses against a database given by name and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Environment variable naming the kit's tarball.
KIT_VARIABLE = "OBAN_ELIXIR_KIT"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KIT = REPO_ROOT.parent / "shared" / "elixir" / "elixir-kit.tgz"
#: Files laid over the kit's ``exapp/`` (same relative paths).
OVERLAY = Path(__file__).resolve().parent / "exapp"
#: The Erlang runtime the kit's Elixir was built for (README.md of the kit).
ERL = Path("/usr/bin/erl")

COMPILE_TIMEOUT = 600.0
SCRIPT_TIMEOUT = 120.0
NODE_STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 10.0
LOCK_TIMEOUT = COMPILE_TIMEOUT + 120.0


class KitError(RuntimeError):
    """The kit cannot be found, unpacked or compiled, or a script failed."""


def kit_tarball(value: str | None) -> Path:
    """The kit named by ``value`` (the ``OBAN_ELIXIR_KIT`` setting), else the default path."""
    path = Path(value).expanduser() if value else DEFAULT_KIT
    if not path.is_file():
        source = f"{KIT_VARIABLE}={value!r}" if value else f"the default ({DEFAULT_KIT})"
        raise KitError(
            f"the Elixir kit was not found at {path} ({source}); point {KIT_VARIABLE} at "
            "elixir-kit.tgz (see /work/shared/elixir/README.md)"
        )
    return path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oban-interop"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, so two test runs never unpack or compile at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KitError(f"{path} stayed locked for {timeout}s by another run") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unpack(tarball: Path, target: Path) -> None:
    """Extract ``tarball`` into ``target`` atomically: a half-extracted tree never remains."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            if hasattr(tarfile, "tar_filter"):  # Python 3.11.4+: refuse paths out of staging
                archive.extractall(staging, filter="tar")
            else:
                archive.extractall(staging)
        for needed in ("elixir-src/bin/mix", "exapp/mix.exs"):
            if not (staging / needed).is_file():
                raise KitError(f"{tarball} has no {needed}: not an elixir-kit tarball")
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _apply_overlay(exapp: Path) -> None:
    """Copy our exapp files over the kit's, writing only those that differ (a rewritten
    config would make Mix recompile the app)."""
    for source in sorted(OVERLAY.rglob("*")):
        if not source.is_file():
            continue
        target = exapp / source.relative_to(OVERLAY)
        data = source.read_bytes()
        if target.is_file() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _check_erlang() -> None:
    if not ERL.is_file() or not os.access(ERL, os.X_OK):
        raise KitError(
            f"the Erlang runtime {ERL} is missing: the kit's Elixir 1.17.3 runs on Debian's "
            "Erlang/OTP 25 (apt-get install erlang)"
        )


def prepare_kit(tarball: Path) -> Kit:
    """Unpack (once per kit version) and compile the kit; return it ready to run scripts.

    Raises:
        KitError: Erlang is missing, the tarball is not a kit, or ``mix compile`` failed or
            outlived its time limit; the message carries the compiler's output.
    """
    _check_erlang()
    root = cache_root() / _sha256(tarball)[:12]
    with _locked(root.with_name(root.name + ".lock"), LOCK_TIMEOUT):
        if not root.is_dir():
            _unpack(tarball, root)
        kit = Kit(root)
        _apply_overlay(kit.exapp)
        kit.compile()
    return kit


@dataclass(frozen=True)
class ScriptResult:
    """What one ``mix run`` printed (stdout and stderr together) and its exit status."""

    args: tuple[str, ...]
    output: str
    returncode: int

    def check(self) -> ScriptResult:
        if self.returncode != 0:
            raise KitError(
                f"mix run {' '.join(self.args)} exited with {self.returncode}:\n{self.output}"
            )
        return self

    def lines(self, prefix: str = "") -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith(prefix)]


@dataclass(frozen=True)
class Database:
    """Where the Elixir side connects: a database on a server of 127.0.0.1."""

    name: str
    port: int
    host: str = "127.0.0.1"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class Kit:
    """An unpacked, compiled kit."""

    root: Path

    @property
    def exapp(self) -> Path:
        return self.root / "exapp"

    @property
    def bin(self) -> Path:
        return self.root / "elixir-src" / "bin"

    def _base_env(self) -> dict[str, str]:
        """The kit's ``bin`` first on PATH and a UTF-8 locale (the BEAM warns without one);
        no ``PG*`` variable of ours reaches Postgrex."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
            PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def env(self, database: Database, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a script: the base one, the database and quiet logs."""
        env = self._base_env()
        env.update(
            DB=database.name,
            DB_HOST=database.host,
            DB_PORT=str(database.port),
            LOG_LEVEL="warning",
        )
        env.update(extra or {})
        return env

    def compile(self) -> None:
        """``mix compile`` in ``exapp/``: about 50 s from scratch, under a second after."""
        try:
            result = subprocess.run(
                ["mix", "compile"],
                cwd=self.exapp,
                env=self._base_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=COMPILE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise KitError(
                f"mix compile in {self.exapp} did not finish within {COMPILE_TIMEOUT}s:\n"
                + _tail(error.stdout, error.stderr)
            ) from None
        if result.returncode != 0:
            raise KitError(
                f"mix compile in {self.exapp} failed ({result.returncode}):\n"
                + _tail(result.stdout, result.stderr)
            )

    def _command(self, script: str, args: tuple[str, ...]) -> list[str]:
        # prepare_kit compiled the app: scripts only run it (scripts run side by side never
        # start a compile, and each starts about 0.2 s sooner).
        return ["mix", "run", "--no-compile", "--no-deps-check", f"scripts/{script}", *args]

    async def run(
        self,
        script: str,
        *args: str,
        database: Database,
        env: Mapping[str, str] | None = None,
        timeout: float = SCRIPT_TIMEOUT,
    ) -> ScriptResult:
        """Run ``scripts/<script>`` to its end; killed (with what it printed in the error)
        when it outlives ``timeout``."""
        command = self._command(script, args)
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=self.exapp,
            env=self.env(database, env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        chunks: list[bytes] = []

        async def read() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                chunks.append(chunk)

        try:
            await asyncio.wait_for(asyncio.gather(read(), proc.wait()), timeout)
        except TimeoutError:
            raise KitError(
                f"mix run scripts/{script} {' '.join(args)} did not finish within {timeout}s:\n"
                + _tail(*chunks)
            ) from None
        finally:
            await _kill_group(proc)
        output = b"".join(chunks).decode(errors="replace")
        return ScriptResult((script, *args), output, proc.returncode or 0)

    @contextlib.asynccontextmanager
    async def node(
        self,
        queues: str,
        *,
        database: Database,
        log: Path,
        name: str = "ex-node",
        env: Mapping[str, str] | None = None,
        script: str = "node.exs",
        seconds: int = 3600,
    ) -> AsyncIterator[ElixirNode]:
        """Run an Elixir Oban node (``scripts/node.exs SECONDS QUEUES``, or another script
        taking the same arguments) for the block; it is stopped (SIGTERM, then SIGKILL) when
        the block ends, however it ends."""
        command = self._command(script, (str(seconds), queues))
        with log.open("ab") as output:
            proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.exapp,
                env=self.env(database, {"NODE": name, **(env or {})}),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        node = ElixirNode(name=name, log=log, proc=proc)
        try:
            yield node
        finally:
            await node.stop()


def _tail(*outputs: bytes | None, size: int = 4000) -> str:
    """The end of a command's output, enough to show why it failed."""
    return b"".join(output or b"" for output in outputs).decode(errors="replace")[-size:]


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group we started (the BEAM and its helper) and reap the leader."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), KILL_TIMEOUT)


@dataclass
class ElixirNode:
    """One running ``node.exs``; its output goes to ``log``."""

    name: str
    log: Path
    proc: asyncio.subprocess.Process

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def output(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- Elixir node {self.name} ({self.log}) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers. ``node.exs`` halts at once on SIGTERM: its
        Oban is linked to the script's process, so it neither drains its queues nor deletes
        its ``oban_peers`` row (the lease expires 30 s later)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), NODE_STOP_TIMEOUT)
        await _kill_group(self.proc)
