"""Settings shared by the PostgreSQL and SQLite variants of the test project.

The database names travel in environment variables so that a ``manage.py oban start`` this
test session spawns uses the same (test) database; each session picks its own names, so two
runs on one machine never share a database."""

import os
import tempfile

import django

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if "OBAN_DJANGO_DIR" not in os.environ:
    os.environ["OBAN_DJANGO_DIR"] = tempfile.mkdtemp(prefix="oban-django-")
RUN_DIR = os.environ["OBAN_DJANGO_DIR"]

SECRET_KEY = "oban-django-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    *(["django_tasks"] if django.VERSION < (6,) else []),  # the backport, before django.tasks
    "oban.contrib.django",
    "shop",
]

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

TASKS = {"default": {"BACKEND": "oban.contrib.django.tasks.ObanBackend"}}

OBAN = {
    "queues": {"default": 5, "mail": 5},
    "stager": {"interval": 0.2},
    "shutdown_grace_period": 5,
}
