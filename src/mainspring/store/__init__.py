"""Stores: where runs, histories and queued work live."""

from __future__ import annotations

import os

from ..errors import StoreError
from .base import Clock, Store
from .records import RunRecord, WorkflowStatus

DEFAULT_URL = "sqlite:///mainspring.db"

__all__ = ["DEFAULT_URL", "Clock", "RunRecord", "Store", "WorkflowStatus", "store_from_url"]


def store_from_url(url: str | None = None, *, clock: Clock | None = None) -> Store:
    """Make the store a URL names (``MAINSPRING_DB`` or ``sqlite:///mainspring.db`` if none).

    ``sqlite:///path.db`` (relative), ``sqlite:////abs/path.db``, ``memory://`` (an
    in-memory SQLite database for tests) and ``postgresql://user@host/db``.
    """
    url = url or os.environ.get("MAINSPRING_DB") or DEFAULT_URL
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
        f"unknown database URL {url!r}: use sqlite:///path.db, memory:// or postgresql://…"
    )
