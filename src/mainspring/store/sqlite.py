"""The embedded SQLite store: one file, zero set-up.

WAL journal with ``synchronous=FULL`` by default: a committed step survives power
loss, not only a process crash. ``?synchronous=normal`` in the URL trades that for
speed: in WAL mode a power cut may then lose the last commits, never corrupt the
file. Several processes may share one file; SQLite serialises their writes and every
claim carries a lease and a fencing token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..errors import (
    NotAMainspringDatabaseError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)
from ._group_commit import outcome
from ._schema import SCHEMA_MARK, compatible_from, existing_version, migrations
from ._sqlite_runner import LoopCommitter
from ._tx import Reads, Tx
from .base import Clock, Store
from .records import SchemaInfo
from .sqlfile import load_queries

log = logging.getLogger("mainspring.store")

T = TypeVar("T")

CHECKPOINT_INTERVAL = 0.5
# seconds a connection waits for another process's lock on the file before it gives up
BUSY_TIMEOUT = 60.0
BUSY_COMMITS = 5  # commits of this process within one watch interval that make it busy


def schema_version() -> int:
    """The schema version this code writes."""
    return migrations("sqlite")[-1][0]


def _open_error(path: str, exc: sqlite3.OperationalError) -> StoreError:
    """What keeps ``path`` from opening, other than its not being a database."""
    why = str(exc)
    if "locked" in why or "busy" in why:
        return StoreUnavailableError(
            f"{path} stayed locked by another process for {BUSY_TIMEOUT:g} s (a long "
            "migration, or a process stuck mid-write?); try again, or stop that process",
            maybe_saved=False,
        )
    if "unable to open" in why:
        folder = os.path.dirname(os.path.abspath(path))
        return StoreError(
            f"cannot open {path}: {why} (does the folder {folder} exist, and may this user "
            "write there?)"
        )
    return StoreError(f"cannot open {path}: {why}")


def _statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


class _SQLiteTx:
    __slots__ = ("conn", "sql")

    def __init__(self, conn: sqlite3.Connection, sql: dict[str, str]) -> None:
        self.conn = conn
        self.sql = sql

    def q(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(self.sql[name], params).fetchall()

    def qs(self, queries: Any) -> list[list[tuple[Any, ...]]]:
        return [self.conn.execute(self.sql[n], p).fetchall() for n, p in queries]

    def x(self, name: str, params: dict[str, Any]) -> int:
        return self.conn.execute(self.sql[name], params).rowcount

    def w(self, name: str, params: dict[str, Any]) -> None:
        self.conn.execute(self.sql[name], params)

    def publish(self, *topics: str) -> None:
        pass  # other processes see every commit (PRAGMA data_version) and wake everyone

    def xmany(self, name: str, params: Any) -> None:
        self.conn.executemany(self.sql[name], params)


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """Return (path, options) of ``sqlite:///path.db?synchronous=normal``."""
    if url in ("memory://", "sqlite://:memory:", "sqlite:///:memory:", ":memory:"):
        return ":memory:", {}
    parts = urlsplit(url)
    if parts.scheme and parts.scheme != "sqlite":
        raise StoreError(f"not a SQLite URL: {url!r}")
    path = unquote(parts.path if parts.scheme else url.split("?", 1)[0])
    if parts.scheme and parts.netloc:
        path = parts.netloc + path
    if parts.scheme and path.startswith("/") and not path.startswith("//"):
        path = path[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
    elif path.startswith("//"):
        path = path[1:]
    if not path:
        raise StoreError(f"the SQLite URL {url!r} names no file; use sqlite:///path/to/file.db")
    opts: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in SQLITE_PARAMETERS:
            raise StoreError(
                f"unknown parameter {key[:40]!r} in the SQLite URL; the one it takes is "
                "synchronous (full, normal or extra)"
            )
        if key in opts:
            raise StoreError(f"{key} is given twice in the SQLite URL; give it once")
        if not value:
            raise StoreError(f"{key} is empty in the SQLite URL; give it a value or leave it out")
        opts[key] = value
    return path, opts


SQLITE_PARAMETERS = frozenset({"synchronous"})


_IN_CHUNK = 500  # keys per IN (…) list, well under SQLite's parameter limit


def _finished(conn: sqlite3.Connection, keys: list[str]) -> list[str]:
    """Which of ``keys`` name a closed run or an answered query."""
    out: list[str] = []
    for i in range(0, len(keys), _IN_CHUNK):
        chunk = keys[i : i + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        for sql in (
            f"SELECT run_id FROM mainspring_runs WHERE status != 'RUNNING' AND run_id IN ({marks})",
            f"SELECT query_id FROM mainspring_queries WHERE done = 1 AND query_id IN ({marks})",
        ):
            out += [row[0] for row in conn.execute(sql, chunk)]
    return out


class SQLiteStore(Store):
    """A :class:`Store` on one SQLite file (or in memory, for tests)."""

    def __init__(
        self, url: str, clock: Clock | None = None, *, watch_interval: float = 0.01
    ) -> None:
        super().__init__(url, clock)
        self.path, opts = parse_sqlite_url(url)
        sync = opts.get("synchronous", "full").upper()
        if sync not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"synchronous must be full, normal or extra, not {sync.lower()!r}")
        self.synchronous = sync
        self._sql = load_queries("sqlite")
        self._writer: LoopCommitter | None = None
        self._watch_interval = watch_interval
        self._watcher: threading.Thread | None = None
        self._watching = False  # the watcher sees the file (see live_wakeups)
        self._watch_stop = threading.Event()
        self.commits = 0
        self._schema_reader: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ connection

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=512,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            if self.path != ":memory:":
                # the watcher thread checkpoints instead, so no commit pays for it
                conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA foreign_keys=OFF")
            self._migrate(conn)
        except sqlite3.OperationalError as exc:  # the file is there, or could not be
            raise _open_error(self.path, exc) from exc
        except sqlite3.DatabaseError as exc:
            raise NotAMainspringDatabaseError(
                f"{self.path} is not a Mainspring database ({exc}); point --db / "
                "MAINSPRING_DB at a new or existing Mainspring file"
            ) from exc
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        scripts = migrations("sqlite")
        latest = scripts[-1][0]
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._current_version(conn, latest)
            for version, _name, script in scripts:
                if version <= current:
                    continue
                for stmt in _statements(script):
                    conn.execute(stmt)
                for key, value in (
                    ("schema", SCHEMA_MARK),
                    ("version", str(version)),
                    ("compatible", str(compatible_from(scripts, version))),
                ):
                    conn.execute(
                        "INSERT INTO mainspring_meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value),
                    )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _current_version(self, conn: sqlite3.Connection, latest: int) -> int:
        """The schema version in the file (0 if empty); refuse one not ours or newer."""
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        return existing_version(
            self.path,
            tables,
            lambda: dict(conn.execute("SELECT key, value FROM mainspring_meta").fetchall()),
            latest,
            "Point --db / MAINSPRING_DB at a new file",
        )

    async def inspect_schema(self) -> SchemaInfo:
        """The file's schema version, read-only: a missing file is not created."""
        latest = schema_version()
        if self.path == ":memory:" or not os.path.exists(self.path):
            return SchemaInfo(current=0, latest=latest, exists=False)

        def read() -> int:
            uri = "file:" + quote(os.path.abspath(self.path)) + "?mode=ro"
            try:
                conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path} to read it: {exc}") from exc
            try:
                return self._current_version(conn, latest)
            except sqlite3.OperationalError as exc:
                raise _open_error(self.path, exc) from exc
            except sqlite3.DatabaseError as exc:
                raise NotAMainspringDatabaseError(
                    f"{self.path} is not a Mainspring database ({exc})"
                ) from exc
            finally:
                conn.close()

        return SchemaInfo(current=await asyncio.to_thread(read), latest=latest, exists=True)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open the file (creating and migrating it if needed)."""
        if self._writer is not None:
            return
        conn = await asyncio.to_thread(self._connect)
        self.outgrown = None  # the file was just checked (opened again, say, after a restore)
        self._writer = LoopCommitter(conn, self._make_tx, self._committed)
        if self.path != ":memory:":  # also while the watcher thread cannot watch
            self._schema_reader = asyncio.create_task(self._watch_schema())
        if self.path != ":memory:":
            # read where the file stands now, before any of this process's operations:
            # a change made from here on, by any process, is then seen
            watching = await asyncio.to_thread(self._watch_connect)
            if watching is not None:
                self._watching = True
                self._watch_stop = threading.Event()
                self._watcher = threading.Thread(
                    target=self._watch,
                    args=(asyncio.get_running_loop(), self._watch_stop, *watching),
                    name="mainspring-sqlite-watch",
                    daemon=True,
                )
                self._watcher.start()

    async def close(self) -> None:
        """Finish queued transactions and close the file."""
        if self._schema_reader is not None:
            self._schema_reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._schema_reader
            self._schema_reader = None
        if self._watcher is not None:
            self._watch_stop.set()
            await asyncio.to_thread(self._watcher.join)
            self._watcher = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()

    def _make_tx(self, conn: sqlite3.Connection) -> _SQLiteTx:
        return _SQLiteTx(conn, self._sql)

    def _committed(self) -> None:
        self.commits += 1

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
        if self._writer is None:
            raise StoreClosedError("the store is closed; use Client.connect() to open it")
        self._check_usable()
        # a write whose caller is cancelled may commit all the same: wake every waiter
        orphaned = None if readonly else self.notify_external
        return await outcome(self._writer.submit(fn, readonly, orphaned), orphaned)

    @property
    def live_wakeups(self) -> bool:
        """Whether other processes' changes reach this process's waiters: while the
        watcher thread runs, or always for a database in memory, which no other process
        sees (see :meth:`Wakeups.live_wakeups`)."""
        return self.path == ":memory:" or self._watching

    def _changed_elsewhere(self, finished: list[str] | None) -> None:
        """The database changed: wake the pollers and the waiters of ``finished`` keys
        (closed runs, answered queries; ``None``: every waiter)."""
        if finished is None:
            self.notify_external()
            return
        self.notify()
        for key in finished:
            self.notify_key(key)

    def _watch_connect(self) -> tuple[sqlite3.Connection, int] | None:
        """The watcher's connection and the file's ``data_version`` now (None: cannot
        watch, so waiters poll; see :attr:`live_wakeups`)."""
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            return conn, int(conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            log.warning(
                "cannot watch %s for other processes' changes (%s); waiters poll", self.path, exc
            )
            return None

    def _watch(
        self,
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
        conn: sqlite3.Connection,
        version: int,
    ) -> None:
        """Wake local waiters when another process commits (``PRAGMA data_version``),
        and checkpoint the WAL twice a second when this process wrote.

        Runs in its own thread. ``data_version`` also moves on this process's own
        commits, and the two cannot be told apart: while this process commits too, a
        change is acted on at most every 100 ms (but always acted on); while it is
        quiet, within ``watch_interval``. A change wakes the task pollers, and the
        result and query waiters whose run closed or whose query was answered: the
        watcher reads which in one query, instead of every waiter reading its own.
        If the watcher stops for any reason but :meth:`close`, it wakes every waiter:
        from then on they poll.
        """
        try:
            self._watch_file(loop, stop, conn, version)
        finally:
            self._watching = False  # before the wake-up: the woken waiters then poll
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            if not stop.is_set():
                with contextlib.suppress(RuntimeError):  # the loop closed
                    loop.call_soon_threadsafe(self.notify_external)

    def _schema_moved(
        self, loop: asyncio.AbstractEventLoop, conn: sqlite3.Connection, cookie: int | None
    ) -> int | None:
        """In the watcher thread, once the file changed: if SQLite's schema cookie moved
        (a migration created or altered something), read the schema's version (see
        :meth:`~._store_core.StoreCore._read_schema`); a file migrated past this code
        makes the store outgrown. Returns the cookie seen. (A migration that changes
        only data is seen by :meth:`~._store_core.StoreCore._watch_schema`.)"""
        try:
            now_cookie = int(conn.execute("PRAGMA schema_version").fetchone()[0])
            if now_cookie == cookie:
                return cookie
            why = self._read_schema(_SQLiteTx(conn, self._sql))
        except sqlite3.Error:
            return cookie  # read again on the next change
        if why is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(self._outgrow, why)
        return now_cookie

    def _latest_schema(self) -> int:
        return schema_version()

    def _refuse_writes(self, why: str) -> None:
        writer = self._writer
        if writer is not None:
            writer.outgrown = why  # from its next batch on

    def _watch_file(
        self,
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
        conn: sqlite3.Connection,
        last: int,
    ) -> None:
        own = self.commits
        last_wake = 0.0
        changed = False  # a change not yet acted on
        checkpointed_at = self.commits
        next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL
        interval = self._watch_interval
        cookie = None  # the schema is read on the first turn
        while not stop.wait(interval):
            if time.monotonic() >= next_checkpoint:
                next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL
                if self.commits != checkpointed_at:
                    checkpointed_at = self.commits
                    try:  # copy the WAL into the database off the commit path
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:
                        pass
            try:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                if self._watching:  # blind for now: waiters poll until it sees again
                    log.warning("cannot watch %s (%s); waiters poll meanwhile", self.path, exc)
                    self._watching = False
                    try:
                        loop.call_soon_threadsafe(self.notify_external)
                    except RuntimeError:
                        return  # the loop closed
                continue
            if not self._watching:  # it sees again; what it missed meanwhile is unknown
                self._watching = True
                changed = True
                last_wake = 0.0
            now = time.monotonic()
            if version != last or cookie is None:
                cookie = self._schema_moved(loop, conn, cookie)
            changed = changed or version != last
            last = version
            ours = self.commits != own
            # this process's own commits woke its waiters; another's may hide among
            # them, so act on the change anyway, but at most every 100 ms
            if changed and not (ours and now - last_wake < 0.1):
                changed = False
                last_wake = now
                try:
                    done = _finished(conn, list(self._keyed)) if self._keyed else []
                except (sqlite3.Error, RuntimeError):  # cannot tell: wake them all
                    done = None
                try:
                    loop.call_soon_threadsafe(self._changed_elsewhere, done)
                except RuntimeError:
                    return  # the loop closed
            # while this process commits busily, a change wakes pollers at most every
            # 100 ms anyway: look that often, and leave the GIL to the loop between
            busy = self.commits - own >= BUSY_COMMITS
            interval = 0.1 if busy else self._watch_interval
            own = self.commits
