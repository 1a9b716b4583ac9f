"""Which engine a DSN means, where an SQLite DSN points, and how a DSN is shown.

A DSN is shown (in logs, errors and CLI output) only through :func:`mask_dsn`, so a password
never reaches a log line or a terminal. Messages that quote a DSN we did not format (libpq's
and psycopg_pool's) go through :func:`scrub`; the ``psycopg`` and ``psycopg.pool`` loggers
carry a filter (:func:`guard_pool_logs`) that masks passwords in every record they log.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote

DEFAULT_SQLITE_PATH = "oban.db"
#: What stands in for a password wherever a DSN is shown.
MASK = "***"

# key=value conninfo ("host=db password=secret"), URL query parameters (?password=...), also
# percent-encoded (password%3Dsecret) and the client key's sslpassword.
_KEYWORD_PASSWORD = re.compile(
    r"((?<![A-Za-z_])(?:ssl)?password\s*(?:=|%3D)\s*)('(?:[^'\\]|\\.)*'|[^\s&#]*)", re.IGNORECASE
)
# A URL's scheme, for the "unsupported dsn" message.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}")
# URLs inside a longer text: up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]*")


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
        f"unsupported dsn {_shown_unsupported(dsn)}: use postgresql://... or "
        "sqlite:///path/to/jobs.db"
    )


def _shown_unsupported(dsn: str) -> str:
    """As much of an unsupported DSN as can be shown without its password: the masked URL
    when it is a URL whose user information is unambiguous, else only its scheme."""
    scheme, separator, rest = dsn.partition("://")
    if separator and _SCHEME.fullmatch(scheme):
        slash = rest.find("/")
        authority = rest if slash < 0 else rest[:slash]
        # An "@" past the authority (a password holding "/") makes it unclear what to hide.
        if rest.count("@") == authority.count("@") and not any(c.isspace() for c in rest):
            return repr(mask_dsn(dsn))
    match = _SCHEME.match(dsn)
    if match and dsn[match.end() : match.end() + 1] == ":":
        return f"with scheme {match.group()!r} (the rest is not shown: it may hold a password)"
    return "(not shown: it may hold a password)"


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
    return _mask(text, _secrets(dsn))


def _secrets(dsn: str) -> set[str]:
    """What :func:`scrub` masks for ``dsn``."""
    secrets: set[str] = set()
    for password in _passwords(dsn):
        pieces = re.split(r"[@/\s]", password)
        secrets.update([password, unquote(password), *(p for p in pieces if len(p) >= 3)])
    secrets.discard("")
    return secrets


def _mask(text: str, secrets: Iterable[str]) -> str:
    # The longest first: a password that contains another is masked whole, not around it.
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it, and every ``password=`` value, masked:
    for messages that may quote a DSN oban was not told about.

    >>> mask_secrets('invalid URI: "postgresql://app:s3cret@db/jobs"; password=x')
    'invalid URI: "postgresql://app:***@db/jobs"; password=***'
    """
    text = _URL_IN_TEXT.sub(lambda match: mask_dsn(match.group()), text)
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", text)


class _PasswordFilter(logging.Filter):
    """Masks passwords in the records of a third-party logger (see :func:`guard_pool_logs`):
    those of the DSNs it was given, wherever they appear, and any that look like one."""

    #: DSNs remembered at most (a process uses a handful; the oldest are forgotten).
    LIMIT = 32

    def __init__(self) -> None:
        super().__init__()
        self.dsns: list[str] = []
        self.secrets: frozenset[str] = frozenset()
        self.lock = threading.Lock()

    def remember(self, dsn: str) -> None:
        with self.lock:
            if dsn in self.dsns:
                return
            self.dsns = [*self.dsns, dsn][-self.LIMIT :]
            self.secrets = frozenset().union(*(_secrets(known) for known in self.dsns))

    def clean(self, text: str) -> str:
        # Every DSN's secrets at once, the longest first (one DSN's password may hold another's).
        return mask_secrets(_mask(text, self.secrets))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # The traceback as text, masked; the exception itself is dropped so that no
            # formatter renders it again unmasked.
            record.exc_text = self.clean(record.exc_text)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return True


#: The loggers of psycopg and psycopg_pool (the pool's scheduler logs under its module name).
GUARDED_LOGGERS = (
    "psycopg",
    "psycopg.pool",
    "psycopg_pool.sched",
    "psycopg_pool.sched_async",
)
_password_filter = _PasswordFilter()


def guard_pool_logs(dsn: str | None = None) -> None:
    """Mask passwords in what psycopg and psycopg_pool log (their warnings quote libpq's
    errors, which may quote the DSN): ``dsn``'s wherever it appears (also the pieces libpq
    splits off a malformed one), and any URL's or ``password=`` value. Idempotent; the
    filter is installed when this module is imported, so calling it adds ``dsn`` only.
    """
    for name in GUARDED_LOGGERS:
        target = logging.getLogger(name)
        if _password_filter not in target.filters:
            target.addFilter(_password_filter)
    if dsn:
        _password_filter.remember(dsn)


guard_pool_logs()


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
