"""The app's jobs. ``oban start`` imports this module to run them, by the worker's name
(``examples.flask_app.workers.WelcomeEmail``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from oban import Job, worker

from .models import User, engine

logger = logging.getLogger(__name__)


@worker(queue="mailers", max_attempts=5)
class WelcomeEmail:
    """Welcomes a new user once, and records when."""

    def process(self, job: Job) -> None:
        with Session(engine) as session, session.begin():
            user = session.get(User, job.args["user_id"])
            if user is None or user.welcomed_at is not None:
                return  # deleted since, or welcomed by an earlier attempt
            logger.info("sending the welcome email to %s", user.email)
            user.welcomed_at = datetime.now(UTC)
