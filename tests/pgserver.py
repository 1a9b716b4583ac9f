"""A throwaway PostgreSQL server of the test's own, for tests that stop, restart or crash it.

The suite must never restart the machine's shared server (``OBAN_TEST_DSN``): other programs
use it. A fault test instead gets a private cluster: ``initdb`` into a fresh directory under
``/tmp``, a postmaster on a free port of 127.0.0.1 (unix socket inside that directory), trust
authentication and no fsync. ``close()`` (or leaving the ``with`` block) stops it and removes
the directory.

The postmaster is a direct child of this process rather than started by ``pg_ctl start``:
``pg_ctl`` leaves the postmaster an orphan of PID 1, and where PID 1 does not reap orphans
(as in some containers and VMs) a SIGKILLed postmaster stays a zombie whose PID in
``postmaster.pid`` makes every later start fail with "lock file already exists". As our child
it is reaped by us. Shutdown uses the postmaster's documented signals (SIGINT for "fast",
SIGQUIT for "immediate"), as ``pg_ctl stop`` does, with bounded waits.

PostgreSQL refuses to run as root; as root the binaries run as the ``postgres`` OS user, and
the directory is owned by that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

BINDIR = Path(os.environ.get("OBAN_TEST_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"

INITDB_TIMEOUT = 60.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0
PORT_ATTEMPTS = 5

ShutdownMode = Literal["smart", "fast", "immediate"]
_SHUTDOWN_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

# Speed over durability against an OS crash, which a test never causes. synchronous_commit
# stays on: without it a kill() would lose recently committed transactions.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "100",
    "logging_collector": "off",
}


class PostgresServerError(RuntimeError):
    """The private server could not be created, started or stopped."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (a zombie does not)."""
    if not Path("/proc/self").exists():  # no procfs: a zombie counts as alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (empty where /proc is not available)."""
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class _State:
    """Everything cleanup needs, apart from the server object so a finalizer can hold it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.proc: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def crash(self) -> None:
        """SIGKILL the postmaster and every process it started; wait until all are gone."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            children = _children(proc.pid)
            _signal(proc.pid, signal.SIGKILL)
            for child in children:
                _signal(child, signal.SIGKILL)
            try:
                proc.wait(timeout=KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise PostgresServerError(
                    f"postmaster {proc.pid} survived SIGKILL for {KILL_TIMEOUT}s"
                ) from None
            # Orphaned backends would keep the old shared memory attached and block a start.
            deadline = time.monotonic() + KILL_TIMEOUT
            while any(_alive(child) for child in children):
                if time.monotonic() >= deadline:
                    left = [child for child in children if _alive(child)]
                    raise PostgresServerError(f"postgres processes {left} survived SIGKILL")
                time.sleep(0.02)
        self.proc = None

    def shutdown(self, mode: ShutdownMode) -> None:
        """Stop the postmaster with ``mode``'s signal and reap it; crash it if it hangs."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal(proc.pid, _SHUTDOWN_SIGNALS[mode])
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.crash()
                raise PostgresServerError(
                    f"PostgreSQL did not stop ({mode}) within {STOP_TIMEOUT}s; it was killed"
                ) from None
        self.proc = None


def _cleanup(state: _State) -> None:
    """Stop the server (immediate) and remove its directory, even if stopping fails."""
    try:
        state.shutdown("immediate")  # kills it if it does not stop in time
    finally:
        shutil.rmtree(state.base, ignore_errors=True)
        if state.base.exists():
            raise PostgresServerError(f"could not remove {state.base}")


class PrivateServer:
    """A PostgreSQL cluster of its own on a free port of 127.0.0.1.

    Use it as a context manager (``with PrivateServer() as server: ...``, then connect to
    ``server.dsn``) or through the ``private_pg`` fixture.

    ``start()`` creates the cluster on first use; later calls (after ``stop()`` or ``kill()``)
    start the same cluster on the same port, so a DSN taken earlier stays valid.
    """

    def __init__(self, *, bindir: Path = BINDIR) -> None:
        self.bindir = bindir
        self._check_binaries()
        self._user = self._run_as_user()
        base = Path(tempfile.mkdtemp(prefix="oban-pg-", dir="/tmp"))
        self._state = _State(base)
        # Removes the server even if close() is never called (at the latest, at exit).
        self._finalizer = weakref.finalize(self, _cleanup, self._state)
        if self._user is not None:
            os.chown(base, self._user.pw_uid, self._user.pw_gid)
        self._port: int | None = None
        self._initialised = False

    # -- properties ---------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """The temporary directory: data directory, unix socket and server log."""
        return self._state.base

    @property
    def data_dir(self) -> Path:
        return self._state.base / "data"

    @property
    def log_file(self) -> Path:
        return self._state.base / "server.log"

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresServerError("the server has not been started yet: no port")
        return self._port

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        proc = self._state.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self._state.running()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster if needed and start it; returns once it accepts connections."""
        if not self._finalizer.alive:
            raise PostgresServerError("the server was closed")
        if self.running:
            return
        if not self._initialised:
            self._initdb()
        if self._port is not None:
            self._start_on(self._port)
            return
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = _free_port()
            try:
                self._start_on(port)
            except _PortTaken:
                if attempt == PORT_ATTEMPTS:
                    raise PostgresServerError(
                        f"no free port after {PORT_ATTEMPTS} attempts"
                    ) from None
                continue
            self._port = port
            return

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Shut the server down (``fast``: roll back and disconnect; ``immediate``: no
        checkpoint, crash recovery at the next start). A no-op when it is not running."""
        if mode not in _SHUTDOWN_SIGNALS:
            raise ValueError(f"mode must be one of {sorted(_SHUTDOWN_SIGNALS)}, not {mode!r}")
        self._state.shutdown(mode)

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Stop (dropping every connection) and start again on the same port."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """Crash: SIGKILL the postmaster and its processes. ``start()`` recovers the data."""
        self._state.crash()

    def close(self) -> None:
        """Stop the server (immediate) and remove its directory. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> PrivateServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<PrivateServer {state} port={self._port} dir={self.base_dir}>"

    # -- internals ----------------------------------------------------------------------------

    def _check_binaries(self) -> None:
        missing = [name for name in ("initdb", "postgres") if not (self.bindir / name).is_file()]
        if missing:
            raise PostgresServerError(
                f"PostgreSQL server binaries {missing} not found in {self.bindir}; install "
                "the PostgreSQL 15 server (Debian/Ubuntu: apt-get install postgresql-15) or "
                "point OBAN_TEST_PG_BINDIR at the directory holding initdb and postgres"
            )

    @staticmethod
    def _run_as_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PostgresServerError(
                f"running as root, and PostgreSQL refuses to: an OS user {RUN_AS!r} to run it "
                "as is missing (create it, or run the tests as a non-root user)"
            ) from None

    def _process_options(self) -> dict[str, Any]:
        """How to launch a PostgreSQL binary: as the postgres user when we are root."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        options: dict[str, Any] = {"cwd": self._state.base, "env": env}
        if self._user is not None:
            env.update(HOME=self._user.pw_dir, USER=RUN_AS, LOGNAME=RUN_AS)
            options.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return options

    def _initdb(self) -> None:
        command = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                timeout=INITDB_TIMEOUT,
                check=False,
                **self._process_options(),
            )
        except subprocess.TimeoutExpired:
            raise PostgresServerError(f"initdb did not finish within {INITDB_TIMEOUT}s") from None
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise PostgresServerError(f"initdb failed ({result.returncode}):\n{output}")
        self._initialised = True

    def _start_on(self, port: int) -> None:
        """Launch the postmaster on ``port`` and wait until it accepts connections."""
        command = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(port)]
        command += ["-c", f"unix_socket_directories={self._state.base}"]
        for name, value in _SETTINGS.items():
            command += ["-c", f"{name}={value}"]
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for pytest is not a crash
                **self._process_options(),
            )
        self._state.proc = proc
        try:
            self._wait_ready(proc, port, offset)
        except BaseException:
            self._state.crash()
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, offset: int) -> None:
        """Wait until postmaster.pid says our postmaster is ready, as ``pg_ctl -w`` does."""
        pidfile = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                log = self._log_since(offset)
                if "could not bind" in log or "could not create any TCP/IP sockets" in log:
                    raise _PortTaken(port)
                raise PostgresServerError(
                    f"PostgreSQL exited ({proc.returncode}) while starting on port {port}:\n{log}"
                )
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                # A crashed server leaves its own postmaster.pid behind: check the PID.
                if len(lines) >= 8 and lines[0] == str(proc.pid) and lines[7].strip() == "ready":
                    return
            if time.monotonic() >= deadline:
                raise PostgresServerError(
                    f"PostgreSQL did not become ready on port {port} within {START_TIMEOUT}s:\n"
                    + self._log_since(offset)
                )
            time.sleep(0.02)

    def _log_since(self, offset: int, limit: int = 4000) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"
        return text[-limit:]


class _PortTaken(PostgresServerError):
    """The chosen port was taken between picking it and binding it; try another."""
