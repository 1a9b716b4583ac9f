"""oban.contrib.django in a real Django project, on the engine this session's settings name:
migrations, enqueue inside atomic(), manage.py oban, the admin and the Tasks backend."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from shop.models import Order
from shop.workers import FollowUp, SendReceipt

from oban import Job
from oban.contrib.django import enqueue, get_oban
from oban.contrib.django.models import Job as JobRow
from tests.django_project.support import manage, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def jobs(**filters: Any) -> list[JobRow]:
    return list(JobRow.objects.filter(**filters).order_by("id"))


# --- enqueue inside the view's transaction ---------------------------------------------------


def test_a_view_commits_the_order_and_its_job_together(client: Client) -> None:
    response = client.post("/orders/", {"email": "ada@example.com"})

    assert response.status_code == 200
    body = response.json()
    (row,) = jobs()
    assert (row.id, row.worker, row.queue) == (body["job"], "shop.workers.SendReceipt", "mail")
    assert row.args == {"order": body["order"]}
    assert row.state == "available"
    assert Order.objects.filter(id=body["order"]).exists()


def test_a_view_that_fails_after_enqueueing_leaves_neither(client: Client) -> None:
    with pytest.raises(RuntimeError, match="failed after enqueueing"):
        client.post("/orders/", {"email": "bob@example.com", "fail": "1"})

    assert not Order.objects.exists()
    assert jobs() == []


def test_an_async_view_enqueues_on_the_request_connection(client: Client) -> None:
    response = client.post("/orders/async/", {"email": "cy@example.com"})

    assert response.status_code == 200
    (row,) = jobs()
    assert row.id == response.json()["job"]


def test_enqueue_sync_outside_atomic_commits_at_once() -> None:
    job = SendReceipt.enqueue_sync({"order": 1})

    # oban's own pool (another connection) sees it: it was committed
    fetched = get_oban().sync.get_job(job.id)
    assert fetched is not None and fetched.worker == "shop.workers.SendReceipt"


def test_a_rolled_back_block_takes_the_job_with_it() -> None:
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        job = SendReceipt.enqueue_sync({"order": 2})
        assert job.id is not None
        assert [row.id for row in jobs()] == [job.id]  # visible inside the block
        1 / 0

    assert jobs() == []
    assert get_oban().sync.get_job(job.id) is None


def test_on_commit_inserts_when_the_block_commits(settings: Any) -> None:
    settings.OBAN_ENQUEUE = "on_commit"
    with transaction.atomic():
        job = SendReceipt.enqueue_sync({"order": 3})
        assert job.id is None  # not inserted yet
        assert jobs() == []
    assert job.id is not None and job.state == "available"
    assert [row.id for row in jobs()] == [job.id]


def test_on_commit_inserts_nothing_when_the_block_rolls_back() -> None:
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        enqueue(SendReceipt.new({"order": 4}), on_commit=True)
        1 / 0
    assert jobs() == []


# --- manage.py ---------------------------------------------------------------------------------


def test_migrate_installed_the_schema_oban_install_would(tmp_path: Path) -> None:
    assert manage("migrate", "--check").returncode == 0  # nothing left to apply
    assert manage("makemigrations", "--check", "--dry-run").returncode == 0

    if connection.vendor == "sqlite":
        reference_file = tmp_path / "reference.sqlite3"
        oban_cli("install", "--dsn", f"sqlite:///{reference_file}")
        with sqlite3.connect(reference_file) as ref:
            expected = ref.execute(SQLITE_OBJECTS).fetchall()
            expected_version = ref.execute("PRAGMA user_version").fetchone()
        with connection.cursor() as cur:
            cur.execute(SQLITE_OBJECTS)
            migrated = cur.fetchall()
            cur.execute("PRAGMA user_version")
            assert cur.fetchone() == expected_version
        assert len(expected) > 5
        assert migrated == expected
        return

    from tests.interop.catalog import CATALOG_QUERY, difference

    name = f"oban_django_ref_{os.getpid()}"
    server = " ".join(f"{k}={v}" for k, v in pg_params().items() if k != "dbname")
    with psycopg.connect(server, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        params = {**pg_params(), "dbname": name}
        dsn = "postgresql:///?" + "&".join(f"{k}={v}" for k, v in params.items())
        oban_cli("install", "--dsn", dsn)
        with psycopg.connect(" ".join(f"{k}={v}" for k, v in params.items())) as ref:
            rows = ref.execute(CATALOG_QUERY, {"schema": "public"}).fetchall()
        reference = _oban_objects(rows)
        with connection.cursor() as cur:
            cur.execute(CATALOG_QUERY.replace("%(schema)s", "'public'"))
            installed = _oban_objects(cur.fetchall())
        assert len(reference) > 20
        assert installed == reference, difference(reference, installed)
    finally:
        with psycopg.connect(server, dbname="postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SQLITE_OBJECTS = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master "
    "WHERE tbl_name LIKE 'oban%' ORDER BY type, name"
)


def _oban_objects(rows: list[Any]) -> dict[tuple[str, str], str]:
    return {(kind, name): text for kind, name, text in rows if name.startswith("oban")}


def pg_params() -> dict[str, str]:
    settings = connection.settings_dict
    params = {"dbname": settings["NAME"], "user": settings["USER"], "host": settings["HOST"]}
    return {**params, "port": str(settings["PORT"])}


def oban_cli(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "oban", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_manage_oban_start_runs_the_jobs(client: Client, node: Any) -> None:
    order = client.post("/orders/", {"email": "dee@example.com"}).json()["order"]

    wait_for(
        lambda: Order.objects.filter(id=order, receipt_sent=True).exists(),
        what="the job to use the ORM",
    )
    wait_for(
        lambda: [j.state for j in jobs()] == ["completed", "completed"],
        what="SendReceipt and the FollowUp it enqueued to complete",
    )
    receipt, follow_up = jobs()
    assert (receipt.worker, follow_up.worker) == (
        "shop.workers.SendReceipt",
        "shop.workers.FollowUp",
    )
    assert follow_up.args == {"order": order}


def test_manage_oban_mirrors_the_cli() -> None:
    job = SendReceipt.enqueue_sync({"order": 5})

    listed = manage("oban", "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [listed_job["id"] for listed_job in json.loads(listed.stdout)["jobs"]] == [job.id]

    help_text = manage("oban", "--help")
    assert help_text.returncode == 0
    for command in ("start", "install", "jobs", "queues", "retry", "cancel", "web"):
        assert command in help_text.stdout

    cancelled = manage("oban", "cancel", str(job.id))
    assert cancelled.returncode == 0, cancelled.stderr
    assert jobs()[0].state == "cancelled"


def test_manage_oban_refuses_an_oban_toml() -> None:
    result = manage("oban", "jobs", "--config", "oban.toml")
    assert result.returncode == 2
    assert "the settings take its place" in result.stderr


# --- admin --------------------------------------------------------------------------------------


@pytest.fixture
def staff(client: Client) -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


def test_the_admin_lists_jobs_without_counting_the_table(staff: Client) -> None:
    first = SendReceipt.enqueue_sync({"order": 6})
    second = FollowUp.enqueue_sync({"order": 6})

    with CaptureQueriesContext(connection) as queries:
        page = staff.get("/admin/oban/job/?state__exact=available")

    assert page.status_code == 200
    html = page.content.decode()
    assert f">{first.id}<" in html and f">{second.id}<" in html
    assert "shop.workers.FollowUp" in html
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the changelist counts its page"
    assert all("LIMIT" in sql.upper() for sql in counts), counts

    detail = staff.get(f"/admin/oban/job/{first.id}/change/")
    assert detail.status_code == 200
    assert "shop.workers.SendReceipt" in detail.content.decode()


def test_the_admin_retries_cancels_and_deletes_through_oban(staff: Client) -> None:
    job = SendReceipt.enqueue_sync({"order": 7})
    get_oban().sync.cancel_job(job.id)

    def act(action: str) -> None:
        response = staff.post(
            "/admin/oban/job/", {"action": action, "_selected_action": [str(job.id)]}
        )
        assert response.status_code == 302, response.content[:500]

    act("retry_jobs")
    assert jobs()[0].state == "available"
    act("cancel_jobs")
    assert jobs()[0].state == "cancelled"
    act("delete_jobs")
    assert jobs() == []


def test_the_admin_is_read_only_for_viewers(client: Client) -> None:
    from django.contrib.auth.models import Permission

    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(viewer)
    job = SendReceipt.enqueue_sync({"order": 8})

    page = client.get("/admin/oban/job/")
    assert page.status_code == 200
    assert "retry_jobs" not in page.content.decode()
    refused = client.post(
        "/admin/oban/job/", {"action": "retry_jobs", "_selected_action": [str(job.id)]}
    )
    assert refused.status_code in (200, 302, 403)
    assert jobs()[0].state == "available"  # untouched (it was available: retry would not show)
    get_oban().sync.cancel_job(job.id)
    client.post("/admin/oban/job/", {"action": "retry_jobs", "_selected_action": [str(job.id)]})
    assert jobs()[0].state == "cancelled"
    with pytest.raises(TypeError, match="read only"):
        jobs()[0].save()


# --- django.tasks ------------------------------------------------------------------------------


def test_a_task_is_a_job_and_its_result_comes_back(node: Any) -> None:
    from shop.tasks import add

    result = add.enqueue(2, 3)

    (row,) = jobs()
    assert str(row.id) == result.id
    assert (row.worker, row.queue, row.priority) == (
        "oban.contrib.django.tasks.RunTask",
        "mail",
        2,  # django 50 -> oban 2 (0 is oban's highest)
    )
    assert result.status in ("READY", "RUNNING", "SUCCESSFUL")

    wait_for(lambda: jobs()[0].state == "completed", what="the task's job")
    fetched = add.get_result(result.id)
    assert fetched.status == "SUCCESSFUL"
    assert fetched.return_value == {"sum": 5}
    assert fetched.args == [2, 3]
    result.refresh()
    assert result.return_value == {"sum": 5}


def test_a_task_in_a_rolled_back_block_is_gone() -> None:
    from shop.tasks import add

    with pytest.raises(ZeroDivisionError), transaction.atomic():
        add.enqueue(1, 1)
        1 / 0
    assert jobs() == []


def test_a_failed_attempt_is_retried_with_its_context(node: Any) -> None:
    from shop.tasks import attempt_number

    result = attempt_number.enqueue(fail_first=True)
    get_oban().sync.update_job(int(result.id), {"max_attempts": 3})

    def retried_and_done() -> bool:
        row = jobs()[0]
        if row.state == "retryable":  # skip the backoff
            get_oban().sync.retry_job(row.id)
        return row.state == "completed"

    wait_for(retried_and_done, what="the second attempt")
    fetched = attempt_number.get_result(result.id)
    assert fetched.status == "SUCCESSFUL"
    assert fetched.return_value == 2
    assert [error.exception_class_path for error in fetched.errors] == ["builtins.RuntimeError"]
    assert "first attempt fails" in fetched.errors[0].traceback


def test_run_after_schedules_the_job() -> None:
    from datetime import UTC, datetime, timedelta

    from shop.tasks import add

    later = datetime.now(UTC) + timedelta(hours=1)
    result = add.using(run_after=later).enqueue(1, 2)
    row = jobs()[0]
    assert row.state == "scheduled"
    assert abs((_aware(row.scheduled_at) - later).total_seconds()) < 1
    assert add.get_result(result.id).status == "READY"


def _aware(value: Any) -> Any:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_an_unknown_result_id_does_not_exist() -> None:
    from shop.tasks import add

    try:
        from django.tasks.exceptions import TaskResultDoesNotExist
    except ImportError:
        from django_tasks.exceptions import TaskResultDoesNotExist

    plain = SendReceipt.enqueue_sync({"order": 9})
    for unknown in ("nope", "999999999", str(plain.id)):
        with pytest.raises(TaskResultDoesNotExist):
            add.get_result(unknown)


def test_jobs_are_django_jobs() -> None:
    job = Job("shop.workers.FollowUp", args={"n": 2**62 + 1})
    inserted = enqueue(job)
    assert jobs()[0].args == {"n": 2**62 + 1}  # big integers stay exact
    assert inserted.id == jobs()[0].id


def test_await_enqueue_in_an_async_view_leaves_the_instance_usable(client: Client) -> None:
    """Under WSGI each async view runs on an event loop of its own, closed afterwards: the
    insert goes through Django's connection, so no pool is tied to that loop."""
    for email in ("a@example.com", "b@example.com"):
        response = client.post("/orders/async/enqueue/", {"email": email})
        assert response.status_code == 200
    assert [row.worker for row in jobs()] == ["shop.workers.SendReceipt"] * 2
    assert get_oban().sync.get_job(response.json()["job"]) is not None


def test_a_task_whose_value_cannot_be_stored_fails_once(node: Any) -> None:
    from shop.tasks import when

    result = when.enqueue()
    wait_for(lambda: jobs()[0].state == "cancelled", what="the task to end")
    row = jobs()[0]
    assert row.attempt == 1
    fetched = when.get_result(result.id)
    assert fetched.status == "FAILED"
    assert "cannot be stored" in fetched.errors[-1].traceback


def test_a_task_outside_the_installed_apps_is_refused_at_enqueue() -> None:
    from tests.django_project.outside_tasks import stray

    with pytest.raises(ValueError, match="not in an installed app"):
        stray.enqueue()
    assert jobs() == []


def test_the_job_model_refuses_writes() -> None:
    SendReceipt.enqueue_sync({"order": 10})
    with pytest.raises(TypeError, match="read only"):
        JobRow.objects.update(state="completed")
    with pytest.raises(TypeError, match="read only"):
        JobRow.objects.all().delete()
    with pytest.raises(TypeError, match="read only"):
        jobs()[0].delete()
    assert jobs()[0].state == "available"


def test_manage_check_reports_a_wrong_oban_setting() -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    call_command("check")
    with (
        override_settings(OBAN={"queuez": {}}),
        pytest.raises(SystemCheckError, match=r"oban\.E001"),
    ):
        call_command("check")


def test_manage_oban_accepts_django_options() -> None:
    settings_module = os.environ["DJANGO_SETTINGS_MODULE"]
    result = manage("oban", "jobs", "--settings", settings_module, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["jobs"] == []
