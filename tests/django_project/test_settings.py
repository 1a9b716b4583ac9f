"""How the Django app reads its settings: the DSN from DATABASES, OBAN and its precedence,
and the hooks that close Django's connections around each job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from shop.workers import SendReceipt

from oban import Oban
from oban.contrib.django.conf import dsn_from, load_config
from tests.django_project import probes
from tests.django_project.support import HERE, node_env, wait_for


def test_the_dsn_carries_the_connection_settings_of_the_database() -> None:
    dsn = dsn_from(
        "postgresql",
        {
            "NAME": "shop db",
            "USER": "app",
            "PASSWORD": "p@ss&word",
            "HOST": "/var/run/postgresql",
            "PORT": "5433",
            "OPTIONS": {"sslmode": "require", "pool": True, "server_side_binding": True},
        },
    )
    assert dsn == (
        "postgresql:///shop%20db?host=%2Fvar%2Frun%2Fpostgresql&port=5433&user=app"
        "&password=p%40ss%26word&sslmode=require"
    )
    import psycopg

    parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    assert parsed["password"] == "p@ss&word" and parsed["host"] == "/var/run/postgresql"
    assert dsn_from("sqlite", {"NAME": "rel/db.sqlite3"}) == (
        f"sqlite:///{os.path.abspath('rel/db.sqlite3')}"
    )


@pytest.mark.parametrize("name", [":memory:", "", "file:memdb?mode=memory&cache=shared"])
def test_an_in_memory_sqlite_database_is_refused(name: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="in-memory SQLite"):
        dsn_from("sqlite", {"NAME": name}, "jobs")


def test_another_backend_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="mysql backend"):
        dsn_from("mysql", {"NAME": "x"})


def test_settings_then_environment_then_flags(settings: Any, monkeypatch: Any) -> None:
    settings.OBAN = {"queues": {"default": 3}, "node": "from-settings", "prefix": "shop"}
    assert load_config().node == "from-settings"
    assert load_config().queues == {"default": {"limit": 3}}
    assert str(load_config().dsn).startswith(("postgresql://", "sqlite:///"))
    monkeypatch.setenv("OBAN_NODE", "from-env")
    assert load_config().node == "from-env"
    assert load_config(node="from-flag").node == "from-flag"
    assert load_config().prefix == "shop"


def test_a_wrong_setting_names_itself(settings: Any) -> None:
    settings.OBAN = {"queuez": {"default": 3}}
    with pytest.raises(ImproperlyConfigured, match="queuez"):
        load_config()
    settings.OBAN = {"queues": {"default": "ten"}}
    with pytest.raises(ImproperlyConfigured, match="queues"):
        load_config()
    settings.OBAN = []
    with pytest.raises(ImproperlyConfigured, match="OBAN must be a dict"):
        load_config()


def test_a_wrong_enqueue_mode_or_alias_is_refused(settings: Any) -> None:
    from oban.contrib.django import enqueue

    settings.OBAN_ENQUEUE = "later"
    with pytest.raises(ImproperlyConfigured, match="OBAN_ENQUEUE"):
        enqueue(SendReceipt.new({"order": 1}))
    settings.OBAN_ENQUEUE = "transaction"
    settings.OBAN_DATABASE_ALIAS = "jobs"
    with pytest.raises(ImproperlyConfigured, match="'jobs', which is not a key of DATABASES"):
        enqueue(SendReceipt.new({"order": 1}))


@pytest.mark.django_db(transaction=True)
def test_each_job_starts_and_ends_with_close_old_connections() -> None:
    """Sync jobs run in threads the node reuses; async jobs reach the ORM through one shared
    thread (sync_to_async). With the default CONN_MAX_AGE = 0, a job that opened the
    connection of its thread leaves it closed for the next job there."""
    probes.SEEN.clear()

    async def main() -> None:
        config = load_config(name="probe-node", queues={"probe": 1})
        async with Oban.from_config(config) as node:
            for _ in range(3):
                await node.enqueue(probes.SyncProbe.new({}))
                await node.enqueue(probes.AsyncProbe.new({}))
            for _ in range(300):
                if len(probes.SEEN) == 6:
                    break
                await asyncio.sleep(0.05)

    asyncio.run(main())

    assert len(probes.SEEN) == 6, probes.SEEN
    for kind in ("sync", "async"):
        threads = [thread for name, thread, _ in probes.SEEN if name == kind]
        assert len(set(threads)) < len(threads), f"{kind} jobs never shared a thread"
    assert all(closed for _, _, closed in probes.SEEN), probes.SEEN


@pytest.mark.django_db(transaction=True)
def test_start_with_processes_runs_node_processes_through_manage_py() -> None:
    from oban.contrib.django import get_oban

    proc = subprocess.Popen(
        [sys.executable, "manage.py", "oban", "start", "--processes", "2", "--node", "shop"],
        cwd=HERE,
        env=node_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        jobs = [SendReceipt.enqueue_sync({"order": n}) for n in range(4)]
        oban = get_oban()

        def done() -> bool:
            found = [oban.sync.get_job(job.id) for job in jobs]
            return all(job is not None and job.state == "completed" for job in found)

        wait_for(done, what="both node processes to run the jobs")
        nodes = wait_for(lambda: {n.node for n in oban.sync.nodes()} or None, what="nodes")
        assert nodes <= {"shop-1", "shop-2"}, nodes
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "| 2 processes" in output, output
