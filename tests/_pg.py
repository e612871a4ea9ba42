"""PostgreSQL test databases (filled in by the PostgreSQL store work).

``enabled()`` says whether the PostgreSQL half of the suite runs; ``fresh_database()``
yields the URL of a new database and drops it afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def enabled() -> bool:
    """Whether PostgreSQL tests run (not yet: the store is not written)."""
    return False


def report_header() -> str:
    """A line for pytest's header saying whether the PostgreSQL half runs."""
    return "mainspring: PostgreSQL tests disabled (no PostgreSQL store yet)"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """Yield the URL of a fresh database."""
    raise RuntimeError("PostgreSQL tests are not enabled")
    yield ""  # pragma: no cover
