"""The Flask example (examples/flask_app) on PostgreSQL and SQLite: a view enqueues inside
the request's SQLAlchemy transaction, so the job commits with the user or rolls back with it;
a node then runs the job."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql

from oban import Job, telemetry
from oban.oban import _instances
from tests.helpers import eventually, oban_factory
from tests.processes import OBAN, subprocess_env

MODULES = ["examples.flask_app.models", "examples.flask_app.workers", "examples.flask_app.app"]


class Database:
    """Where the example runs: its DATABASE_URL, oban's DSN and prefix, and a way to read
    rows on a connection of the test's own."""

    def __init__(self, url: str, dsn: str, prefix: str) -> None:
        self.url, self.dsn, self.prefix = url, dsn, prefix

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.dsn.startswith("sqlite:///"):
            path = self.dsn.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return list(conn.execute(query.replace("%s", "?"), params).fetchall())
        with psycopg.connect(self.dsn) as conn:
            conn.execute(psql.SQL("SET search_path TO {}").format(psql.Identifier(self.prefix)))
            return list(conn.execute(query.encode(), params).fetchall())


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        dsn = f"sqlite:///{tmp_path / 'flask_app.db'}"
        installed = subprocess.run(  # as README.md says
            [*OBAN, "install", "--dsn", dsn],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
        return Database(dsn, dsn, "public")
    dsn, prefix = str(request.getfixturevalue("dsn")), str(request.getfixturevalue("prefix"))
    # The app's own tables go into the test's schema too, first on its search_path.
    url = "postgresql+psycopg://" + dsn.removeprefix("postgresql://")
    return Database(f"{url}?options=-csearch_path%3D{prefix}", dsn, prefix)


@pytest.fixture
def example(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """examples.flask_app.app imported afresh for ``database``, its tables created with its
    ``flask init-db`` command; its oban instance and engine closed afterwards."""
    monkeypatch.setenv("DATABASE_URL", database.url)
    monkeypatch.setenv("OBAN_PREFIX", database.prefix)
    for name in MODULES:
        sys.modules.pop(name, None)
    module = importlib.import_module("examples.flask_app.app")
    try:
        result = module.app.test_cli_runner().invoke(args=["init-db"])
        assert result.exit_code == 0, result.output
        yield module
    finally:
        try:
            module.oban.sync.stop()
            module.engine.dispose()
        finally:
            _instances.pop(module.oban.name, None)
            for name in MODULES:
                sys.modules.pop(name, None)


def test_signup_commits_the_user_with_its_job_which_a_node_then_runs(
    example: ModuleType, database: Database
) -> None:
    client = example.app.test_client()

    response = client.post("/signup", data={"email": "ada@example.com"})

    assert response.status_code == 201
    user_id, job_id = response.json["user_id"], response.json["job_id"]
    assert database.rows("SELECT email FROM users WHERE id = %s", (user_id,)) == [
        ("ada@example.com",)
    ]
    [(worker, args)] = database.rows("SELECT worker, args FROM oban_jobs WHERE id = %s", (job_id,))
    assert worker == "examples.flask_app.workers.WelcomeEmail"
    assert (args if isinstance(args, dict) else json.loads(args)) == {"user_id": user_id}
    if database.dsn.startswith("postgresql"):  # written by one transaction: the request's
        [(user_xid,)] = database.rows("SELECT xmin::text FROM users WHERE id = %s", (user_id,))
        [(job_xid,)] = database.rows("SELECT xmin::text FROM oban_jobs WHERE id = %s", (job_id,))
        assert user_xid == job_xid
    assert client.get(f"/jobs/{job_id}").json["state"] == "available"

    asyncio.run(run_queue(database, job_id))

    assert client.get(f"/jobs/{job_id}").json == {
        "id": job_id,
        "state": "completed",
        "attempt": 1,
        "args": {"user_id": user_id},
    }
    [(welcomed_at,)] = database.rows("SELECT welcomed_at FROM users WHERE id = %s", (user_id,))
    assert welcomed_at is not None


def test_a_request_that_fails_after_enqueueing_leaves_neither_user_nor_job(
    example: ModuleType, database: Database
) -> None:
    enqueued: list[int | None] = []
    telemetry.attach(
        "flask-example",
        ["oban.enqueue.stop"],
        lambda _name, meta: enqueued.extend(job.id for job in meta["jobs"]),
    )
    try:
        response = example.app.test_client().post(
            "/signup/broken", data={"email": "bob@example.com"}
        )
    finally:
        telemetry.detach("flask-example")

    assert response.status_code == 500
    [job_id] = enqueued  # the insert ran, in the transaction that was then rolled back
    assert isinstance(job_id, int)
    assert database.rows("SELECT count(*) FROM users") == [(0,)]
    assert database.rows("SELECT count(*) FROM oban_jobs") == [(0,)]
    assert example.app.test_client().get(f"/jobs/{job_id}").status_code == 404


async def run_queue(database: Database, job_id: int) -> Job:
    """Run the mailers queue on a node of its own until job ``job_id`` is completed."""
    async with oban_factory(dsn=database.dsn, prefix=database.prefix) as make:
        node = make(name="FlaskExampleNode", queues={"mailers": 1})
        await node.start()

        async def completed() -> Job | None:
            job = await node.get_job(job_id)
            return job if job is not None and job.state == "completed" else None

        done: Job = await eventually(completed, timeout=10, message=f"job {job_id} completed")
        return done
