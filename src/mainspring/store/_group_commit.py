"""Group commit: one database connection in its own thread, committing in batches."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import StoreError

T = TypeVar("T")


class _Op:
    __slots__ = (
        "error",
        "fn",
        "fut",
        "key",
        "lazy",
        "loop",
        "orphaned",
        "readonly",
        "reads",
        "result",
    )

    def __init__(
        self,
        fn: Callable[[Any], Any],
        fut: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        readonly: bool,
        key: str | None = None,
        lazy: bool = False,
        reads: list[tuple[str, dict[str, Any]]] | None = None,
        orphaned: Callable[[], None] | None = None,
    ) -> None:
        self.fn = fn
        self.fut = fut
        self.loop = loop
        self.readonly = readonly
        self.key = key
        self.lazy = lazy
        self.reads = reads
        self.orphaned = orphaned
        self.result: Any = None
        self.error: BaseException | None = None


def _deliver(ops: list[_Op]) -> None:
    """Hand each op its outcome (on its loop). One whose caller stopped waiting (it was
    cancelled) may have written all the same: its ``orphaned`` hook runs instead."""
    for op in ops:
        if op.fut.done():
            if op.orphaned is not None and not op.readonly:
                op.orphaned()
            continue
        if op.error is not None:
            op.fut.set_exception(op.error)
        else:
            op.fut.set_result(op.result)


async def outcome(fut: asyncio.Future[T], orphaned: Callable[[], None] | None) -> T:
    """Await an op's future. If the caller is cancelled after the op's outcome came in
    but before it resumed, asyncio drops the outcome: ``orphaned`` runs then (the
    other case, cancelled before, is :func:`_deliver`'s)."""
    try:
        return await fut
    except asyncio.CancelledError:
        if orphaned is not None and fut.done() and not fut.cancelled():
            orphaned()
        raise


class GroupCommitThread:
    """One database connection in its own thread, committing queued work in batches.

    Every queued function runs in its own savepoint, so one failing function rolls back
    alone; the batch then commits once. Results are delivered after the commit, so a
    caller never sees an effect that is not yet durable.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], Any],
        execute: Callable[[Any, list[_Op]], None],
        max_batch: int = 256,
    ) -> None:
        self._connect = connect
        self._execute = execute
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self.busy_since: float | None = None  # when the batch in hand started (monotonic)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # noqa: BLE001 - reported to the opener
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                op = self._queue.get()
                if op is None:
                    break
                batch = [op]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self.busy_since = time.monotonic()
                try:
                    self._execute(conn, batch)
                except BaseException as exc:  # noqa: BLE001 - every op learns of it
                    err = (
                        exc if isinstance(exc, StoreError) else StoreError(f"database error: {exc}")
                    )
                    if err is not exc:
                        err.__cause__ = exc
                    for o in batch:
                        o.error = err
                self.busy_since = None
                by_loop: dict[asyncio.AbstractEventLoop, list[_Op]] = {}
                for o in batch:
                    by_loop.setdefault(o.loop, []).append(o)
                for loop, ops in by_loop.items():
                    try:
                        loop.call_soon_threadsafe(_deliver, ops)
                    except RuntimeError:
                        pass  # the caller's loop is closed
                if stop:
                    break
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass

    def submit(
        self,
        fn: Callable[[Any], T],
        readonly: bool,
        key: str | None = None,
        lazy: bool = False,
        reads: list[tuple[str, dict[str, Any]]] | None = None,
        orphaned: Callable[[], None] | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``fn``; the future resolves after the batch holding it commits.

        ``orphaned`` runs (on the caller's loop) instead if the caller stopped waiting
        before then: its write may have committed without anyone being told.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Op(fn, fut, loop, readonly, key, lazy, reads, orphaned))
        return fut

    def stop(self) -> None:
        """Finish queued work and close the connection."""
        self._queue.put(None)
        self._thread.join()
