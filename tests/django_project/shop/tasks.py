"""Django Tasks (django.tasks, or the django-tasks backport on Django < 6)."""

from typing import Any

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task(queue_name="mail", priority=50)
def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


@task(takes_context=True)
def attempt_number(context: Any, fail_first: bool) -> int:
    if fail_first and context.attempt < 2:
        raise RuntimeError("first attempt fails")
    return context.attempt


@task()
def when() -> object:
    """Returns what JSON cannot hold: the task fails once, and is not run again."""
    import datetime

    return datetime.datetime(2026, 1, 1)
