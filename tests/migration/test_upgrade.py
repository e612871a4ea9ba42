"""Upgrading a database made by an earlier schema version keeps its runs running."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from mainspring import Client, SchemaVersionError, Worker
from mainspring.history import EventType
from mainspring.store import store_from_url
from mainspring.store.sqlite import parse_sqlite_url
from tests.acceptance.test_cli import cli
from tests.integration.agents import Approval, Hello, echo, sync_upper


def _as_version_1(url: str) -> None:
    """Turn a database back into schema version 1: without version 2's columns, the
    indexes of versions 3 to 5 and version 6's table."""
    statements = [
        "DROP INDEX {s}mainspring_runs_closed_status",
        "DROP INDEX {s}mainspring_runs_closed_type",
        "DROP INDEX IF EXISTS {s}mainspring_runs_open_by_time",  # SQLite only
        "DROP INDEX {s}mainspring_activities_deadline",
        "ALTER TABLE {s}mainspring_runs DROP COLUMN wft_sticky",
        "ALTER TABLE {s}mainspring_activities DROP COLUMN sticky",
        "DROP TABLE {s}mainspring_workers",
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
    await client.start_workflow(Approval.run, 3600.0, id="waits", task_queue="q")
    hello = await client.start_workflow(Hello.run, "old", id="queued", task_queue="q")
    # a worker without the activity decides the first steps: Hello's activity stays queued
    async with Worker(client, task_queue="q", workflows=[Approval, Hello]):
        for _ in range(3000):  # polls the history (no event says "decided"); 30 s at most
            history = await hello.fetch_history()
            if any(e.event_type is EventType.ACTIVITY_TASK_SCHEDULED for e in history):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("Hello's first step was never decided")
    await client.close()
    _as_version_1(db_url)
    info = await store_from_url(db_url).inspect_schema()  # read-only: migrates nothing
    assert (info.current, info.exists) == (1, True)

    client = await Client.connect(db_url)  # migrates to the latest version
    try:
        current, latest = await client.store.schema_status()
        assert (current, latest) == (latest, latest) and latest >= 2
        waits = client.get_workflow_handle("waits")
        queued = client.get_workflow_handle("queued")
        async with Worker(
            client, task_queue="q", workflows=[Approval, Hello], activities=[echo, sync_upper]
        ):
            await waits.signal(Approval.decide, "yes")
            assert await asyncio.wait_for(waits.result(), 30) == "decided yes after 1 signal(s)"
            assert await asyncio.wait_for(queued.result(), 30) == "HELLO OLD"
    finally:
        await client.close()


async def test_a_version_4_sqlite_file_gains_the_index_its_listing_names(sqlite_url: str) -> None:
    # Version 4 shipped without the index of open runs by time that SQLite's listing of
    # open runs names (INDEXED BY): version 5 adds it, so such a file lists them again.
    client = await Client.connect(sqlite_url)
    await client.start_workflow(Approval.run, 3600.0, id="open", task_queue="q")
    await client.close()
    conn = sqlite3.connect(parse_sqlite_url(sqlite_url)[0])
    with conn:
        conn.execute("DROP INDEX mainspring_runs_open_by_time")
        conn.execute("UPDATE mainspring_meta SET value = '4' WHERE key = 'version'")
    conn.close()
    client = await Client.connect(sqlite_url)
    try:
        assert (await client.store.schema_status())[0] >= 5
        [run] = await client.list_workflows(status="running")
        assert run.workflow_id == "open"
        assert [r.workflow_id for r in await client.list_workflows(workflow_type="Approval")] == [
            "open"
        ]
    finally:
        await client.close()


def _set_meta(url: str, **values: str) -> None:
    """Write keys of mainspring_meta as a newer Mainspring's migration would."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(parse_sqlite_url(url)[0])
        with conn:
            for key, value in values.items():
                conn.execute("UPDATE mainspring_meta SET value = ? WHERE key = ?", (value, key))
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            for key, value in values.items():
                pg.execute(
                    "UPDATE mainspring.mainspring_meta SET value = %s WHERE key = %s", (value, key)
                )


async def test_a_migration_records_which_code_may_still_run_on_the_database(
    db_url: str,
) -> None:
    client = await Client.connect(db_url)
    try:
        _current, latest = await client.store.schema_status()
        meta = await client.store._run(  # type: ignore[attr-defined]
            lambda tx: {k: tx.q("get_meta", {"key": k})[0][0] for k in ("version", "compatible")},
            readonly=True,
        )
    finally:
        await client.close()
    # versions 4 and 5 only add indexes: code of version 3 runs on them as before
    assert meta == {"version": str(latest), "compatible": "3"}


async def test_a_newer_schema_made_to_work_with_this_code_is_used_during_a_rolling_upgrade(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await Client.connect(db_url)
    latest = (await client.store.schema_status())[1]
    await client.close()
    # a newer release's migration, which said code of this version may still run on it
    _set_meta(db_url, version=str(latest + 1), compatible=str(latest))
    info = await store_from_url(db_url).inspect_schema()
    assert (info.current, info.latest) == (latest + 1, latest)
    client = await Client.connect(db_url)  # a worker of the older release restarts
    try:
        assert await client.store.schema_status() == (latest + 1, latest)
        async with Worker(client, task_queue="q", workflows=[Hello], activities=[echo, sync_upper]):
            assert await client.execute_workflow(Hello.run, "old", id="h", task_queue="q") == (
                "HELLO OLD"
            )
    finally:
        await client.close()
    said = f"newer than this Mainspring's {latest}, and was made to work with it"
    assert f"has schema version {latest + 1}, {said}" in caplog.text
    for command in ("status", "migrate"):  # nothing is migrated back or rewritten
        out = cli("db", command, db=db_url).stdout
        assert f"schema version {latest + 1}: newer than this Mainspring's {latest}," in out
        assert "upgrade Mainspring on this machine too" in out
    assert (await store_from_url(db_url).inspect_schema()).current == latest + 1


async def test_a_newer_schema_that_needs_newer_code_is_refused_naming_the_version(
    db_url: str,
) -> None:
    client = await Client.connect(db_url)
    latest = (await client.store.schema_status())[1]
    await client.close()
    _set_meta(db_url, version=str(latest + 2), compatible=str(latest + 1))
    with pytest.raises(SchemaVersionError) as info:
        await Client.connect(db_url)
    assert (
        f"has schema version {latest + 2}, newer than this Mainspring's {latest} (it needs "
        f"a Mainspring of schema version {latest + 1} or newer); upgrade Mainspring"
    ) in str(info.value)
    with pytest.raises(SchemaVersionError):
        await store_from_url(db_url).inspect_schema()
