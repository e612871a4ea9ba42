"""Runs SQLite transactions on the event loop's thread; commits in a helper thread.

SQLite statements take microseconds, but a thread running them must win the GIL back
after every one; with a busy event loop that wait dominates. So the transaction
functions run right on the loop's thread, and only the ``COMMIT`` — the fsync, the one
slow part — goes to a helper thread, during which the loop goes on running workflow
code and gathering the next batch. Everything queued while a commit is in flight
shares the next transaction (group commit). Results are delivered after the commit.

If another process holds the write lock, the batch moves to the helper thread, which
waits for the lock there so the loop never blocks on it.

The WAL is checkpointed here too, between transactions, every
:data:`CHECKPOINT_COMMITS` commits, or every :data:`CHECKPOINT_SECONDS` while commits
come densely (sparse commits leave the watcher thread time to checkpoint off this
path, and a lone commit is not held up by a checkpoint): a checkpoint run
while this connection keeps appending never catches up, so the WAL would never start
over and would grow without bound — and appending to a growing file costs every commit
a file-size update on top of its fsync (about 270 µs instead of 160 µs here). Run
between transactions, the checkpoint completes, the next transaction starts the WAL
over from its beginning, and commits overwrite space the file already has.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import SchemaVersionError, StoreError
from ._group_commit import _deliver, _Op

T = TypeVar("T")

LOCK_WAIT = 60.0
CHECKPOINT_COMMITS = 50
CHECKPOINT_SECONDS = 0.1
DENSE_COMMITS = 10  # commits within CHECKPOINT_SECONDS that make the stream dense


def _busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class LoopCommitter:
    """Queues transaction functions and runs them in batches on one connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        make_tx: Callable[[sqlite3.Connection], Any],
        on_commit: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._tx = make_tx(conn)
        self._on_commit = on_commit
        self._loop = asyncio.get_running_loop()
        self._queue: list[_Op] = []
        self._busy = False
        self._scheduled = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mainspring-sqlite-commit")
        self._uncheckpointed = 0
        self._checkpoint_due = time.monotonic() + CHECKPOINT_SECONDS
        self._window_start = 0.0  # commits counted since then, for density
        self._window = 0
        # set (by any thread) once the file was migrated past this code: from then on
        # every batch is refused
        self.outgrown: str | None = None
        conn.execute("PRAGMA busy_timeout = 0")

    def submit(
        self, fn: Callable[[Any], T], readonly: bool, orphaned: Callable[[], None] | None = None
    ) -> asyncio.Future[T]:
        """Queue ``fn``; the future resolves after the transaction holding it commits
        (or ``orphaned`` runs, if the caller stopped waiting: see ``_deliver``)."""
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.append(_Op(fn, fut, self._loop, readonly, orphaned=orphaned))
        self._idle.clear()
        self._kick()
        return fut

    def _kick(self) -> None:
        if self._queue and not self._busy and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _done(self, batch: list[_Op]) -> None:
        _deliver(batch)
        n, now = self._uncheckpointed, time.monotonic()
        dense = self._window >= DENSE_COMMITS and now - self._window_start <= CHECKPOINT_SECONDS
        if n >= CHECKPOINT_COMMITS or (dense and now >= self._checkpoint_due):
            # the callers have their results; the next batch waits for the checkpoint
            work = self._loop.run_in_executor(self._pool, self._checkpoint)
            work.add_done_callback(lambda _: self._release())
            return
        self._release()

    def _release(self) -> None:
        self._busy = False
        if self._queue:
            self._kick()
        else:
            self._idle.set()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database so that the next transaction starts it over."""
        self._uncheckpointed = 0
        self._checkpoint_due = time.monotonic() + CHECKPOINT_SECONDS
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # another process is checkpointing; the next turn will do

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._queue:
            return
        batch, self._queue = self._queue, []
        self._busy = True
        if self.outgrown is not None:
            self._fail(batch, SchemaVersionError(self.outgrown))
            return
        try:
            needs_commit = self._run_batch(batch)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                self._fail(batch, exc)
                return
            work = self._loop.run_in_executor(self._pool, self._run_contended, batch)
            work.add_done_callback(lambda f: self._finished(batch, f))
            return
        except BaseException as exc:  # noqa: BLE001 - every op learns of it
            self._fail(batch, exc)
            return
        if not needs_commit:
            self._done(batch)
            return
        if not getattr(self._loop, "_ready", True):
            # Nothing else is ready to run: committing right here is faster than a
            # round trip to the helper thread (whose wake-up costs more than it saves).
            try:
                self._commit()
            except BaseException as exc:  # noqa: BLE001 - every op learns of it
                self._fail(batch, exc)
                return
            self._done(batch)
            return
        work = self._loop.run_in_executor(self._pool, self._commit)
        work.add_done_callback(lambda f: self._finished(batch, f))

    def _finished(self, batch: list[_Op], work: asyncio.Future[None]) -> None:
        exc = work.exception()
        if exc is not None:
            self._fail(batch, exc)
        else:
            self._done(batch)

    def _fail(self, batch: list[_Op], exc: BaseException) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        err = exc if isinstance(exc, StoreError) else StoreError(f"database error: {exc}")
        if err is not exc:
            err.__cause__ = exc
        for op in batch:
            op.error = err
        self._done(batch)

    def _run_batch(self, batch: list[_Op]) -> bool:
        """Run ``batch`` in one transaction, leaving it open; return whether it wrote.

        A function that raises rolls the transaction back; it keeps its error and the
        others run again (nothing was delivered, so re-running is safe).
        """
        conn = self._conn
        for op in batch:  # a previous, abandoned pass may have left these set
            op.error = None
            op.result = None
        pending = batch
        while True:
            readonly = all(op.readonly for op in pending)
            conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
            failed = False
            try:
                for op in pending:
                    try:
                        op.result = op.fn(self._tx)
                    except Exception as exc:  # noqa: BLE001 - delivered to the caller
                        op.error = exc
                        failed = True
                        break
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if not failed:
                if readonly:
                    conn.execute("COMMIT")  # a read transaction: nothing to sync
                    return False
                return True
            conn.execute("ROLLBACK")
            pending = [op for op in pending if op.error is None]
            for op in pending:
                op.result = None
            if not pending:
                return False

    def _commit(self) -> None:
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._uncheckpointed += 1
        now = time.monotonic()
        if now - self._window_start > CHECKPOINT_SECONDS:
            self._window_start, self._window = now, 0
        self._window += 1
        self._on_commit()

    def _run_contended(self, batch: list[_Op]) -> None:
        """In the helper thread: wait for another process's write lock, then run."""
        deadline = time.monotonic() + LOCK_WAIT
        delay = 0.001
        while True:
            try:
                needs_commit = self._run_batch(batch)
                break
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
                for op in batch:
                    op.error = None
                    op.result = None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        if needs_commit:
            self._commit()

    async def close(self) -> None:
        """Finish queued work, then close the connection."""
        while not self._idle.is_set():
            await self._idle.wait()
        self._pool.shutdown(wait=True)
        self._conn.close()
