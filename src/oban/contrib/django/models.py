"""A read-only, unmanaged model of ``oban_jobs`` for the admin and for ORM queries
(``Job.objects.filter(state="discarded")``). Change jobs through oban's API
(``get_oban().sync.retry_job(...)``), never by saving this model: ``save()`` refuses."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from django.db import models

from ...job import JobState
from .conf import jobs_table

__all__ = ["Job"]


class JobJsonField(models.Field):
    """``args``/``meta``: PostgreSQL jsonb (text here, as Django reads jsonb) or SQLite JSON
    text, decoded exactly (big integers stay integers)."""

    def get_internal_type(self) -> str:
        return "TextField"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if isinstance(value, str | bytes):
            return orjson.loads(value) if value else None
        return value


class JobListField(models.Field):
    """``tags``/``attempted_by`` (PostgreSQL ``text[]``) and ``errors`` (``jsonb[]``, each
    element JSON text): a list on both engines (SQLite stores a JSON array)."""

    def __init__(self, *args: Any, json_items: bool = False, **kwargs: Any) -> None:
        self.json_items = json_items
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        if self.json_items:
            kwargs["json_items"] = True
        return name, path, args, kwargs

    def get_internal_type(self) -> str:
        return "TextField"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str | bytes):  # SQLite: the whole list as JSON
            return orjson.loads(value) if value else []
        if self.json_items:
            return [orjson.loads(item) if isinstance(item, str | bytes) else item for item in value]
        return list(value)


class ReadOnlyQuerySet(models.QuerySet):
    """Reads only: ``update()`` and ``delete()`` would change jobs behind oban's back (a
    running job deleted, a state without its timestamps)."""

    def update(self, **kwargs: Any) -> int:
        raise TypeError(_READ_ONLY)

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError(_READ_ONLY)


_READ_ONLY = (
    "oban's Job model is read only: enqueue with Worker.enqueue_sync(...) and change jobs "
    "with get_oban().sync.retry_many_jobs/cancel_many_jobs/delete_many_jobs/update_job"
)


class Job(models.Model):
    """One row of ``oban_jobs`` (read only: see the module)."""

    objects = ReadOnlyQuerySet.as_manager()

    STATES: ClassVar[list[tuple[str, str]]] = [(s.value, s.value.capitalize()) for s in JobState]

    id = models.BigAutoField(primary_key=True)
    state = models.CharField(max_length=16, choices=STATES)
    queue = models.CharField(max_length=128)
    worker = models.CharField(max_length=128)
    args = JobJsonField()
    meta = JobJsonField()
    errors = JobListField(json_items=True)
    tags = JobListField()
    attempted_by = JobListField(null=True)
    attempt = models.IntegerField()
    max_attempts = models.IntegerField()
    priority = models.IntegerField()
    inserted_at = models.DateTimeField()
    scheduled_at = models.DateTimeField()
    attempted_at = models.DateTimeField(null=True)
    completed_at = models.DateTimeField(null=True)
    discarded_at = models.DateTimeField(null=True)
    cancelled_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = jobs_table()
        ordering = ("-id",)
        verbose_name = "job"
        verbose_name_plural = "jobs"
        default_permissions = ("view", "change", "delete")

    def __str__(self) -> str:
        return f"{self.worker} #{self.id} ({self.state})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(_READ_ONLY)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError(_READ_ONLY)
