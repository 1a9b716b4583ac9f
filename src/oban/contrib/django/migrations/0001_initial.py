"""Install (or upgrade to) the schema ``oban install`` creates: Elixir Oban's version 14 plus
oban's own tables, on the database of ``OBAN_DATABASE_ALIAS``, in ``OBAN["prefix"]``."""

from django.db import migrations

from oban.contrib.django import _schema


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.RunPython(_schema.install, _schema.uninstall, elidable=False),
    ]
