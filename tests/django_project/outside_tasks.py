"""A task outside the installed apps: the backend refuses it (a job's args may only make a node
import tasks of installed apps)."""

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task()
def stray() -> int:
    return 1
