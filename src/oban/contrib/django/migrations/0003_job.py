"""The read-only ``Job`` model (``managed = False``: the table is 0001's). Its table follows
``OBAN["prefix"]``, here as in the model, so a prefix never looks like a model change."""

from django.db import migrations, models

import oban.contrib.django.models
from oban.contrib.django.conf import jobs_table


class Migration(migrations.Migration):
    dependencies = [("oban", "0002_unique_index")]

    operations = [
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("available", "Available"),
                            ("cancelled", "Cancelled"),
                            ("completed", "Completed"),
                            ("discarded", "Discarded"),
                            ("executing", "Executing"),
                            ("retryable", "Retryable"),
                            ("scheduled", "Scheduled"),
                            ("suspended", "Suspended"),
                        ],
                        max_length=16,
                    ),
                ),
                ("queue", models.CharField(max_length=128)),
                ("worker", models.CharField(max_length=128)),
                ("args", oban.contrib.django.models.JobJsonField()),
                ("meta", oban.contrib.django.models.JobJsonField()),
                ("errors", oban.contrib.django.models.JobListField(json_items=True)),
                ("tags", oban.contrib.django.models.JobListField()),
                ("attempted_by", oban.contrib.django.models.JobListField(null=True)),
                ("attempt", models.IntegerField()),
                ("max_attempts", models.IntegerField()),
                ("priority", models.IntegerField()),
                ("inserted_at", models.DateTimeField()),
                ("scheduled_at", models.DateTimeField()),
                ("attempted_at", models.DateTimeField(null=True)),
                ("completed_at", models.DateTimeField(null=True)),
                ("discarded_at", models.DateTimeField(null=True)),
                ("cancelled_at", models.DateTimeField(null=True)),
            ],
            options={
                "verbose_name": "job",
                "verbose_name_plural": "jobs",
                "db_table": jobs_table(),
                "ordering": ("-id",),
                "managed": False,
                "default_permissions": ("view", "change", "delete"),
            },
        ),
    ]
