"""A deterministic asyncio event loop for workflow code.

Workflow code runs on this loop, never on the worker's real one. Callbacks run in the
order they were scheduled; time is the workflow's recorded time; any ``call_later`` —
and so ``asyncio.sleep`` and ``asyncio.wait_for`` — becomes a durable timer. The loop
never blocks: an activation runs ready callbacks until none are left, then returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .instance import WorkflowInstance

_T = TypeVar("_T")
log = logging.getLogger("mainspring.workflow")


class _DurableTimerHandle(asyncio.TimerHandle):
    """A timer handle whose timer lives in the database."""

    seq: int = 0


class WorkflowEventLoop(asyncio.AbstractEventLoop):
    """The event loop a workflow's coroutines run on."""

    def __init__(self, instance: WorkflowInstance) -> None:
        self._instance = instance
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._closed = False

    # ---- running
    def run_ready(self) -> bool:
        """Run callbacks until none are ready; return whether any ran."""
        ran = False
        ready = self._ready
        while ready:
            handle = ready.popleft()
            if not handle._cancelled:
                handle._run()
                ran = True
        return ran

    # ---- scheduling
    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        raise RuntimeError("workflow code cannot use threads; use activities for I/O")

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if delay <= 0:
            handle = _DurableTimerHandle(self.time(), callback, args, self, context)
            self._ready.append(handle)
            return handle
        handle = _DurableTimerHandle(self.time() + delay, callback, args, self, context)
        handle.seq = self._instance.start_timer(delay, handle)
        return handle

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_later(when - self.time(), callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        if isinstance(handle, _DurableTimerHandle) and handle.seq:
            self._instance.cancel_timer(handle.seq)

    def time(self) -> float:
        return self._instance.now

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    # ---- state
    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if self._instance.replaying or self._instance.discarded:
            return
        if "destroyed but it is pending" in str(context.get("message", "")):
            return  # a dropped instance's waiting coroutines: expected, not an error
        exc = context.get("exception")
        log.error(
            "workflow %s: %s",
            self._instance.info.workflow_id,
            context.get("message", "unhandled error"),
            exc_info=exc if isinstance(exc, BaseException) else None,
        )

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def get_exception_handler(self) -> None:
        return None

    def get_task_factory(self) -> None:
        return None

    def _io_forbidden(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("workflow code cannot do I/O or run executors; move it into an activity")

    run_in_executor = _io_forbidden  # type: ignore[assignment]
    getaddrinfo = _io_forbidden
    create_connection = _io_forbidden
    subprocess_exec = _io_forbidden
    subprocess_shell = _io_forbidden
