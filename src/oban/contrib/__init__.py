"""Integrations with other frameworks: :mod:`oban.contrib.django`, :mod:`oban.contrib.alembic`.

Each needs its framework installed (the matching extra, e.g. ``oban[django]``)."""
