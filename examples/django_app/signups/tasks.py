"""A Django task, run by oban (settings.TASKS names oban's backend)."""

try:
    from django.tasks import task
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:  # Django < 6: the django-tasks backport
    from django_tasks import task
    from django_tasks.exceptions import TaskResultDoesNotExist

from .models import Signup

__all__ = ["TaskResultDoesNotExist", "count_signups"]


@task(queue_name="default")
def count_signups(welcomed: bool) -> int:
    return Signup.objects.filter(welcomed=welcomed).count()
