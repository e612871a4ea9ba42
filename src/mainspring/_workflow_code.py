"""Running workflow code for a worker: inline or in a thread pool, failed as a deadlock
when it holds the thread too long."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .runtime.guard import DeadlockInterrupt, InlineGuard
from .runtime.instance import WorkflowInstance, WorkflowTaskError

T = TypeVar("T")


class DeadlockError(Exception):
    """Workflow code held the thread past the deadlock threshold."""


class WorkflowCode:
    """Runs workflow code, inline or in its own thread pool, under a deadlock watchdog."""

    def __init__(self, deadlock_timeout: float, max_concurrent: int) -> None:
        self.deadlock_timeout = deadlock_timeout
        self._running_code: dict[asyncio.Future[Any], tuple[WorkflowInstance, int, float]] = {}
        self._guard = InlineGuard(deadlock_timeout)
        self._watchdog: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, min(max_concurrent, 32)) + 2,
            thread_name_prefix="mainspring-workflow",
        )

    def close(self) -> None:
        """Stop the watchdogs and the thread pool."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._guard.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def in_thread(self, inst: WorkflowInstance, fn: Callable[[], T]) -> T:
        """Run ``fn`` (workflow code) in a thread; the watchdog fails it if it hangs."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        work = loop.run_in_executor(self._executor, self.guarded, inst, fn)

        def relay(w: asyncio.Future[T]) -> None:
            if fut.done():
                return  # the watchdog already failed it
            if w.cancelled():
                fut.cancel()
            elif w.exception() is not None:
                fut.set_exception(w.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(w.result())

        work.add_done_callback(relay)
        self._running_code[fut] = (inst, inst.activations, loop.time())
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch_deadlocks())
        try:
            return await fut
        finally:
            self._running_code.pop(fut, None)

    def guarded(self, inst: WorkflowInstance, fn: Callable[[], T]) -> T:
        """Run workflow code on this thread so that a Python-level hang is interrupted."""
        running = asyncio.events._get_running_loop()
        try:
            return self._guard.run(fn, lambda: inst.activations)
        except DeadlockInterrupt:
            inst.discard()
            raise DeadlockError(self._deadlock_message(inst)) from None
        except WorkflowTaskError as exc:
            if isinstance(exc.cause, DeadlockInterrupt):  # caught by the asyncio task
                inst.discard()
                raise DeadlockError(self._deadlock_message(inst)) from None
            raise
        finally:
            # an interrupt may land before the activation put the worker's loop back
            asyncio.events._set_running_loop(running)

    def _deadlock_message(self, inst: WorkflowInstance) -> str:
        return (
            f"workflow code of {inst.info.workflow_id!r} did not yield for "
            f"{self.deadlock_timeout:g} s: it blocks the thread (time.sleep, blocking I/O "
            "or a busy loop?). Use workflow.sleep and activities; raise "
            "Worker(deadlock_timeout=…) if a step legitimately takes longer"
        )

    async def _watch_deadlocks(self) -> None:
        """Fail workflow code that made no progress for ``deadlock_timeout``."""
        loop = asyncio.get_running_loop()
        while self._running_code:
            await asyncio.sleep(self.deadlock_timeout / 4)
            now = loop.time()
            for fut, (inst, seen, since) in list(self._running_code.items()):
                if fut.done():
                    continue
                if inst.activations != seen:
                    self._running_code[fut] = (inst, inst.activations, now)
                    continue
                if now - since < self.deadlock_timeout:
                    continue
                inst.discard()
                fut.set_exception(DeadlockError(self._deadlock_message(inst)))
