"""Which engine a DSN means, where an SQLite DSN points, and how a DSN is shown.

A DSN is shown (in logs, errors and CLI output) only through :func:`mask_dsn`, so a password
never reaches a log line or a terminal.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

DEFAULT_SQLITE_PATH = "oban.db"
#: What stands in for a password wherever a DSN is shown.
MASK = "***"

# key=value conninfo ("host=db password=secret") and URL query parameters (?password=...).
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&#]*)", re.IGNORECASE)


def is_postgres(dsn: str | None) -> bool:
    """Whether ``dsn`` names a PostgreSQL server."""
    return dsn is not None and dsn.startswith(("postgres://", "postgresql://"))


def sqlite_path(dsn: str | None) -> str:
    """The database file for ``dsn``: ``None`` -> ``./oban.db``; ``sqlite:///rel.db`` ->
    ``rel.db``; ``sqlite:////abs/path.db`` -> ``/abs/path.db`` (SQLAlchemy's convention).

    Raises:
        ValueError: a DSN that is neither SQLite nor PostgreSQL (shown masked).
    """
    if dsn is None or dsn == "":
        return DEFAULT_SQLITE_PATH
    if dsn.startswith("sqlite:///"):
        path = dsn.removeprefix("sqlite:///")
        if not path:
            raise ValueError(f"dsn {dsn!r} names no database file: use sqlite:///path/to/jobs.db")
        return path
    raise ValueError(
        f"unsupported dsn {mask_dsn(dsn)!r}: use postgresql://... or sqlite:///path/to/jobs.db"
    )


def _url_parts(rest: str) -> tuple[str, str, str]:
    """A URL's ``user:password``, hosts and the rest (path and query), split after ``://``.

    libpq ends the user information at an "@" seen before the first "/"; the last such "@"
    is taken here, so a password holding "@", "?" or "#" counts as password whole.
    """
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    userinfo, _at, hosts = authority.rpartition("@")
    return userinfo, hosts, path


def mask_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***``, fit to be logged or printed.

    Handles URLs (``scheme://user:password@host/db``, also ``?password=`` in the query) and
    key=value conninfo strings (``host=db password=secret``). Where it is unclear where a
    URL's user information ends, more is masked rather than less.

    >>> mask_dsn("postgresql://app:s3cret@db.internal:5432/jobs")
    'postgresql://app:***@db.internal:5432/jobs'
    >>> mask_dsn("host=db dbname=jobs password=s3cret")
    'host=db dbname=jobs password=***'
    """
    scheme, separator, rest = dsn.partition("://")
    if separator:
        userinfo, hosts, path = _url_parts(rest)
        if ":" in userinfo:
            dsn = f"{scheme}://{userinfo.partition(':')[0]}:{MASK}@{hosts}{path}"
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", dsn)


def _passwords(dsn: str) -> list[str]:
    """Every text of ``dsn`` that :func:`mask_dsn` hides."""
    found = [match.group(2).strip("'") for match in _KEYWORD_PASSWORD.finditer(dsn)]
    _scheme, separator, rest = dsn.partition("://")
    userinfo = _url_parts(rest)[0] if separator else ""
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    return found


def scrub(text: str, dsn: str) -> str:
    """``text`` (a message about ``dsn``) with ``dsn``'s password masked wherever it appears,
    and every piece of it (of three or more characters) that libpq may have split off a
    malformed DSN and quoted as a host name.

    >>> scrub("failed to resolve host 'cret@db'", "postgresql://app:se@cret@db/jobs")
    "failed to resolve host '***@db'"
    """
    secrets: set[str] = set()
    for password in _passwords(dsn):
        pieces = re.split(r"[@/\s]", password)
        secrets.update([password, unquote(password), *(p for p in pieces if len(p) >= 3)])
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def describe(dsn: str | None) -> str:
    """The engine and database ``dsn`` selects, for logs and banners (password masked).

    >>> describe(None)
    'SQLite oban.db'
    >>> describe("postgresql://app:s3cret@db/jobs")
    'PostgreSQL postgresql://app:***@db/jobs'
    """
    if is_postgres(dsn):
        assert dsn is not None
        return f"PostgreSQL {mask_dsn(dsn)}"
    return f"SQLite {sqlite_path(dsn)}"
