"""The test project on a SQLite file (pytest-django's test database is a file too: oban's
nodes need one they can open)."""

import os

from .settings_base import *  # noqa: F403
from .settings_base import RUN_DIR

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.setdefault("OBAN_DJANGO_SQLITE", os.path.join(RUN_DIR, "db.sqlite3")),
        "TEST": {"NAME": os.path.join(RUN_DIR, "test-db.sqlite3")},
        "OPTIONS": {"timeout": 20},
    }
}
