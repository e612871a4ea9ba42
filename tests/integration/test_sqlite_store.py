"""SQLite-specific store behaviour: the file, its schema, its durability settings."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mainspring import (
    Client,
    NotAMainspringDatabaseError,
    SchemaVersionError,
    StoreError,
    Worker,
    workflow,
)
from mainspring.store.sqlite import SQLiteStore, parse_sqlite_url, schema_version


async def test_fresh_file_gets_the_latest_schema(tmp_path: Path) -> None:
    client = await Client.connect(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert await client.store.schema_status() == (schema_version(), schema_version())
    finally:
        await client.close()
    conn = sqlite3.connect(tmp_path / "new.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_reopening_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'again.db'}"
    for _ in range(3):
        client = await Client.connect(url)
        await client.start_workflow("X", id=f"w{_}", task_queue="q")
        await client.close()
    client = await Client.connect(url)
    assert len(await client.list_workflows()) == 3
    await client.close()


async def test_foreign_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    with pytest.raises(NotAMainspringDatabaseError, match="not Mainspring's"):
        await Client.connect(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["customers"]
    conn.close()


async def test_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    with pytest.raises(NotAMainspringDatabaseError, match="not a Mainspring database"):
        await Client.connect(f"sqlite:///{path}")
    assert path.read_bytes() == b"these are my notes, not a database\n" * 100


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'future.db'}"
    client = await Client.connect(url)
    await client.close()
    conn = sqlite3.connect(tmp_path / "future.db")
    conn.execute("UPDATE mainspring_meta SET value = '999' WHERE key = 'version'")
    conn.execute("UPDATE mainspring_meta SET value = '999' WHERE key = 'compatible'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match="newer than this Mainspring"):
        await Client.connect(url)
    conn = sqlite3.connect(tmp_path / "future.db")
    assert conn.execute("SELECT value FROM mainspring_meta WHERE key='version'").fetchone() == (
        "999",
    )
    conn.close()


@pytest.mark.parametrize(
    ("url", "path", "sync"),
    [
        ("sqlite:///rel/agents.db", "rel/agents.db", "full"),
        ("sqlite:////abs/agents.db", "/abs/agents.db", "full"),
        ("sqlite:///a.db?synchronous=normal", "a.db", "normal"),
        ("agents.db", "agents.db", "full"),
    ],
)
def test_url_parsing(url: str, path: str, sync: str) -> None:
    parsed, opts = parse_sqlite_url(url)
    assert parsed == path
    assert opts.get("synchronous", "full") == sync


def test_bad_urls_have_clear_errors() -> None:
    with pytest.raises(StoreError, match="synchronous must be"):
        SQLiteStore("sqlite:///x.db?synchronous=sometimes")
    with pytest.raises(StoreError, match="names no file"):
        SQLiteStore("sqlite://")
    from mainspring.store import store_from_url

    with pytest.raises(StoreError, match="unknown database URL"):
        store_from_url("mysql://localhost/db")


async def test_synchronous_setting_is_applied(tmp_path: Path) -> None:
    for setting, expected in (("", 2), ("?synchronous=normal", 1)):
        store = SQLiteStore(f"sqlite:///{tmp_path / 's.db'}{setting}")
        await store.open()
        try:
            value = await store._run(lambda tx: tx.conn.execute("PRAGMA synchronous").fetchone())  # type: ignore[attr-defined]
            assert value[0] == expected
        finally:
            await store.close()


async def test_in_memory_store() -> None:
    client = await Client.connect("memory://")
    try:
        h = await client.start_workflow("X", id="m", task_queue="q")
        assert (await h.describe()).workflow_type == "X"
    finally:
        await client.close()


async def test_environment_variable_names_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAINSPRING_DB", f"sqlite:///{tmp_path / 'env.db'}")
    client = await Client.connect()
    await client.close()
    assert (tmp_path / "env.db").exists()


@pytest.mark.parametrize("checkpointing", [True, False])
async def test_the_wal_starts_over_under_a_steady_stream_of_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpointing: bool
) -> None:
    # A checkpoint beside a connection that keeps appending never catches up; unless
    # the committer checkpoints between its own transactions, the WAL only grows.
    from mainspring.store import _sqlite_runner

    if not checkpointing:  # the control: shows the stream below starves a checkpointer
        monkeypatch.setattr(_sqlite_runner, "CHECKPOINT_COMMITS", 10**9)
        monkeypatch.setattr(_sqlite_runner, "DENSE_COMMITS", 10**9)
    path = tmp_path / "steady.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        for i in range(600):  # one commit each, back to back
            await store.start_workflow(
                workflow_id=f"w{i}", workflow_type="T", task_queue="q", input="[]"
            )
        wal = (tmp_path / "steady.db-wal").stat().st_size
    finally:
        await store.close()
    # here: about 1.8 MB when the committer checkpoints, 20 MB when it does not
    mb = 1024 * 1024
    if checkpointing:
        assert wal < 4 * mb, f"the WAL grew to {wal} bytes"
    else:
        assert wal > 10 * mb, f"the control WAL stayed at {wal} bytes"


@workflow.defn(name="Echo")
class Echo:
    @workflow.run
    async def run(self, text: str) -> str:
        return text + "!"


async def test_waiters_in_another_process_wake_when_their_run_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two stores on one file see each other only through the file (as two processes
    # do). The waiting side's watcher reads which of its waited-for runs closed and
    # wakes those, even while its own process keeps committing (so that it cannot tell
    # its own changes from the other's); their periodic recheck is an hour away here.
    from mainspring import handle as handle_module

    monkeypatch.setattr(handle_module, "RESULT_RECHECK", 3600.0)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    waiter, worker_side = await Client.connect(url), await Client.connect(url)
    busy = True

    async def keep_committing() -> None:
        i = 0
        while busy:
            await waiter.start_workflow(Echo.run, "x", id=f"idle{i}", task_queue="nobody")
            i += 1

    try:
        handles = [
            await waiter.start_workflow(Echo.run, f"r{i}", id=f"e{i}", task_queue="echo")
            for i in range(20)
        ]
        results = asyncio.gather(*(h.result() for h in handles))
        committing = asyncio.create_task(keep_committing())
        async with Worker(worker_side, task_queue="echo", workflows=[Echo]):
            done = await asyncio.wait_for(results, timeout=60)  # a guard: recheck is an hour
        busy = False
        await committing
        assert done == [f"r{i}!" for i in range(20)]
    finally:
        busy = False
        await worker_side.close()
        await waiter.close()


async def test_an_empty_url_is_refused_not_taken_for_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAINSPRING_DB", raising=False)
    for url in ("", "  "):
        with pytest.raises(StoreError, match="the database URL is empty"):
            await Client.connect(url)
    monkeypatch.setenv("MAINSPRING_DB", "")
    with pytest.raises(StoreError, match="MAINSPRING_DB is set to nothing"):
        await Client.connect()
    with pytest.raises(TypeError, match="must be a string, not PosixPath"):
        await Client.connect(tmp_path / "x.db")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # no ./mainspring.db was made
    monkeypatch.delenv("MAINSPRING_DB")
    client = await Client.connect()  # unset: the default still applies
    await client.close()
    assert (tmp_path / "mainspring.db").exists()


async def test_a_damaged_schema_version_is_a_one_line_store_error(sqlite_url: str) -> None:
    client = await Client.connect(sqlite_url)
    await client.close()
    path = sqlite_url.removeprefix("sqlite:///")
    for damaged in ("abc", "-1", ""):
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE mainspring_meta SET value = ? WHERE key = 'version'", (damaged,))
        conn.close()
        with pytest.raises(StoreError, match="which is not a whole number: the database is dam"):
            await Client.connect(sqlite_url)
        store = SQLiteStore(sqlite_url)
        with pytest.raises(StoreError, match=f"records schema version {damaged!r}"):
            await store.inspect_schema()


async def test_mainspring_tables_without_their_meta_table_are_called_damaged(
    sqlite_url: str,
) -> None:
    # once reported as "tables that are not Mainspring's (mainspring_activities, …)"
    client = await Client.connect(sqlite_url)
    await client.close()
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE mainspring_meta")
    conn.close()
    for attempt in (Client.connect(sqlite_url), SQLiteStore(sqlite_url).inspect_schema()):
        with pytest.raises(StoreError, match="holds Mainspring's tables but not mainspring_meta"):
            await attempt
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM mainspring_runs").fetchone() == (0,)
    conn.close()


async def test_a_file_in_a_missing_folder_is_named_as_such_not_as_foreign(tmp_path: Path) -> None:
    path = tmp_path / "no such folder" / "agents.db"
    with pytest.raises(StoreError) as info:
        await Client.connect(f"sqlite:///{path}")
    assert not isinstance(info.value, NotAMainspringDatabaseError)
    assert str(info.value) == (
        f"cannot open {path}: unable to open database file (does the folder "
        f"{path.parent} exist, and may this user write there?)"
    )


async def test_a_file_another_process_keeps_locked_is_reported_as_busy_not_as_foreign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mainspring.errors import StoreUnavailableError
    from mainspring.store import sqlite as sqlite_module

    path = tmp_path / "busy.db"
    await (await Client.connect(f"sqlite:///{path}")).close()
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT", 0.2)  # 60 s in production
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process, in the middle of a write
    try:
        with pytest.raises(StoreUnavailableError) as info:
            await Client.connect(f"sqlite:///{path}")
        assert f"{path} stayed locked by another process for 0.2 s" in str(info.value)
        assert info.value.maybe_saved is False
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await (await Client.connect(f"sqlite:///{path}")).close()  # and opens once it is free
