"""Running workflow code on the worker's own thread, with a deadlock watchdog.

Handing each activation to a thread pool costs two thread wake-ups per step, more
than the workflow code itself. A run the worker already holds in its cache therefore
runs its next activation inline, guarded: a watchdog thread notices an activation
that has made no progress for the deadlock threshold and raises
:class:`DeadlockInterrupt` inside it (``PyThreadState_SetAsyncExc``). That stops
Python-level hangs (busy loops) at once and blocking calls as soon as they return.
Long replays, and retries of a workflow task that failed (perhaps by hanging), still
go to a thread pool, so a run that hangs in C code cannot stall the worker twice.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlockInterrupt(BaseException):
    """Raised inside workflow code that held the thread too long (never caught by it)."""


def _interrupt(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class InlineGuard:
    """Runs functions on the calling thread, interrupting any that run too long.

    Any number of threads may run guarded functions at once.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._active: dict[int, tuple[float, Callable[[], int], int]] = {}
        self._fired: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], T], progress: Callable[[], int]) -> T:
        """Run ``fn``; raise :class:`DeadlockInterrupt` if it stalls past the timeout.

        ``progress`` returns a counter that moves while the code makes progress (one
        activation after another during a long replay is not a deadlock).
        """
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch, name="mainspring-deadlock-watchdog", daemon=True
                    )
                    self._thread.start()
        tid = threading.get_ident()
        with self._lock:
            if tid in self._fired:  # a previous interrupt escaped its run: start clean
                self._fired.discard(tid)
                _interrupt(tid, None)
            self._active[tid] = (time.monotonic(), progress, progress())
        fired = False
        try:
            result = fn()
        finally:
            with self._lock:
                self._active.pop(tid, None)
                if tid in self._fired:  # cancel an interrupt that has not been raised yet
                    self._fired.discard(tid)
                    _interrupt(tid, None)
                    fired = True
        if fired:
            # the interrupt was raised but swallowed on the way (an asyncio Task or
            # Handle stores any BaseException): the activation was cut short somewhere
            raise DeadlockInterrupt
        return result

    def _watch(self) -> None:
        while not self._stop.wait(self.timeout / 4):
            with self._lock:
                now = time.monotonic()
                for tid, (started, progress, seen) in list(self._active.items()):
                    if tid in self._fired:
                        continue
                    current = progress()
                    if current != seen:
                        self._active[tid] = (now, progress, current)
                    elif now - started > self.timeout:
                        self._fired.add(tid)
                        _interrupt(tid, DeadlockInterrupt)

    def close(self) -> None:
        """Stop the watchdog thread."""
        self._stop.set()
