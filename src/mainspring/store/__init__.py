"""Stores: where runs, histories and queued work live."""

from __future__ import annotations

import os
import re

from ..errors import StoreError
from ._redact import redacted
from .base import Clock, Store
from .records import RunRecord, WorkflowStatus

DEFAULT_URL = "sqlite:///mainspring.db"

__all__ = ["DEFAULT_URL", "Clock", "RunRecord", "Store", "WorkflowStatus", "store_from_url"]


def store_from_url(url: str | None = None, *, clock: Clock | None = None) -> Store:
    """Make the store a URL names (``MAINSPRING_DB`` or ``sqlite:///mainspring.db`` if none).

    ``sqlite:///path.db`` (relative), ``sqlite:////abs/path.db``, ``memory://`` (an
    in-memory SQLite database for tests) and ``postgresql://user@host/db``.

    Raises:
        StoreError: the URL (or ``MAINSPRING_DB``, when set) is empty or unknown.
        TypeError: ``url`` is not a string.
    """
    if url is None:
        url = os.environ.get("MAINSPRING_DB")
        if url is None:
            url = DEFAULT_URL
        elif not url.strip():
            raise StoreError(
                "the database URL is empty: MAINSPRING_DB is set to nothing; "
                "set it to a URL such as sqlite:///mainspring.db, or unset it"
            )
    elif not isinstance(url, str):
        raise TypeError(f"the database URL must be a string, not {type(url).__name__}")
    elif not url.strip():
        raise StoreError(
            "the database URL is empty; pass one such as sqlite:///mainspring.db, "
            "or None for MAINSPRING_DB (else sqlite:///mainspring.db)"
        )
    if "://" not in url and _CONNINFO.search(url):
        raise StoreError(
            f"{redacted(url)!r} is a libpq key=value string; Mainspring takes a URL: "
            "postgresql://user:password@host:5432/db (a path is a SQLite file)"
        )
    scheme = url.split(":", 1)[0].lower() if "://" in url else "sqlite"
    if scheme in ("sqlite", "memory") or url == ":memory:":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, clock)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise StoreError(
                "PostgreSQL support needs psycopg: pip install 'mainspring[postgres]'"
            ) from exc
        store: Store = PostgresStore(url, clock)
        return store
    raise StoreError(
        f"unknown database URL {redacted(url)!r}: use sqlite:///path.db, memory:// or "
        "postgresql://…"
    )


# a libpq key=value connection string, which would otherwise be taken for a file name
_CONNINFO = re.compile(r"(?:^|\s)(?:host|hostaddr|port|dbname|user|password|sslmode)\s*=")
