"""The child process of ``isolation="process"`` workers (``python -m oban._isolation_child``).

It reads one request at a time from stdin, runs the job's ``process`` and writes the outcome
to the protocol stream, then waits for the next request; EOF on stdin ends it. The protocol
stream is the file descriptor that was stdout when the process started: fd 1 is pointed at
stderr, so what the worker prints goes to the node's log instead of corrupting the protocol.

Frames are a 4-byte big-endian length followed by a pickle. A request is
``{"module": ..., "fields": {Job fields}}``; the reply is ``("ok", result)`` or
``("error", type name, message, formatted traceback)``.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import sys
import traceback
from typing import IO, Any

_HEADER = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> Any | None:
    """The next frame's object, or ``None`` at EOF."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # noqa: S301 - frames come from our own parent process


def write_frame(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _run(request: dict[str, Any]) -> tuple[Any, ...]:
    from .job import Job, _current_job
    from .worker import resolve_worker

    try:
        importlib.import_module(request["module"])  # registers the worker under its name
        job = Job._restore(**request["fields"])
        cls = resolve_worker(job.worker)
        token = _current_job.set(job)
        try:
            result = cls().process(job)
        finally:
            _current_job.reset(token)
    except Exception as error:
        return ("error", type(error).__name__, str(error), traceback.format_exc().rstrip())
    try:
        pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        message = f"the result of process() cannot be sent back to the node: {error}"
        return ("error", "TypeError", message, message)
    return ("ok", result)


def main() -> None:
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # print() in a worker goes to stderr, not into the protocol
    requests = sys.stdin.buffer
    while True:
        request = read_frame(requests)
        if request is None:
            return
        write_frame(protocol, _run(request))


if __name__ == "__main__":
    main()
