"""Build the unique-jobs index without blocking writes where the table already had jobs
(PostgreSQL's ``CREATE INDEX CONCURRENTLY`` runs outside a transaction, hence ``atomic =
False``); a no-op where 0001 built it."""

from django.db import migrations

from oban.contrib.django import _schema


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("oban", "0001_initial")]
    operations = [
        migrations.RunPython(_schema.unique_index, migrations.RunPython.noop, elidable=False),
    ]
