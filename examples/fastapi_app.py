"""A FastAPI app running oban embedded: the web process enqueues and runs jobs.

Run it (after ``oban install``) with::

    OBAN_DSN=postgresql://postgres@127.0.0.1:5432/test uvicorn examples.fastapi_app:app

then ``curl -X POST localhost:8000/signups -H 'content-type: application/json'
-d '{"email": "ada@example.com"}'`` and ``curl localhost:8000/jobs/1``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from oban import Oban, worker

DSN = os.environ.get("OBAN_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = os.environ.get("OBAN_PREFIX", "public")
SENT: list[str] = []


@worker(queue="mailers", max_attempts=5)
class WelcomeEmail:
    """Sends the welcome email (here: records the address)."""

    async def process(self, job: Any) -> None:
        SENT.append(job.args["email"])


class Signup(BaseModel):
    email: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await Oban.create_pool(dsn=DSN)
    oban = Oban(pool=pool, prefix=PREFIX, queues={"mailers": 5})
    async with oban:
        app.state.oban = oban
        yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/signups", status_code=202)
async def create_signup(signup: Signup) -> dict[str, Any]:
    job = await WelcomeEmail.enqueue({"email": signup.email})
    return {"job_id": job.id, "state": job.state}


@app.get("/jobs/{job_id}")
async def show_job(job_id: int) -> dict[str, Any]:
    job = await app.state.oban.get_job(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return {"id": job.id, "worker": job.worker, "state": job.state, "attempt": job.attempt}
