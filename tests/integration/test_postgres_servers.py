"""PostgreSQL servers set up in ways that bite: a read-only server (a standby, or a
read-only database), a SERIALIZABLE default, a role out of connections. Each gets one
clear line, or is made harmless."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from mainspring.errors import StoreError, WorkflowFailureError
from mainspring.store.postgres import PostgresStore
from tests import _pg
from tests.integration.test_postgres_store import admin_sql

pytestmark = pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())


@pytest.fixture
def pg_url() -> Iterator[str]:
    with _pg.fresh_database() as url:
        yield url


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(pg_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_a_read_only_server_is_named_as_such_and_left_for_the_primary(
    store: PostgresStore, pg_url: str
) -> None:
    # A URL that reaches a standby (or a read-only database): it can be read, but a
    # schema that needs creating or migrating is refused in one clear line, a write
    # says why it failed, and after a failover the writer reconnects, not keep failing.
    name = pg_url.rsplit("/", 1)[1]
    await store.start_workflow(workflow_id="w1", workflow_type="T", task_queue="q", input="[]")
    admin_sql(_pg.admin_url(), f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    reader = PostgresStore(pg_url)
    await reader.open()  # its schema is current: a dashboard or the CLI may read it
    try:
        assert [r.workflow_id for r in await reader.list_runs()] == ["w1"]
        with pytest.raises(StoreError, match=r"read-only .* nothing was saved"):
            await reader.signal("w1", None, "go", "[]")
    finally:
        await reader.close()
    with _pg.fresh_database() as empty:
        admin_sql(
            _pg.admin_url(),
            f"ALTER DATABASE {empty.rsplit('/', 1)[1]} SET default_transaction_read_only = on",
        )
        with pytest.raises(StoreError) as refused:
            await PostgresStore(empty).open()
    msg = str(refused.value)
    assert "is read-only (default_transaction_read_only)" in msg
    assert "schema 'mainspring' does not exist yet: point the URL at the primary" in msg
    admin_sql(  # the server "fails over": every session ends, new ones are read-only
        _pg.admin_url(),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
        (name,),
    )
    with pytest.raises(StoreError, match=r"read-only .* nothing was saved"):
        await store.start_workflow(workflow_id="w2", workflow_type="T", task_queue="q", input="[]")
    admin_sql(_pg.admin_url(), f"ALTER DATABASE {name} RESET default_transaction_read_only")
    # the next write goes to a new session, which takes writes again
    await store.start_workflow(workflow_id="w3", workflow_type="T", task_queue="q", input="[]")
    assert {r.workflow_id for r in await store.list_runs()} == {"w1", "w3"}


async def test_transactions_run_at_read_committed_whatever_the_server_default(
    pg_url: str,
) -> None:
    # the design rests on row locks and fences at READ COMMITTED; a database whose
    # default is SERIALIZABLE would otherwise fail commits the engine does not retry
    name = pg_url.rsplit("/", 1)[1]
    admin_sql(
        _pg.admin_url(), f"ALTER DATABASE {name} SET default_transaction_isolation = serializable"
    )
    store = PostgresStore(pg_url)
    await store.open()
    try:

        def isolation(tx: Any) -> str:
            return str(tx.conn.execute("SHOW transaction_isolation").fetchone()[0])

        assert await store._run(isolation) == "read committed"
        assert await store._run(isolation, readonly=True) == "read committed"
        assert admin_sql(pg_url, "SHOW transaction_isolation") == [("serializable",)]
    finally:
        await store.close()


async def test_a_role_out_of_connections_says_what_to_raise_or_lower(pg_url: str) -> None:
    role = f"ms_test_role_{uuid.uuid4().hex[:8]}"
    db = pg_url.rsplit("/", 1)[1]
    admin_sql(pg_url, f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    try:
        admin_sql(pg_url, f"GRANT CREATE ON DATABASE {db} TO {role}")
        as_role = pg_url.replace("://postgres@", f"://{role}@", 1)
        from tests._clock import ManualClock

        url = as_role + "&listen=off" if "?" in as_role else as_role + "?listen=off"
        # (a clock of the test's own: open then reads no server clock through a writer,
        # whose connection would be the role's one)
        s = PostgresStore(url, ManualClock())
        await s.open()  # the migration's connection, closed again
        try:
            import psycopg

            # another connection takes the role's one
            with psycopg.connect(as_role), pytest.raises(StoreError) as info:
                await s.start_workflow(
                    workflow_id="w", workflow_type="T", task_queue="q", input="[]"
                )
        finally:
            await s.close()
        msg = str(info.value)
        assert "takes no more connections (too many connections for role" in msg
        assert "pool_size" in msg and "CONNECTION LIMIT" in msg and "\n" not in msg
    finally:
        admin_sql(pg_url, f"DROP OWNED BY {role}")
        admin_sql(pg_url, f"DROP ROLE {role}")


async def test_a_writer_whose_link_goes_silent_cuts_it_and_carries_on(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A hung proxy or a network that drops every packet raises nothing: a transaction
    # sent down such a link would wait for ever, and every operation behind it.
    from urllib.parse import urlsplit, urlunsplit

    from mainspring.store import postgres
    from tests.integration.test_live_wakeups import SilentLink

    monkeypatch.setattr(postgres, "NO_ANSWER", 0.5)
    link = SilentLink()
    parts = urlsplit(pg_url)
    port = await link.start(parts.hostname or "127.0.0.1", parts.port or 5432)
    via = urlunsplit(
        parts._replace(
            netloc=f"{parts.username}@127.0.0.1:{port}", query="listen=off&connect_timeout=2"
        )
    )
    store = PostgresStore(via)
    await store.open()
    try:
        await store.start_workflow(workflow_id="w1", workflow_type="T", task_queue="q", input="[]")
        link.silent = True
        with pytest.raises(StoreError, match=r"connection to PostgreSQL was lost|cannot"):
            await asyncio.wait_for(
                store.start_workflow(
                    workflow_id="w2", workflow_type="T", task_queue="q", input="[]"
                ),
                30,  # not for ever: cut after 0.5 s, a reconnect times out after 2 s
            )
        assert "had no answer for" in caplog.text
        link.silent = False
        await store.start_workflow(workflow_id="w3", workflow_type="T", task_queue="q", input="[]")
        assert {"w1", "w3"} <= {r.workflow_id for r in await store.list_runs()}
    finally:
        await asyncio.wait_for(store.close(), 30)
        await link.stop()


async def test_closing_does_not_wait_out_a_silent_database(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker asked to stop (SIGTERM) while its database has gone silent: the store
    # must not wait out the 30 s watchdog, then reconnect to re-run the batch (10 s a
    # try), then do the same for each batch queued behind it. What it could not commit
    # fails as unavailable (perhaps saved), which is safe to retry.
    from urllib.parse import urlsplit, urlunsplit

    from mainspring.errors import StoreUnavailableError
    from mainspring.store import postgres
    from tests.integration.test_live_wakeups import SilentLink

    monkeypatch.setattr(postgres, "CLOSING_NO_ANSWER", 0.5)  # NO_ANSWER stays 30 s
    link = SilentLink()
    parts = urlsplit(pg_url)
    port = await link.start(parts.hostname or "127.0.0.1", parts.port or 5432)
    via = urlunsplit(
        parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}", query="listen=off&pool_size=1")
    )
    store = PostgresStore(via)
    await store.open()
    try:
        await store.start_workflow(workflow_id="w0", workflow_type="T", task_queue="q", input="[]")
        link.silent = True
        pending = [
            asyncio.ensure_future(
                store.start_workflow(
                    workflow_id=f"w{i}", workflow_type="T", task_queue="q", input="[]"
                )
            )
            for i in range(1, 6)
        ]
        await asyncio.sleep(0)  # each has queued its write
        await asyncio.wait_for(store.close(), 20)  # a guard: without the fix, 30 s and more
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(o, StoreUnavailableError) for o in outcomes), outcomes
    finally:
        await asyncio.wait_for(store.close(), 60)
        await link.stop()


async def test_closing_still_reopens_a_connection_the_server_dropped(pg_url: str) -> None:
    # Only a database that stopped answering is given up on while closing: a writer
    # connection the server dropped while idle (a restart, idle_session_timeout, a
    # pooler's recycling) is reopened and its batch committed, as at any other time.
    store = PostgresStore(pg_url + "?listen=off&pool_size=2")
    await store.open()
    try:
        await asyncio.gather(
            *(
                store.start_workflow(
                    workflow_id=f"warm{i}", workflow_type="T", task_queue="q", input="[]"
                )
                for i in range(2)
            )
        )
        db = pg_url.rsplit("/", 1)[1]
        pids = [p for (p,) in admin_sql(_pg.admin_url(), _BACKENDS, (db,))]
        assert pids
        admin_sql(
            _pg.admin_url(), "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,)
        )
        while set(pids) & {p for (p,) in admin_sql(_pg.admin_url(), _BACKENDS, (db,))}:
            await asyncio.sleep(0.01)  # until the server has ended them
        pending = [
            asyncio.ensure_future(
                store.start_workflow(
                    workflow_id=f"w{i}", workflow_type="T", task_queue="q", input="[]"
                )
            )
            for i in range(4)
        ]
        await asyncio.sleep(0)  # each has queued its write
    finally:
        await store.close()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert [o[1] for o in outcomes if isinstance(o, tuple)] == [True] * 4, outcomes
    saved = admin_sql(pg_url, "SELECT workflow_id FROM mainspring.mainspring_runs ORDER BY 1")
    assert [w for (w,) in saved] == ["w0", "w1", "w2", "w3", "warm0", "warm1"]


_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"


@pytest.mark.parametrize("read", ["q", "qs"])
async def test_a_writer_gone_quiet_mid_transaction_does_not_hold_its_locks(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    # A client that stops talking inside a transaction (a dead link, a frozen process)
    # would leave the server holding its row locks until TCP gave up on it, hours by
    # default, and every other worker's step on those runs waiting: the server ends
    # such a transaction itself, and the writer runs the operation again.
    import threading

    import psycopg

    from mainspring.store import _pg_batch

    monkeypatch.setattr(_pg_batch, "IDLE_IN_TRANSACTION", 0.5)
    store = PostgresStore(pg_url)
    await store.open()
    locked, released = threading.Event(), threading.Event()
    calls, run_id = 0, ""
    lock_sql = "SELECT 1 FROM mainspring.mainspring_runs WHERE workflow_id = 'w1' FOR UPDATE"

    def hold_then_stall(tx: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            query = ("run_by_id_for_update", {"run_id": run_id})  # as a step would
            assert tx.q(*query) if read == "q" else tx.qs([query, ("run_by_id", query[1])])
            locked.set()
            assert released.wait(60)  # the client has gone quiet, its lock taken
        return str(tx.conn.execute("SELECT 'saved'").fetchone()[0])

    def other_worker_takes_the_lock() -> None:
        with psycopg.connect(pg_url) as conn:  # waits for the lock, if need be
            conn.execute("SET lock_timeout = '30s'")
            conn.execute(lock_sql).fetchall()

    try:
        run_id, _ = await store.start_workflow(
            workflow_id="w1", workflow_type="T", task_queue="q", input="[]"
        )
        stalled = asyncio.ensure_future(store._run(hold_then_stall))
        assert await asyncio.to_thread(locked.wait, 30)
        await asyncio.to_thread(other_worker_takes_the_lock)
        assert not stalled.done()  # the lock was freed while its client still stalled
        released.set()
        assert await asyncio.wait_for(stalled, 30) == "saved"
        assert calls == 2  # ended by the server, then run again on a new connection
    finally:
        released.set()
        await store.close()


async def test_an_op_error_on_a_link_that_broke_meanwhile_reruns_the_batch(
    store: PostgresStore,
) -> None:
    # An op may raise its own error (say, "already started") just as the link breaks:
    # that answer came from a transaction that can no longer commit, so the batch runs
    # again on a new connection, not fail as a bug ("database error") would.
    calls = 0

    def raise_as_the_link_breaks(tx: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            tx.conn.close()  # the link breaks while the op runs
            raise ValueError("an answer from a transaction that is gone")
        return str(tx.q("run_by_id", {"run_id": "none"}))

    assert await store._run(raise_as_the_link_breaks) == "[]"
    assert calls == 2


async def test_a_result_waiter_outlives_a_database_outage(pg_url: str) -> None:
    # a client waiting for a long agent run must not fail on a restart or a failover
    from urllib.parse import urlsplit, urlunsplit

    from mainspring import Client
    from tests.integration import agents
    from tests.integration.test_live_wakeups import SilentLink

    link = SilentLink()
    parts = urlsplit(pg_url)
    target = (parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await link.start(*target)
    via = urlunsplit(
        parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}", query="connect_timeout=2")
    )
    waiter, closer = await Client.connect(via), await Client.connect(pg_url)
    try:
        handle = await closer.start_workflow(
            agents.Approval.run, 3600.0, id="long", task_queue="none"
        )
        waiting = asyncio.create_task(waiter.get_workflow_handle("long").result(timeout=60))
        await asyncio.sleep(0)  # (the waiter's first read goes through the link)
        await link.stop()  # the database "goes away" for the waiter: refused, cut
        admin_sql(  # its open connections end as in a restart
            _pg.admin_url(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND application_name = 'mainspring'"
            " AND client_port IS NOT NULL AND backend_type = 'client backend'",
            (pg_url.rsplit("/", 1)[1],),
        )
        await handle.terminate("closed during the outage")
        assert not waiting.done()
        await link.start(*target, on=port)  # back
        with pytest.raises(WorkflowFailureError, match="terminated"):
            await asyncio.wait_for(waiting, 30)
    finally:
        await waiter.close()
        await closer.close()
        await link.stop()


async def test_a_result_waiter_retries_only_an_unreachable_database(pg_url: str) -> None:
    # timeout=0 still reads once (has it closed?); an error that waiting cannot cure
    # (here the schema renamed away under the client) is raised at once
    from mainspring import Client

    client = await Client.connect(pg_url)
    try:
        handle = await client.start_workflow("T", id="t0", task_queue="none")
        await handle.terminate("done")
        with pytest.raises(WorkflowFailureError, match="terminated"):
            await handle.result(timeout=0)
        admin_sql(pg_url, "ALTER SCHEMA mainspring RENAME TO elsewhere")
        with pytest.raises(StoreError, match="does not exist"):
            await asyncio.wait_for(handle.result(), 10)
    finally:
        await client.close()


async def test_a_dropped_connection_is_reported_once_not_also_by_psycopg(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.WARNING)
    store = PostgresStore(pg_url + "?listen=off&pool_size=1")
    await store.open()
    try:
        await store.start_workflow(workflow_id="w0", workflow_type="T", task_queue="q", input="[]")
        db = pg_url.rsplit("/", 1)[1]
        pids = [p for (p,) in admin_sql(_pg.admin_url(), _BACKENDS, (db,))]
        admin_sql(
            _pg.admin_url(), "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,)
        )
        while set(pids) & {p for (p,) in admin_sql(_pg.admin_url(), _BACKENDS, (db,))}:
            await asyncio.sleep(0.01)  # until the server has ended them
        await store.start_workflow(workflow_id="w1", workflow_type="T", task_queue="q", input="[]")
    finally:
        await store.close()
    ours = [r for r in caplog.records if r.name == "mainspring.store"]
    assert any("connection lost" in r.getMessage() for r in ours), caplog.text
    assert "error ignored terminating" not in caplog.text


async def test_a_start_a_read_only_database_refused_says_it_did_not_happen(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database refused every attempt (read-only): the start surely did not happen,
    # so the error must not send the user looking for a run that "may" exist.
    from mainspring import Client
    from mainspring import client as client_module
    from mainspring.errors import StoreUnavailableError

    monkeypatch.setattr(client_module, "START_RETRY_WINDOW", 0.5)  # 30 s in production
    client = await Client.connect(pg_url)
    try:
        name = pg_url.rsplit("/", 1)[1]
        admin_sql(_pg.admin_url(), f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        admin_sql(  # every session ends; new ones are read-only
            _pg.admin_url(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        )
        with pytest.raises(StoreUnavailableError) as info:
            await client.start_workflow("T", id="ro", task_queue="q")
        msg = str(info.value)
        assert msg.startswith("workflow 'ro' was not started:"), msg
        assert "nothing was saved" in msg and "may or may not" not in msg, msg
        assert info.value.maybe_saved is False
    finally:
        admin_sql(
            _pg.admin_url(),
            f"ALTER DATABASE {pg_url.rsplit('/', 1)[1]} RESET default_transaction_read_only",
        )
        await client.close()
    assert admin_sql(pg_url, "SELECT count(*) FROM mainspring.mainspring_runs") == [(0,)]
