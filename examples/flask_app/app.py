"""The web app: views enqueue jobs inside the request's SQLAlchemy transaction; the queues run
elsewhere (``oban start``). See README.md."""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from sqlalchemy.engine import make_url

from oban import Job, Oban

from .models import DATABASE_URL, Base, User, db, engine
from .workers import WelcomeEmail

# The same database for oban, named without SQLAlchemy's driver: postgresql:// or sqlite:///.
# Client only (no queues); the schema prefix comes from OBAN_PREFIX, "public" by default.
url = make_url(DATABASE_URL)
oban = Oban(dsn=url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False))

app = Flask(__name__)


@app.cli.command("init-db")
def init_db() -> None:
    """Create the app's tables (a real app runs migrations: docs/sync.md, "Alembic")."""
    Base.metadata.create_all(engine)


def add_user(email: str) -> tuple[User, Job]:
    """A new user and the job that welcomes them, in the session's transaction."""
    user = User(email=email)
    db.add(user)
    db.flush()  # assigns user.id
    job = WelcomeEmail.enqueue_sync({"user_id": user.id}, conn=db)
    return user, job


@app.post("/signup")
def signup() -> tuple[dict[str, Any], int]:
    user, job = add_user(request.form["email"])
    db.commit()  # the user and the job, or neither
    return {"user_id": user.id, "job_id": job.id}, 201


@app.post("/signup/broken")
def broken_signup() -> tuple[dict[str, Any], int]:
    """As /signup, but the request fails after enqueueing: the rollback (see remove_session)
    takes the job with the user, so nobody is welcomed who never signed up."""
    add_user(request.form["email"])
    raise RuntimeError("the request failed before it committed")


@app.get("/jobs/<int:job_id>")
def show_job(job_id: int) -> tuple[dict[str, Any], int]:
    job = oban.sync.get_job(job_id)  # on oban's own connection, committed jobs only
    if job is None:
        return {"error": f"no job {job_id}"}, 404
    return {"id": job.id, "state": job.state, "attempt": job.attempt, "args": job.args}, 200


@app.teardown_appcontext
def remove_session(error: BaseException | None) -> None:
    db.remove()  # closes the request's session, rolling back what it did not commit
