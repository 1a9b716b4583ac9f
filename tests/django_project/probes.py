"""Workers the hook tests run in this process: each records whether Django's connection of
the thread it uses was closed before it started."""

from __future__ import annotations

import threading
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection

from oban import Job, worker

#: (worker, thread id, whether the thread's connection was closed when the job started)
SEEN: list[tuple[str, int, bool]] = []


def _look(name: str) -> None:
    SEEN.append((name, threading.get_ident(), connection.connection is None))
    connection.ensure_connection()  # left open: the hook after the job must close it


@worker(queue="probe")
class SyncProbe:
    def process(self, job: Job) -> None:
        _look("sync")


@worker(queue="probe")
class AsyncProbe:
    async def process(self, job: Job) -> Any:
        await sync_to_async(_look, thread_sensitive=True)("async")
