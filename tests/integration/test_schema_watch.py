"""A process that finds the database migrated past it while it runs (by a newer release
that older code cannot run beside) stops writing, and its worker stops: on SQLite, on
PostgreSQL (which reads the schema's version with the server's clock) and on PostgreSQL
in a process that keeps a clock of its own."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mainspring import Client, SchemaVersionError, Worker, activity, workflow
from mainspring.store import Clock, _pg_clock, _schema
from mainspring.store.base import Store
from mainspring.store.postgres import schema_version
from tests import _pg
from tests.integration.agents import Hello, echo, sync_upper

LATEST = schema_version()
KINDS = ["sqlite", *(["postgres", "postgres-own-clock"] if _pg.enabled() else [])]


class OwnClock(Clock):
    """A clock of the process's own (as tests pass): the server's is then not read."""


class Where:
    """A fresh database, how to open it, and how a newer release would migrate it."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url = kind, url
        self.clock = OwnClock() if kind == "postgres-own-clock" else None

    async def client(self) -> Client:
        return await Client.connect(self.url, clock=self.clock)

    async def store(self) -> Store:
        return (await self.client()).store

    def migrate_to(self, version: int, compatible: int, *, ddl: bool = False) -> None:
        """What a newer release's migration leaves in mainspring_meta (``ddl``: after
        creating a table, as most migrations do)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            table, run = "mainspring_meta", conn.execute
        else:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=True)  # type: ignore[assignment]
            table, run = "mainspring.mainspring_meta", conn.execute
        try:
            run("BEGIN")
            if ddl:
                run(f"CREATE TABLE {table}_newer (x INTEGER)")
            for key, value in (("version", version), ("compatible", compatible)):
                params = (str(value), key)
                if self.kind == "sqlite":
                    run(f"UPDATE {table} SET value = ? WHERE key = ?", params)
                else:
                    run(f"UPDATE {table} SET value = %s WHERE key = %s", params)
            run("COMMIT")
        finally:
            conn.close()

    def runs(self) -> int:
        """Runs in the database."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                return int(conn.execute("SELECT count(*) FROM mainspring_runs").fetchone()[0])
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url) as pconn:
            row = pconn.execute("SELECT count(*) FROM mainspring.mainspring_runs").fetchone()
            assert row is not None
            return int(row[0])


@pytest.fixture(params=KINDS)
def where(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Where]:
    monkeypatch.setattr(_pg_clock, "CLOCK_SYNC", 0.05)  # the schema is read with the clock
    monkeypatch.setattr(_schema, "SCHEMA_WATCH", 0.05)
    if request.param == "sqlite":
        yield Where("sqlite", f"sqlite:///{tmp_path / 'test.db'}")
    else:
        with _pg.fresh_database() as url:
            yield Where(request.param, url)


async def _until(ok: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not ok():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("ddl", [False, True], ids=["meta-only", "with-a-table"])
async def test_a_store_refuses_every_operation_once_the_schema_has_outgrown_it(
    where: Where, ddl: bool, caplog: pytest.LogCaptureFixture
) -> None:
    store = await where.store()
    try:
        await store.start_workflow(workflow_id="a", workflow_type="T", task_queue="q", input="[]")
        where.migrate_to(LATEST + 1, LATEST + 1, ddl=ddl)
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
    assert where.runs() == 1


async def test_sqlite_sees_a_migration_that_changes_the_schema_at_once(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script that creates or alters something moves SQLite's schema cookie: the
    version is read then, not at the next periodic reading."""
    monkeypatch.setattr(_schema, "SCHEMA_WATCH", 3600.0)
    where = Where("sqlite", sqlite_url)
    store = await where.store()
    try:
        await _until(lambda: store.schema_readings >= 1, "no first reading")
        where.migrate_to(LATEST + 1, LATEST + 1, ddl=True)
        await _until(lambda: store.outgrown is not None, "the migration went unnoticed")
    finally:
        await store.close()


async def test_a_migration_made_to_work_with_running_code_leaves_it_running(
    where: Where,
) -> None:
    store = await where.store()
    try:
        where.migrate_to(LATEST + 1, LATEST, ddl=True)
        seen = store.schema_readings
        await _until(lambda: store.schema_readings >= seen + 2, "no reading since")
        assert store.outgrown is None
        await store.start_workflow(workflow_id="a", workflow_type="T", task_queue="q", input="[]")
    finally:
        await store.close()
    assert where.runs() == 1


async def test_a_worker_on_an_outgrown_database_stops_at_once_and_says_why(
    where: Where, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mainspring")
    async with await where.client() as client:
        worker = Worker(
            client,
            task_queue="q",
            workflows=[Hello],
            activities=[echo, sync_upper],
            poll_interval=3600,  # it stops when the store finds out, not at its next pass
            workflow_task_timeout=3600,  # (nor when a lease runs out)
        )
        running = asyncio.create_task(worker.run())
        assert await client.execute_workflow(Hello.run, "x", id="h", task_queue="q") == "HELLO X"
        where.migrate_to(LATEST + 2, LATEST + 1)
        with pytest.raises(SchemaVersionError, match="while this process ran"):
            await asyncio.wait_for(running, 30)
    assert worker.failure is not None
    assert f"stops taking work: the database was migrated to schema version {LATEST + 2}" in (
        caplog.text
    )


async def test_work_already_queued_when_the_reading_sees_it_is_refused_too(
    where: Where,
) -> None:
    store = await where.store()
    try:
        # the reading, in another thread, has seen the migration; the event loop has
        # not yet heard (store.outgrown is still unset): writers refuse what comes next
        if where.kind == "sqlite":
            store._writer.outgrown = "outgrown"  # type: ignore[attr-defined]
        else:
            store._batches.outgrown = "outgrown"  # type: ignore[attr-defined]
        assert store.outgrown is None
        with pytest.raises(SchemaVersionError, match=r"^outgrown$"):
            await store.start_workflow(
                workflow_id="late", workflow_type="T", task_queue="q", input="[]"
            )
    finally:
        await store.close()
    assert where.runs() == 0


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
    where: Where,
) -> None:
    _STARTED["forever"] = asyncio.Event()
    try:
        async with await where.client() as client:
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
                    where.migrate_to(LATEST + 1, LATEST + 1)
                    await _until(lambda: worker.failure is not None, "the worker went on")
                # leaving the block shut it down (without waiting out the hour) and raised
    finally:
        _STARTED.clear()


async def test_a_worker_that_cannot_start_raises_without_handing_over_runs_it_never_held(
    where: Where, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mainspring")
    async with await where.client() as client:
        client.store.outgrown = "outgrown at start"  # as if the first reading had seen it
        worker = Worker(client, task_queue="q", workflows=[Hello], activities=[echo])
        with pytest.raises(SchemaVersionError, match="outgrown at start"):
            await worker.run()
    assert "could not hand this worker's runs" not in caplog.text
    assert "stopped" not in caplog.text  # it never served


async def test_the_worker_stops_the_moment_its_store_finds_out(where: Where) -> None:
    """Not at its next maintenance pass, even one under way when the store finds out;
    and a worker leaves no hook behind, whether it served or failed to start."""
    async with await where.client() as client:
        store = client.store
        with pytest.raises(SchemaVersionError, match=r"^outgrown for this test$"):
            async with Worker(
                client, task_queue="q", workflows=[Hello], activities=[echo], poll_interval=3600
            ) as worker:
                assert len(store._outgrown_hooks) == 1
                store._outgrow("outgrown for this test")  # as a reading that saw a migration
                assert worker.failure is not None  # at once: no wake-up can be missed
        assert store._outgrown_hooks == []  # removed on shutdown


async def test_a_worker_that_fails_to_start_in_async_with_leaves_no_hook(where: Where) -> None:
    async with await where.client() as client:
        client.store.outgrown = "outgrown at start"
        for _ in range(3):
            with pytest.raises(SchemaVersionError):
                async with Worker(client, task_queue="q", workflows=[Hello]):
                    pass
        assert client.store._outgrown_hooks == []


async def test_a_hook_that_raises_stops_neither_the_others_nor_the_wake_up(
    where: Where, caplog: pytest.LogCaptureFixture
) -> None:
    store = await where.store()
    told: list[str] = []
    try:

        def broken() -> None:
            raise ValueError("a broken hook")

        store.on_outgrown(broken)
        store.on_outgrown(lambda: told.append("told"))
        with store.watch("some-key") as woken:
            store._outgrow("outgrown for this test")
            assert woken.is_set()  # waiters learn it at their next read
        assert told == ["told"]
        assert "a broken hook" in caplog.text
    finally:
        await store.close()  # the reader stops without raising


async def test_sqlite_reads_the_version_even_when_its_watcher_cannot_watch(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mainspring.store.sqlite import SQLiteStore

    monkeypatch.setattr(SQLiteStore, "_watch_connect", lambda self: None)
    monkeypatch.setattr(_schema, "SCHEMA_WATCH", 0.05)
    where = Where("sqlite", sqlite_url)
    store = await where.store()
    try:
        assert not store.live_wakeups  # no watcher thread
        where.migrate_to(LATEST + 1, LATEST + 1)
        await _until(lambda: store.outgrown is not None, "the migration went unnoticed")
    finally:
        await store.close()


async def test_sqlite_opened_again_after_a_restore_is_usable(sqlite_url: str) -> None:
    where = Where("sqlite", sqlite_url)
    store = await where.store()
    try:
        where.migrate_to(LATEST + 1, LATEST + 1, ddl=True)
        await _until(lambda: store.outgrown is not None, "the migration went unnoticed")
        await store.close()
        where.migrate_to(LATEST, LATEST)  # the file put back as it was
        await store.open()
        assert store.outgrown is None
        await store.start_workflow(workflow_id="a", workflow_type="T", task_queue="q", input="[]")
    finally:
        await store.close()
    assert where.runs() == 1
