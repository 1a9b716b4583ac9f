"""Settings of the example: SQLite (``example.db`` here, or ``SQLITE_PATH``) by default,
PostgreSQL when ``DATABASE_URL=postgresql://user:password@host:port/name`` is set."""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import django
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "an-example-only-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "mysite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "oban.contrib.django",
    "signups",
]
if django.VERSION < (6, 0):  # the Tasks framework's backport: pip install django-tasks
    INSTALLED_APPS.append("django_tasks")

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _database(url: str) -> dict[str, object]:
    if not url:
        path = Path(os.environ.get("SQLITE_PATH") or BASE_DIR / "example.db")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            # `oban start` writes to the same file: wait for its lock instead of failing.
            "OPTIONS": {"timeout": 20},
            # Tests too need a file (oban refuses an in-memory database).
            "TEST": {"NAME": path.with_name(f"test_{path.name}")},
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(f"DATABASE_URL must be postgresql://..., got {parts.scheme}://")
    return {
        "ENGINE": "django.db.backends.postgresql",  # with psycopg 3, which oban needs
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


DATABASES = {"default": _database(os.environ.get("DATABASE_URL", ""))}

# oban reads its DSN from DATABASES["default"]; the other keys are those of oban.toml.
OBAN = {
    "queues": {"default": 5, "mailers": 5},
}

TASKS = {"default": {"BACKEND": "oban.contrib.django.tasks.ObanBackend"}}
