"""The FastAPI example app runs embedded: it enqueues on request and runs the job."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from oban.oban import _instances


@pytest.fixture
def app(dsn: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("OBAN_DSN", dsn)
    monkeypatch.setenv("OBAN_PREFIX", prefix)
    module = importlib.import_module("examples.fastapi_app")
    module = importlib.reload(module)  # pick up this test's DSN and prefix
    yield module
    _instances.clear()


def test_signup_enqueues_and_the_embedded_queue_runs_the_job(app: ModuleType) -> None:
    with TestClient(app.app) as client:
        response = client.post("/signups", json={"email": "ada@example.com"})
        assert response.status_code == 202
        job_id = response.json()["job_id"]

        deadline = time.monotonic() + 10
        state = None
        while time.monotonic() < deadline:
            state = client.get(f"/jobs/{job_id}").json()["state"]
            if state == "completed":
                break
            time.sleep(0.05)
        assert state == "completed"
        assert app.SENT == ["ada@example.com"]
        assert client.get("/jobs/999999").status_code == 404
