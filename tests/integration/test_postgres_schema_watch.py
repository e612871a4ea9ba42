"""A PostgreSQL process that finds the database migrated past it while it runs (by a
newer release that older code cannot run beside) stops writing, and its worker stops."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest

from mainspring import Client, SchemaVersionError, Worker, activity, workflow
from mainspring.store import _pg_clock
from mainspring.store.postgres import PostgresStore, schema_version
from tests import _pg
from tests.integration.agents import Hello, echo, sync_upper

pytestmark = pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())

LATEST = schema_version()


@pytest.fixture
def pg_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(_pg_clock, "CLOCK_SYNC", 0.05)  # the schema is read with the clock
    with _pg.fresh_database() as url:
        yield url


def _migrate_to(url: str, version: int, compatible: int) -> None:
    """What a newer release's migration leaves in mainspring_meta."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for key, value in (("version", version), ("compatible", compatible)):
            conn.execute(
                "UPDATE mainspring.mainspring_meta SET value = %s WHERE key = %s",
                (str(value), key),
            )


async def _until(ok: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not ok():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_a_store_refuses_every_operation_once_the_schema_has_outgrown_it(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        await store.start_workflow(workflow_id="a", workflow_type="T", task_queue="q", input="[]")
        _migrate_to(pg_url, LATEST + 1, LATEST + 1)
        await _until(lambda: store.outgrown is not None, "the migration went unnoticed")
        with pytest.raises(SchemaVersionError) as info:
            await store.start_workflow(
                workflow_id="b", workflow_type="T", task_queue="q", input="[]"
            )
    finally:
        await store.close()
    assert str(info.value) == (
        f"the database was migrated to schema version {LATEST + 1} while this process ran, "
        f"and this Mainspring (schema version {LATEST}) cannot run on it (it needs a "
        f"Mainspring of schema version {LATEST + 1} or newer): upgrade Mainspring here and "
        "start again. From now on this process writes nothing"
    )
    assert str(info.value) in caplog.text  # logged once, as an error
    assert [r.levelname for r in caplog.records if "was migrated" in r.getMessage()] == ["ERROR"]


async def test_a_migration_made_to_work_with_running_code_leaves_it_running(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        clock = store.clock
        assert isinstance(clock, _pg_clock.ServerClock)
        _migrate_to(pg_url, LATEST + 1, LATEST)
        seen = clock.readings
        await _until(lambda: clock.readings >= seen + 2, "no reading since")
        assert store.outgrown is None
        await store.start_workflow(workflow_id="a", workflow_type="T", task_queue="q", input="[]")
    finally:
        await store.close()


async def test_a_worker_on_an_outgrown_database_stops_and_says_why(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "mainspring")
    async with await Client.connect(pg_url) as client:
        worker = Worker(client, task_queue="q", workflows=[Hello], activities=[echo, sync_upper])
        running = asyncio.create_task(worker.run())
        assert await client.execute_workflow(Hello.run, "x", id="h", task_queue="q") == "HELLO X"
        _migrate_to(pg_url, LATEST + 2, LATEST + 1)
        with pytest.raises(SchemaVersionError, match="while this process ran"):
            await asyncio.wait_for(running, 30)
    assert worker.failure is not None
    assert f"stops taking work: the database was migrated to schema version {LATEST + 2}" in (
        caplog.text
    )


async def test_work_already_queued_when_the_reading_sees_it_is_refused_too(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        # the reading, in a writer thread, has seen the migration; the event loop has
        # not yet heard (store.outgrown is still unset): writers refuse what comes next
        store._batches.outgrown = "outgrown"
        assert store.outgrown is None
        with pytest.raises(SchemaVersionError, match=r"^outgrown$"):
            await store.start_workflow(
                workflow_id="late", workflow_type="T", task_queue="q", input="[]"
            )
    finally:
        await store.close()
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM mainspring.mainspring_runs").fetchone() == (0,)


_STARTED: dict[str, asyncio.Event] = {}


@activity.defn
async def forever() -> None:
    _STARTED["forever"].set()
    await asyncio.Event().wait()


@workflow.defn
class Forever:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(forever)


async def test_an_outgrown_worker_cancels_running_work_at_once_and_async_with_raises(
    pg_url: str,
) -> None:
    _STARTED["forever"] = asyncio.Event()
    try:
        async with await Client.connect(pg_url) as client:
            with pytest.raises(SchemaVersionError, match="while this process ran"):
                async with Worker(
                    client,
                    task_queue="q",
                    workflows=[Forever],
                    activities=[forever],
                    graceful_shutdown_timeout=3600,  # its result could not be recorded
                ) as worker:
                    await client.start_workflow(Forever.run, id="f", task_queue="q")
                    await asyncio.wait_for(_STARTED["forever"].wait(), 30)
                    _migrate_to(pg_url, LATEST + 1, LATEST + 1)
                    await _until(lambda: worker.failure is not None, "the worker went on")
                # leaving the block shut it down (without waiting out the hour) and raised
    finally:
        _STARTED.clear()


async def test_a_worker_that_cannot_start_raises_without_handing_over_runs_it_never_held(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await Client.connect(pg_url) as client:
        client.store.outgrown = "outgrown at start"  # as if the first reading had seen it
        worker = Worker(client, task_queue="q", workflows=[Hello], activities=[echo])
        with pytest.raises(SchemaVersionError, match="outgrown at start"):
            await worker.run()
    assert "could not hand this worker's runs" not in caplog.text
