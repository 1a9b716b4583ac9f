"""The test project on PostgreSQL (127.0.0.1:5432, trust auth, as the test suite uses)."""

import os

from .settings_base import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.setdefault("OBAN_DJANGO_DB", f"oban_django_{os.getpid()}"),
        "USER": os.environ.get("OBAN_TEST_PGUSER", "postgres"),
        "HOST": os.environ.get("OBAN_TEST_PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("OBAN_TEST_PGPORT", "5432"),
    }
}
