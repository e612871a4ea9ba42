"""Upgrading a database made by an earlier schema version keeps its runs running."""

from __future__ import annotations

import asyncio
import sqlite3

from mainspring import Client, Worker
from mainspring.store.sqlite import parse_sqlite_url
from tests.integration.agents import Approval


def _as_version_1(url: str) -> None:
    """Turn a fresh database back into schema version 1: without version 2's column."""
    statements = [
        "ALTER TABLE {s}mainspring_runs DROP COLUMN wft_sticky",
        "UPDATE {s}mainspring_meta SET value = '1' WHERE key = 'version'",
    ]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(parse_sqlite_url(url)[0])
        with conn:
            for sql in statements:
                conn.execute(sql.format(s=""))
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            for sql in statements:
                pg.execute(sql.format(s="mainspring."))  # type: ignore[arg-type]


async def test_a_version_1_database_is_upgraded_and_its_runs_finish(db_url: str) -> None:
    client = await Client.connect(db_url)
    await client.start_workflow(Approval.run, 3600.0, id="old", task_queue="q")
    await client.close()
    _as_version_1(db_url)

    client = await Client.connect(db_url)  # migrates to the latest version
    try:
        current, latest = await client.store.schema_status()
        assert (current, latest) == (latest, latest) and latest >= 2
        handle = client.get_workflow_handle("old")
        async with Worker(client, task_queue="q", workflows=[Approval]):
            await handle.signal(Approval.decide, "yes")
            result = await asyncio.wait_for(handle.result(), 30)
        assert result == "decided yes after 1 signal(s)"
    finally:
        await client.close()
