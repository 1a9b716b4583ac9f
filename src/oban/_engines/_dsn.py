"""Which engine a DSN means, and where an SQLite DSN points."""

from __future__ import annotations

DEFAULT_SQLITE_PATH = "oban.db"


def is_postgres(dsn: str | None) -> bool:
    """Whether ``dsn`` names a PostgreSQL server."""
    return dsn is not None and dsn.startswith(("postgres://", "postgresql://"))


def sqlite_path(dsn: str | None) -> str:
    """The database file for ``dsn``: ``None`` -> ``./oban.db``; ``sqlite:///rel.db`` ->
    ``rel.db``; ``sqlite:////abs/path.db`` -> ``/abs/path.db`` (SQLAlchemy's convention).

    Raises:
        ValueError: a DSN that is neither SQLite nor PostgreSQL.
    """
    if dsn is None or dsn == "":
        return DEFAULT_SQLITE_PATH
    if dsn.startswith("sqlite:///"):
        path = dsn.removeprefix("sqlite:///")
        if not path:
            raise ValueError(f"dsn {dsn!r} names no database file: use sqlite:///path/to/jobs.db")
        return path
    raise ValueError(f"unsupported dsn {dsn!r}: use postgresql://... or sqlite:///path/to/jobs.db")
