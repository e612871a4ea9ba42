"""Waiters read their state again only when woken while the store hears every change
(``Store.live_wakeups``), and poll while it might not (PostgreSQL's listener is down)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from mainspring import Client, QueryFailedError, StoreError, WorkflowFailureError
from mainspring import handle as handle_module
from mainspring.store.base import Store
from mainspring.store.sqlite import SQLiteStore
from tests import _pg
from tests.integration import agents

POLL = 0.05  # the polling interval these tests set: a polling waiter reads ~20 times a second
QUIET = 0.5  # a window in which a polling waiter would read about ten times


def count_describes(store: Store, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count ``store.describe`` calls (a result waiter's reads); return the counter."""
    calls = 0
    real = store.describe

    async def describe(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "describe", describe)
    return lambda: calls


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail after ``timeout`` seconds, naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.01)


async def reads_reach(count: Callable[[], int], n: int, timeout: float = 10.0) -> None:
    """Return once ``count()`` reaches ``n``; fail after ``timeout`` seconds."""
    await until(lambda: count() >= n, f"{n} reads (only {count()} so far)", timeout)


@pytest.fixture
async def two_processes(db_url: str) -> AsyncIterator[tuple[Client, Client]]:
    """A waiting side and a closing side that see each other only through the database."""
    waiter, closer = await Client.connect(db_url), await Client.connect(db_url)
    try:
        yield waiter, closer
    finally:
        await closer.close()
        await waiter.close()


async def test_a_result_waiter_reads_again_only_when_woken(
    two_processes: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With wake-ups live, a waiter on a long run does not poll: it reads once, then
    sleeps until the run closes in another process, which wakes it at once."""
    waiter, closer = two_processes
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", POLL)
    assert waiter.store.live_wakeups
    reads = count_describes(waiter.store, monkeypatch)
    h = await closer.start_workflow(agents.Approval.run, 3600.0, id=uid(), task_queue="none")
    waiting = asyncio.create_task(waiter.get_workflow_handle(h.id, run_id=h.run_id).result())
    await reads_reach(reads, 1)
    await asyncio.sleep(QUIET)
    assert reads() == 1, "the waiter polled although every change wakes it"
    await closer.get_workflow_handle(h.id).terminate("done waiting")
    with pytest.raises(WorkflowFailureError, match="terminated"):
        await asyncio.wait_for(waiting, 10)  # the safety recheck is 30 s away
    assert reads() == 2


async def test_a_query_waiter_reads_again_only_when_woken(
    two_processes: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a query waiting for a worker: its run closing ends it at once."""
    waiter, closer = two_processes
    monkeypatch.setattr(handle_module, "QUERY_RECHECK", POLL)
    reads = 0
    real = waiter.store.query_result

    async def query_result(query_id: str) -> Any:
        nonlocal reads
        reads += 1
        return await real(query_id)

    monkeypatch.setattr(waiter.store, "query_result", query_result)
    h = await closer.start_workflow(agents.Approval.run, 3600.0, id=uid(), task_queue="none")
    asking = asyncio.create_task(
        waiter.get_workflow_handle(h.id).query(agents.Approval.status, timeout=600)
    )
    await reads_reach(lambda: reads, 1)
    await asyncio.sleep(QUIET)
    assert reads == 1, "the query waiter polled although every change wakes it"
    await closer.get_workflow_handle(h.id).terminate("no answer needed")
    with pytest.raises(QueryFailedError, match="closed as TERMINATED"):
        await asyncio.wait_for(asking, 10)


async def test_a_write_whose_acknowledgement_is_lost_wakes_this_process(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that landed but raised (its acknowledgement lost) wakes no one by name:
    the caller's process must not miss it. On PostgreSQL its NOTIFY names this
    process's own commit, which this process skips; so every waiter here looks again."""
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", 3600.0)
    monkeypatch.setattr(handle_module, "LIVE_RECHECK", 3600.0)
    client = await Client.connect(db_url)
    try:
        h = await client.start_workflow(agents.Approval.run, 3600.0, id=uid(), task_queue="none")
        waiting = asyncio.create_task(h.result())
        reads = count_describes(client.store, monkeypatch)
        await reads_reach(reads, 1)
        real = client.store._run

        async def lose_acknowledgement(*args: Any, readonly: bool = False, **kwargs: Any) -> Any:
            out = await real(*args, readonly=readonly, **kwargs)
            if readonly:
                return out
            raise StoreError("connection lost while committing (simulated)")

        monkeypatch.setattr(client.store, "_run", lose_acknowledgement)
        with pytest.raises(StoreError, match="simulated"):
            await h.terminate("its acknowledgement is lost")
        with pytest.raises(WorkflowFailureError, match="terminated"):
            await asyncio.wait_for(waiting, 10)  # a guard: the recheck is an hour away
    finally:
        await client.close()


async def test_sqlite_watcher_sees_changes_made_before_its_first_look(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher takes the file's version when the store opens, not at its first look
    a watch interval later: a run closed by another process in between still wakes
    its waiter."""
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", 3600.0)
    monkeypatch.setattr(handle_module, "LIVE_RECHECK", 3600.0)
    closer = await Client.connect(sqlite_url)
    h = await closer.start_workflow(agents.Approval.run, 3600.0, id=uid(), task_queue="none")
    store = SQLiteStore(sqlite_url, watch_interval=1.0)  # its first look: 1 s after opening
    await store.open()
    waiter = Client(store)
    try:
        reads = count_describes(store, monkeypatch)
        waiting = asyncio.create_task(waiter.get_workflow_handle(h.id).result())
        await reads_reach(reads, 2)  # the run's id, then its state: RUNNING
        await closer.get_workflow_handle(h.id).terminate("closed before the first look")
        with pytest.raises(WorkflowFailureError, match="terminated"):
            await asyncio.wait_for(waiting, 10)  # a guard: the recheck is an hour away
    finally:
        await waiter.close()
        await closer.close()


async def test_a_cancelled_write_that_commits_wakes_this_process(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller cancelled while its write waits for the commit does not stop the write.
    The waiters of its process hear of it all the same, once it has committed."""
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", 3600.0)
    monkeypatch.setattr(handle_module, "LIVE_RECHECK", 3600.0)
    client = await Client.connect(db_url)
    try:
        h = await client.start_workflow(agents.Approval.run, 3600.0, id=uid(), task_queue="none")
        reads = count_describes(client.store, monkeypatch)
        waiting = asyncio.create_task(h.result())
        await reads_reach(reads, 1)
        terminating = asyncio.create_task(h.terminate("its caller gives up"))
        await asyncio.sleep(0)  # the write is queued; its caller stops waiting for it
        terminating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await terminating
        with pytest.raises(WorkflowFailureError, match="terminated"):
            await asyncio.wait_for(waiting, 10)  # a guard: the recheck is an hour away
    finally:
        await client.close()


class BlindableConnection(sqlite3.Connection):
    """A SQLite connection whose reads fail while ``blind`` is set (a disk or lock
    error that persists), for the watcher."""

    blind = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if BlindableConnection.blind:
            raise sqlite3.OperationalError("disk I/O error (simulated)")
        return super().execute(sql, *args)


async def test_waiters_poll_while_the_sqlite_watcher_cannot_see_the_file(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the watcher's reads of the file fail it cannot tell other processes'
    changes: it wakes every waiter, they poll until it sees again, then sleep."""
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", POLL)
    path = sqlite_url.removeprefix("sqlite:///")

    def connect(self: SQLiteStore) -> tuple[sqlite3.Connection, int] | None:
        conn = sqlite3.connect(
            path,
            timeout=60,
            isolation_level=None,
            check_same_thread=False,
            factory=BlindableConnection,
        )
        return conn, int(conn.execute("PRAGMA data_version").fetchone()[0])

    monkeypatch.setattr(SQLiteStore, "_watch_connect", connect)
    monkeypatch.setattr(BlindableConnection, "blind", False)
    waiter, closer = await Client.connect(sqlite_url), await Client.connect(sqlite_url)
    try:
        reads = count_describes(waiter.store, monkeypatch)
        h = await closer.start_workflow(agents.Approval.run, 3600.0, id=uid(), task_queue="none")
        waiting = asyncio.create_task(waiter.get_workflow_handle(h.id).result())
        await reads_reach(reads, 2)
        assert waiter.store.live_wakeups
        BlindableConnection.blind = True
        await reads_reach(reads, 8)  # woken when it went blind; polling since
        assert not waiter.store.live_wakeups
        BlindableConnection.blind = False
        await until(lambda: waiter.store.live_wakeups, "the watcher seeing again")
        back = reads()
        await asyncio.sleep(QUIET)
        assert reads() - back <= 1, "the waiter kept polling once the watcher saw again"
        await closer.get_workflow_handle(h.id).terminate("done")
        with pytest.raises(WorkflowFailureError, match="terminated"):
            await asyncio.wait_for(waiting, 10)
    finally:
        BlindableConnection.blind = False
        await closer.close()
        await waiter.close()


def uid() -> str:
    return "live-" + uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def listener_role() -> Iterator[str]:
    """A login role of its own for a store's listener, so the test can lock it out."""
    import psycopg

    role = f"ms_listen_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_pg.admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield role
    finally:
        with psycopg.connect(_pg.admin_url(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _admin(*statements: str) -> None:
    import psycopg

    with psycopg.connect(_pg.admin_url(), autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


@pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())
async def test_waiters_poll_while_the_listener_is_down_and_stop_once_it_is_back(
    listener_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notification sent while the listener is away is lost: the waiter must poll
    then. Here the listener's role is locked out and its connection cut, so it stays
    down until the role may log in again; then the waiter stops polling."""
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", POLL)
    with _pg.fresh_database() as url:
        parts = urlsplit(url)
        where = f"{parts.hostname}:{parts.port or 5432}"
        listen = urlunsplit(parts._replace(netloc=f"{listener_role}@{where}"))
        waiter = await Client.connect(f"{url}?listen_url={quote(listen, safe='')}")
        closer = await Client.connect(url)
        try:
            assert waiter.store.live_wakeups
            reads = count_describes(waiter.store, monkeypatch)
            h = await closer.start_workflow(
                agents.Approval.run, 3600.0, id=uid(), task_queue="none"
            )
            waiting = asyncio.create_task(
                waiter.get_workflow_handle(h.id, run_id=h.run_id).result()
            )
            await reads_reach(reads, 1)

            _admin(
                f'ALTER ROLE "{listener_role}" NOLOGIN',
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE usename = '{listener_role}'",
            )
            await reads_reach(reads, 6)  # the listener's loss woke it; it polls since
            assert not waiter.store.live_wakeups

            _admin(f'ALTER ROLE "{listener_role}" LOGIN')
            # the listener retries at most 5 s apart
            await until(lambda: waiter.store.live_wakeups, "the listener's return", 15)
            back = reads()
            await asyncio.sleep(QUIET)
            # the listener's return wakes the waiter for one more read, then it sleeps
            assert reads() - back <= 1, "the waiter kept polling once the listener was back"

            await closer.get_workflow_handle(h.id).terminate("done waiting")
            with pytest.raises(WorkflowFailureError, match="terminated"):
                await asyncio.wait_for(waiting, 10)
        finally:
            await closer.close()
            await waiter.close()


@pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())
async def test_a_process_that_does_not_listen_still_tells_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``listen=off`` turns off a process's listener, not its notifications: a waiter in
    a listening process hears of a run it closed at once."""
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", 3600.0)
    monkeypatch.setattr(handle_module, "LIVE_RECHECK", 3600.0)
    with _pg.fresh_database() as url:
        waiter, closer = await Client.connect(url), await Client.connect(url + "?listen=off")
        try:
            assert waiter.store.live_wakeups and not closer.store.live_wakeups
            h = await closer.start_workflow(
                agents.Approval.run, 3600.0, id=uid(), task_queue="none"
            )
            reads = count_describes(waiter.store, monkeypatch)
            waiting = asyncio.create_task(waiter.get_workflow_handle(h.id).result())
            await reads_reach(reads, 2)  # the run's id, then its state: RUNNING
            await closer.get_workflow_handle(h.id).terminate("closed by a deaf process")
            with pytest.raises(WorkflowFailureError, match="terminated"):
                await asyncio.wait_for(waiting, 10)  # a guard: the recheck is an hour away
        finally:
            await closer.close()
            await waiter.close()


class SilentLink:
    """A TCP relay to PostgreSQL that can go silent: it stops carrying bytes but keeps
    its connections open (no FIN, no reset), as a NAT or load balancer that dropped an
    idle connection does."""

    def __init__(self) -> None:
        self.silent = False
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, on: int = 0) -> int:
        """Relay to ``host:port`` from a local port (``on``, or any free one); return it."""

        async def relay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    if self.silent:
                        continue  # swallowed
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        async def accept(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            sr, sw = await asyncio.open_connection(host, port)
            for a, b in ((cr, sw), (sr, cw)):
                t = asyncio.create_task(relay(a, b))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)

        self.server = await asyncio.start_server(accept, "127.0.0.1", on)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.server is not None:
            self.server.close()


@pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())
async def test_a_listener_whose_link_goes_silent_is_found_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A link that stops carrying data raises nothing. The listener sends itself a
    notification every so often (here every 0.2 s); when one goes missing it counts
    the link lost, waiters poll, and it connects again."""
    from mainspring.store import postgres

    monkeypatch.setattr(postgres, "LISTEN_PING", 0.2)
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", POLL)
    link = SilentLink()
    with _pg.fresh_database() as url:
        parts = urlsplit(url)
        port = await link.start(parts.hostname or "127.0.0.1", parts.port or 5432)
        listen = urlunsplit(
            parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}", query="connect_timeout=2")
        )
        waiter = await Client.connect(f"{url}?listen_url={quote(listen, safe='')}")
        closer = await Client.connect(url)
        try:
            reads = count_describes(waiter.store, monkeypatch)
            h = await closer.start_workflow(
                agents.Approval.run, 3600.0, id=uid(), task_queue="none"
            )
            waiting = asyncio.create_task(waiter.get_workflow_handle(h.id).result())
            await reads_reach(reads, 2)  # the run's id, then its state
            assert waiter.store.live_wakeups
            link.silent = True
            await reads_reach(reads, 8)  # found out: the waiter polls
            assert not waiter.store.live_wakeups
            await closer.get_workflow_handle(h.id).terminate("closed while the link is silent")
            with pytest.raises(WorkflowFailureError, match="terminated"):
                await asyncio.wait_for(waiting, 10)
            link.silent = False  # the next connection through it works
            # a connection attempt made while the link was silent times out after 2 s;
            # the listener retries at most 5 s apart
            await until(lambda: waiter.store.live_wakeups, "the listener's return", 30)
        finally:
            await closer.close()
            await waiter.close()
            await link.stop()


@pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())
async def test_a_listener_that_dies_of_a_bug_leaves_waiters_polling_and_closes_cleanly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that dies of an unexpected error says so, stops counting as live and
    wakes every waiter, which polls from then on; closing the store still works."""
    monkeypatch.setattr(handle_module, "RESULT_RECHECK", POLL)
    with _pg.fresh_database() as url:
        waiter, closer = await Client.connect(url), await Client.connect(url)
        try:
            reads = count_describes(waiter.store, monkeypatch)
            h = await closer.start_workflow(
                agents.Approval.run, 3600.0, id=uid(), task_queue="none"
            )
            waiting = asyncio.create_task(waiter.get_workflow_handle(h.id).result())
            await reads_reach(reads, 2)

            def broken(payload: str) -> None:
                raise RuntimeError("a bug in handling a notification (simulated)")

            monkeypatch.setattr(waiter.store, "_heard", broken)
            await closer.start_workflow(agents.Approval.run, 1.0, id=uid(), task_queue="q")
            await reads_reach(reads, 8)  # woken when the listener died; polling since
            assert not waiter.store.live_wakeups
            assert "the PostgreSQL listener stopped" in caplog.text
            await closer.get_workflow_handle(h.id).terminate("done")
            with pytest.raises(WorkflowFailureError, match="terminated"):
                await asyncio.wait_for(waiting, 10)
        finally:
            await closer.close()
            await waiter.close()  # raises nothing, stops its writers
    assert not any(t.name.startswith("mainspring-pg") for t in threading.enumerate())
