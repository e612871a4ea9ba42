"""Shared fixtures: a fresh store per test, on SQLite and (when reachable) PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mainspring import Client
from tests import _pg
from tests._clock import ManualClock

STORES = ["sqlite", *(["postgres"] if _pg.enabled() else [])]


def pytest_report_header() -> list[str]:
    return [_pg.report_header(), _pg.pgbouncer_report()]


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a fresh, empty database of each store kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        with _pg.fresh_database() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL of a fresh SQLite file (for tests specific to SQLite)."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    """A client connected to a fresh database."""
    c = await Client.connect(db_url)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def clocked(db_url: str) -> AsyncIterator[tuple[Client, ManualClock]]:
    """A client on a fresh database whose store reads a clock the test moves by hand."""
    clock = ManualClock()
    c = await Client.connect(db_url, clock=clock)
    try:
        yield c, clock
    finally:
        await c.close()
