"""Workers for test_isolation.py: in a module of their own, so isolated children import them.

Each run appends ``<event> <job id> <pid>`` to the file named by ``job.args["log"]``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from oban import Job, Record, current_job, job, worker


def log(path: str, event: str, job_id: int | None) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{event} {job_id} {os.getpid()}\n")


@worker(queue="isolated", isolation="process", max_attempts=3)
class IsolatedWorker:
    def timeout(self, job: Job) -> float | None:
        value = job.args.get("timeout")
        return None if value is None else float(value)

    def process(self, job: Job) -> Any:
        args = job.args
        log(args["log"], "start", job.id)
        print(f"isolated job {job.id} prints to stdout")  # must not break the protocol
        deadline = time.monotonic() + args.get("sleep", 0)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        if args.get("crash"):
            os._exit(7)
        if args.get("raise"):
            raise LookupError(f"failed in {os.getpid()}")
        if args.get("unpicklable"):
            return lambda: None
        log(args["log"], "done", job.id)
        running = current_job()
        return Record({"pid": os.getpid(), "current": running.id if running else None})


@job(queue="isolated", isolation="process")
def isolated_add(a: int, b: int) -> Record:
    return Record({"sum": a + b, "pid": os.getpid()})
