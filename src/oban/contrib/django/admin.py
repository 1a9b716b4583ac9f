"""The jobs in Django's admin: read only, newest first, filtered by state and queue, with
retry, cancel and delete actions that go through oban's API. Nothing counts the whole table:
the paginator counts at most :data:`COUNT_LIMIT` rows and the full count is not shown."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from . import get_oban
from .conf import database_alias
from .models import Job

__all__ = ["COUNT_LIMIT", "JobAdmin"]

#: The most rows the changelist counts; past it, pages are offered up to this many rows.
COUNT_LIMIT = 10_000


class BoundedCountPaginator(Paginator):
    """Counts at most :data:`COUNT_LIMIT` + 1 rows (``SELECT count(*) FROM (... LIMIT n)``)."""

    @cached_property
    def count(self) -> int:
        return int(self.object_list[: COUNT_LIMIT + 1].count())


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # oban's counts by queue: bounded on PostgreSQL (no scan of the whole table).
        counts = get_oban().sync.count_jobs(by=("queue",))
        return [(queue, queue) for (queue,) in sorted(counts)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        return queryset.filter(queue=value) if value else queryset


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "state", "queue", "worker", "attempt", "scheduled_at", "attempted_at")
    list_filter = ("state", QueueFilter)
    search_fields = ("=id", "worker")
    ordering = ("-id",)
    show_full_result_count = False
    paginator = BoundedCountPaginator
    list_per_page = 50
    actions = ("retry_jobs", "cancel_jobs", "delete_jobs")
    readonly_fields = tuple(field.name for field in Job._meta.fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return super().get_queryset(request).using(database_alias())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the form is read only; retry and cancel have their own permission

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Delete goes through the delete_jobs action (this also withholds Django's
        # delete_selected, which would delete rows through the ORM, running jobs too).
        return False

    def has_steer_permission(self, request: HttpRequest) -> bool:
        """Retry and cancel: the ``oban.change_job`` permission."""
        return bool(request.user.has_perm("oban.change_job"))

    def has_remove_permission(self, request: HttpRequest) -> bool:
        """Delete: the ``oban.delete_job`` permission."""
        return bool(request.user.has_perm("oban.delete_job"))

    @admin.action(description="Retry selected jobs", permissions=["steer"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        count = get_oban().sync.retry_many_jobs(ids)
        self.message_user(request, f"Retried {count} of {len(ids)} jobs.", messages.SUCCESS)

    @admin.action(description="Cancel selected jobs", permissions=["steer"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        count = get_oban().sync.cancel_many_jobs(ids)
        self.message_user(request, f"Cancelled {count} of {len(ids)} jobs.", messages.SUCCESS)

    @admin.action(description="Delete selected jobs (not executing ones)", permissions=["remove"])
    def delete_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        count = get_oban().sync.delete_many_jobs(ids)
        self.message_user(request, f"Deleted {count} of {len(ids)} jobs.", messages.SUCCESS)
