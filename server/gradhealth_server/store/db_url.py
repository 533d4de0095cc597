"""`--db`: the verdict store's URL, checked before anything connects.

Two stores are supported: SQLite (a file) and PostgreSQL through psycopg 3.
`postgres://` and `postgresql://` (what most providers hand out) mean psycopg
here; SQLAlchemy would look for psycopg2, which is not installed. Anything
else, and a SQLite file whose directory does not exist or cannot be written,
is a one-line error naming the URL (password hidden) or the path.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED = "sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST/DB"


class BadDatabaseUrl(ValueError):
    """The message is one line and never shows a password."""


def normalize(url: str) -> str:
    """The URL gradhealth connects with; BadDatabaseUrl when it cannot work."""
    text = url.strip()
    for alias in ("postgres://", "postgresql://", "postgres+psycopg://"):
        if text.startswith(alias):
            text = "postgresql+psycopg://" + text[len(alias) :]
    try:
        parsed = make_url(text)
    except ArgumentError:
        shown = text.split("@")[-1] if "@" in text else text
        raise BadDatabaseUrl(f"--db {shown!r} is not a database URL: use {SUPPORTED}") from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername == "sqlite":
        _check_sqlite(parsed.database, shown)
    elif parsed.drivername != "postgresql+psycopg":
        raise BadDatabaseUrl(
            f"--db {shown!r}: {parsed.drivername!r} is not supported; use {SUPPORTED}"
        )
    elif not parsed.host and not parsed.query.get("host"):
        raise BadDatabaseUrl(f"--db {shown!r} names no host: use {SUPPORTED}")
    return text


def _check_sqlite(database: str | None, shown: str) -> None:
    if not database or database == ":memory:":
        raise BadDatabaseUrl(
            f"--db {shown!r} names no file: use sqlite:///FILE (relative) or sqlite:////ABSOLUTE"
        )
    path = Path(database)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise BadDatabaseUrl(
            f"cannot open the SQLite store {str(path)!r}: directory {str(directory)!r} "
            "does not exist"
        )
    target = path if path.exists() else directory
    if not os.access(target, os.W_OK):
        raise BadDatabaseUrl(
            f"cannot open the SQLite store {str(path)!r}: {str(target)!r} is not writable"
        )
