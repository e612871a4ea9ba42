"""The PostgreSQL store: many workers on many machines share one database.

``postgresql://user:password@host:5432/db?schema=mainspring&pool_size=2`` (the URL's
parameters, PgBouncer and the reasoning about lost commits: ``docs/postgres.md``). The
tables live in their own schema, named in every statement (no ``search_path``, no
session state). ``pool_size`` writer threads each own one connection, opened on first use
and reopened with backoff, and commit what is queued to them in batches
(:mod:`._pg_batch`). A batch that wrote sends one ``NOTIFY`` naming what changed; the
listener wakes this process's pollers concerned, which also poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from .._trouble import report
from ..errors import StoreClosedError, StoreError
from . import _pg_clock
from ._group_commit import GroupCommitThread, outcome
from ._pg_batch import Batches, _Link
from ._pg_clock import ServerClock
from ._pg_schema import check_server_version as _check_server_version  # noqa: F401 (tests)
from ._pg_schema import inspect, migrate, schema_version
from ._pg_statements import qualified
from ._pg_url import PgSettings, _connect_error, _hosts, _ident, _line, parse_postgres_url
from ._tx import Reads, Tx
from .base import Clock, Store
from .records import SchemaInfo
from .sqlfile import load_queries

__all__ = ["PgSettings", "PostgresStore", "parse_postgres_url", "schema_version"]

T = TypeVar("T")
STALLED = 0.05  # seconds a writer's batch may run before the next writer takes new work
Conn = psycopg.Connection[Any]

log = logging.getLogger("mainspring.store")

NO_ANSWER = 30.0  # seconds a writer waits on one transaction before cutting its link
# the same while the store closes: a process asked to stop does not wait out a silent
# database (what it could not commit fails as perhaps-saved, which is safe to retry)
CLOSING_NO_ANSWER = 3.0

# Every LISTEN_PING seconds the listener sends itself a notification through a writer
# connection, and counts its link lost if the previous one, committed, never arrived.
LISTEN_PING = 10.0
PROOF_WAIT = 1.0  # seconds open() waits for the listener to hear its first notification
_DEAF = (
    "the listening connection never heard a notification sent through the store's own "
    "connections (is listen_url, or the URL, going through PgBouncer in transaction mode, "
    "or to another server?); waiters poll meanwhile: give listen_url a direct connection "
    "to the same database, or set listen=off"
)


class PostgresStore(Store):
    """A :class:`Store` on a PostgreSQL database shared by any number of processes."""

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        """``clock``: leave it out (or pass a plain :class:`Clock`) to keep time by the
        server's clock (:mod:`._pg_clock`); a clock of a test's own is used as it is."""
        settings = parse_postgres_url(url)
        if clock is None or type(clock) is Clock:
            clock = ServerClock(f"{_hosts(settings)}/{settings.dbname}")
        super().__init__(url, clock)
        self.settings = settings
        self._sql = qualified(load_queries("postgres"), _ident(self.settings.schema))
        self._writers: list[GroupCommitThread] = []
        self._load: list[int] = []
        self._listener: asyncio.Task[None] | None = None
        self._lconn: psycopg.AsyncConnection[Any] | None = None
        # the listener has heard one of its own notifications on its current connection
        self._proven = False
        self._proof = asyncio.Event()  # set when it is
        self._database: str | None = None  # the database the writers reach (at open)
        self._token = uuid.uuid4().hex
        # this process's listener checks its link with notifications to itself alone
        self._ping_channel = f"mainspring_ping_{self._token[:16]}"
        self._channel = f"mainspring_{self.settings.schema}"
        self._batches = Batches(self.settings, self._sql, self._token)
        self._watchdog: threading.Thread | None = None
        self._watchdog_stop = threading.Event()
        self._timekeeper: asyncio.Task[None] | None = None
        self._links: list[_Link] = []

    @property
    def commits(self) -> int:
        """Transactions committed by this process's writers so far."""
        return self._batches.commits

    # ------------------------------------------------------------------ connection

    def _connect(self, conninfo: str | None = None, *, prepare: bool = True) -> Conn:
        try:
            return psycopg.connect(
                conninfo or self.settings.conninfo,
                autocommit=True,
                # one-off connections (migration scripts hold several statements, which
                # a prepared statement cannot) prepare nothing
                prepare_threshold=self.settings.prepare_threshold if prepare else None,
            )
        except psycopg.Error as exc:
            raise _connect_error(exc, self.settings) from exc

    def _migrate(self) -> None:
        """Create or upgrade the schema (see :func:`._pg_schema.migrate`)."""
        self._database = migrate(
            lambda: self._connect(prepare=False), self.settings, self._sql["set_meta"], self.clock
        )

    def _inspect(self) -> SchemaInfo:
        return inspect(lambda: self._connect(prepare=False), self.settings)

    async def inspect_schema(self) -> SchemaInfo:
        """The schema's version, read-only: a missing schema is reported, not created."""
        return await asyncio.to_thread(self._inspect)

    # ------------------------------------------------------------------ batches

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, create or migrate the schema, and start listening for changes."""
        if self._writers:
            return
        self.outgrown = self._batches.outgrown = None
        await asyncio.to_thread(self._migrate)
        if self.settings.listen_conninfo is not None:
            self._lconn = await self._listen_connect()
        links = self._links = [_Link(self._connect) for _ in range(self.settings.pool_size)]
        self._writers = [
            await asyncio.to_thread(
                GroupCommitThread,
                f"mainspring-pg-{i}",
                lambda link=link: link,  # type: ignore[misc]
                self._batches.execute,
            )
            for i, link in enumerate(links)
        ]
        self._load = [0] * len(self._writers)
        self._watchdog_stop.clear()
        self._watchdog = threading.Thread(
            target=self._watch_writers,
            args=(list(zip(self._writers, links, strict=True)),),
            name="mainspring-pg-watchdog",
            daemon=True,
        )
        self._watchdog.start()
        if isinstance(self.clock, ServerClock):
            await self._first_readings(self.clock)
            self._timekeeper = asyncio.create_task(self._keep_time(self.clock))
        else:  # a clock of the process's own: the schema's version is read all the same
            self._timekeeper = asyncio.create_task(self._watch_schema())
        if self._lconn is not None:
            self._listener = asyncio.create_task(self._listen())
            # live from the start where it works (a round trip); where it cannot hear
            # (PgBouncer in transaction mode), waiters poll: open does not wait on it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROOF_WAIT):
                    await self._proof.wait()

    async def close(self) -> None:
        """Finish queued transactions and disconnect."""
        if self._timekeeper is not None:
            self._timekeeper.cancel()
            try:
                await self._timekeeper
            except asyncio.CancelledError:
                pass
            except Exception:  # a bug: closing goes on
                log.exception("the reader of the server's clock and the schema had failed")
            self._timekeeper = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # logged if it died
                await self._listener
            self._listener = None
        if self._lconn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._lconn.close()
            self._lconn = None
        writers, self._writers = self._writers, []
        self._batches.set_closing(True)  # no waiting out a database that is gone
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in writers))
        self._batches.set_closing(False)
        self._watchdog_stop.set()  # after the writers: it frees one stuck while stopping
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.join)
            self._watchdog = None

    def _watch_writers(self, writers: list[tuple[GroupCommitThread, _Link]]) -> None:
        """Cut the connection of a writer whose transaction attempt has had no answer
        for :data:`NO_ANSWER` seconds. A link that went silent (a hung proxy or server,
        a network that drops packets) raises nothing and TCP keepalives cover only idle
        connections: without this, the writer and all queued behind it would wait
        for ever. Each attempt is cut once at most; a re-run on a new connection is
        timed afresh."""
        while not self._watchdog_stop.wait(min(1.0, NO_ANSWER / 4, CLOSING_NO_ANSWER / 4)):
            now = time.monotonic()
            limit = CLOSING_NO_ANSWER if self._batches.closing else NO_ANSWER
            for _writer, link in writers:
                since = link.attempt_since
                if since is not None and now - since > limit and link.sever(since):
                    log.warning(
                        "a PostgreSQL transaction had no answer for %.0f s; dropping its "
                        "connection (the transaction is re-run, or reported as perhaps "
                        "committed)",
                        now - since,
                    )

    async def schema_status(self) -> tuple[int, int]:
        """``(version in the database, latest version this code knows)``."""

        def read(tx: Tx) -> int:
            rows = tx.q("get_meta", {"key": "version"})
            return int(rows[0][0]) if rows else 0

        return await self._run(read, readonly=True), schema_version()

    async def _run(
        self,
        fn: Callable[[Tx], T],
        *,
        readonly: bool = False,
        key: str | None = None,
        lazy: bool = False,
        reads: Reads | None = None,
    ) -> T:
        if not self._writers:
            raise StoreClosedError("the store is closed; use Client.connect() to open it")
        self._check_usable()
        i = self._pick()
        self._load[i] += 1
        try:
            # a write whose caller is cancelled may commit all the same: wake every waiter
            # here then (another process's wake-up names this process, which skips it)
            orphaned = None if readonly else self.notify_external
            fut = self._writers[i].submit(fn, readonly, key, lazy, reads, orphaned)
            return await outcome(fut, orphaned)
        finally:
            self._load[i] -= 1

    def _pick(self) -> int:
        """The writer for the next operation: the first one that is not stalled.

        Operations that queue behind one writer's commit share its next one, so one
        writer does the work while it keeps up (fewer, bigger batches; less contention
        for the GIL). The next takes over while a batch has been running for longer
        than :data:`STALLED` (a long read, a wait on a row lock); if all are stalled,
        the least loaded.
        """
        now = time.monotonic()
        for i, w in enumerate(self._writers):
            since = w.busy_since
            if since is None or now - since < STALLED:
                return i
        return self._load.index(min(self._load))

    # ------------------------------------------------------------------ notifications

    @property
    def live_wakeups(self) -> bool:
        """Whether other processes' changes reach this process's waiters: while the
        listener is connected and running (see :meth:`Wakeups.live_wakeups`)."""
        listener = self._listener
        return (
            self._proven
            and self._lconn is not None
            and listener is not None
            and not listener.done()
        )

    async def _listen_connect(self) -> psycopg.AsyncConnection[Any]:
        assert self.settings.listen_conninfo is not None
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.settings.listen_conninfo, autocommit=True
            )
        except psycopg.Error as exc:
            raise _connect_error(exc, self.settings.listener or self.settings) from exc
        try:
            if conn.info.server_version >= 140000:
                # a listener waits in silence by design: a server or role setting that
                # closes idle sessions would cut it every few seconds (and wake every
                # waiter each time); it is a direct session, so the SET stays its own.
                # A server that lacks the setting (a PostgreSQL-compatible one) has
                # nothing to turn off.
                with contextlib.suppress(psycopg.errors.UndefinedObject):
                    await conn.execute("SET idle_session_timeout = 0")
            cur = await conn.execute("SELECT current_database()")
            row = await cur.fetchone()
            if self._database is not None and row is not None and row[0] != self._database:
                raise StoreError(
                    f"listen_url reaches database {row[0]!r}, but the store's URL reaches "
                    f"{self._database!r}: notifications stay within one database, so the "
                    "listener would hear none; point listen_url at the same database"
                )
            await conn.execute(f"LISTEN {_ident(self._channel)}")
            await conn.execute(f"LISTEN {_ident(self._ping_channel)}")
            self._proven = False  # until it hears its own first notification
            self._proof.clear()
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
            raise
        return conn

    async def _listen(self) -> None:
        """Wake local pollers on other processes' commits; reconnect when the link drops.

        However the listener stops, other than by :meth:`close`, it wakes every waiter
        first: they poll from then on (see :attr:`live_wakeups`).
        """
        try:
            await self._listen_forever()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the PostgreSQL listener stopped; waiters poll from now on")
            lost, self._lconn = self._lconn, None  # not live from here on
            self.notify_external()
            if lost is not None:
                with contextlib.suppress(Exception):
                    await lost.close()

    async def _listen_forever(self) -> None:
        delay = 0.1
        down = False
        while True:
            try:
                if self._lconn is None:
                    self._lconn = await self._listen_connect()
                    self.notify_external()  # notifications were lost while disconnected
                    if down:
                        log.info("PostgreSQL listener connected again")
                down = False
                delay = 0.1
                await self._hear(self._lconn)
            except (psycopg.Error, StoreError) as exc:
                down = True
                # the same line at most every 30 s however often a reconnect fails
                report(
                    log,
                    "the PostgreSQL listener",
                    StoreError(f"lost its connection ({_line(exc)})"),
                    "polling meanwhile, reconnecting",
                )
                if self._lconn is not None:
                    lost, self._lconn = self._lconn, None
                    self.notify_external()  # waiters poll until the listener is back
                    with contextlib.suppress(psycopg.Error):
                        await lost.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _hear(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Dispatch ``conn``'s notifications until it fails or goes silent.

        A link that stops carrying data (a NAT or load balancer dropped it, a failover
        without a reset) raises nothing, so this sends itself a notification, on a
        channel of its own, through a writer: at once, then every :data:`LISTEN_PING`
        seconds. It raises if one committed :data:`LISTEN_PING` seconds ago or more has
        not arrived, or if one has not even committed after three times that. Until the
        first arrives, waiters poll (:attr:`live_wakeups`): a listener that can hear
        nothing (through PgBouncer in transaction mode, say) never keeps them waiting.
        """
        ping: asyncio.Task[float | None] | None = asyncio.create_task(self._ping())
        sent = time.monotonic()
        heard = False
        try:
            while True:
                async for n in conn.notifies(timeout=LISTEN_PING):
                    if n.channel == self._ping_channel:
                        heard = self._proven = True
                        self._proof.set()
                    else:
                        self._heard(n.payload)
                now = time.monotonic()
                if ping is not None and not heard:
                    committed = ping.result() if ping.done() else None
                    if committed is not None and now - committed >= LISTEN_PING:
                        if not self._proven:
                            raise StoreError(_DEAF)
                        raise StoreError("the listening connection stopped carrying notifications")
                    if not ping.done() and now - sent >= 3 * LISTEN_PING:
                        raise StoreError("the listener's check of its connection never committed")
                    if not ping.done() or committed is not None:
                        continue  # give it until the next round
                heard = False
                sent = now
                ping = asyncio.create_task(self._ping())
        finally:
            if ping is not None:
                ping.cancel()

    async def _ping(self) -> float | None:
        """Send this process's listener a notification; when it committed (None: it
        could not be sent, which proves nothing about the listener)."""
        params = {"channel": self._ping_channel, "payload": ""}
        try:
            await self._run(lambda tx: tx.q("ping_listener", params), readonly=True)
        except Exception:  # noqa: BLE001 - a failed check is retried next round
            return None
        return time.monotonic()

    def _latest_schema(self) -> int:
        return schema_version()

    def _refuse_writes(self, why: str) -> None:
        self._batches.outgrown = why  # in every writer, from the next batch on

    async def _reading(self, clock: ServerClock) -> bool:
        """One reading of the server's clock and of the schema's version; whether the
        clock reading could be used. A database migrated past this code while it runs
        makes the store outgrown (see :meth:`~._store_core.StoreCore._outgrow`): every
        writer refuses every batch from the moment the reading sees it."""
        try:
            ok = await self._run(clock.read, readonly=True, lazy=True)
        except StoreError as exc:  # unreachable for now: read again soon
            clock.missed(_line(exc))
            return False
        try:
            why = await self._run(self._read_schema, readonly=True, lazy=True)
        except StoreError as exc:
            report(log, "reading the schema's version", exc, "reading it again soon")
            return False
        if why is not None:
            self._outgrow(why)
        return ok

    async def _first_readings(self, clock: ServerClock) -> None:
        """Before open returns: read the server's clock through a writer (which connects
        it), and again while no reading has been usable, up to
        :data:`~._pg_clock.UNREAD_WARNING` unusable ones in a row (the last one says so
        in the log)."""
        await self._reading(clock)
        while clock.uncertainty is None and 0 < clock.unread < _pg_clock.UNREAD_WARNING:
            await self._reading(clock)

    async def _keep_time(self, clock: ServerClock) -> None:
        """Read the server's clock, and the schema's version with it, every
        :data:`~._pg_clock.CLOCK_SYNC` seconds, or :data:`~._pg_clock.CLOCK_RETRY`
        after a reading that failed or was too slow to use (the first was made at open);
        and within :data:`~._pg_clock.CLOCK_RETRY` seconds of a writer connecting anew,
        which may have reached another server (a failover) whose clock may differ, or
        of this machine's clock and its steady clock parting (the clock was set, or the
        machine slept and the steady clock did not count it)."""
        ok = clock.uncertainty is not None
        connects = self._connects()
        while self.outgrown is None:  # once it is set, nothing more may be read
            await self._until_due(clock, ok, connects)
            connects = self._connects()
            ok = await self._reading(clock)

    async def _until_due(self, clock: ServerClock, ok: bool, connects: int) -> None:
        """Wait until the server's clock is due to be read again (see
        :meth:`_keep_time`)."""
        waited, wait = 0.0, _pg_clock.CLOCK_SYNC if ok else _pg_clock.CLOCK_RETRY
        while waited < wait and self._connects() == connects:
            step = min(_pg_clock.CLOCK_RETRY, wait - waited)
            gap = _pg_clock._wall() - _pg_clock._steady()
            await asyncio.sleep(step)
            waited += step
            parted = _pg_clock._wall() - _pg_clock._steady() - gap
            if abs(parted) > _pg_clock.CLOCK_SKEW_WARNING:
                return

    def _connects(self) -> int:
        """Connections the writers have opened so far."""
        return sum(link.connects for link in self._links)

    def _heard(self, payload: str) -> None:
        """Another process committed: wake whom its notification names."""
        token, _, topics = payload.partition("\n")
        if token == self._token:
            return  # this process's own commit: its waiters know
        if topics:
            self.notify_topics(topics.split("\n"))
        else:
            self.notify_external()
