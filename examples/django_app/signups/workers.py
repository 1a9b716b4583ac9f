"""Imported at startup by oban.contrib.django (each installed app's ``workers`` module)."""

from oban import Job, worker

from .models import Signup


@worker(queue="mailers", max_attempts=5)
class WelcomeEmail:
    """Runs in a thread of ``manage.py oban start``, with its own Django connection."""

    def process(self, job: Job) -> None:
        signup = Signup.objects.get(id=job.args["signup_id"])
        print(f"Welcome, {signup.email}!")  # send the email here
        Signup.objects.filter(id=signup.id).update(welcomed=True)
