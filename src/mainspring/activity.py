"""What activity code calls, and ``@activity.defn``.

An activity is any function — ``async`` or plain (run in a thread pool) — that does the
real work: an LLM call, a web search, a database write. It runs at least once; its
result is recorded exactly once. Make its side effects idempotent with
:attr:`ActivityInfo.idempotency_key`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any, TypeVar, overload

from ._names import check_name
from .converter import type_hints_of
from .retry import RetryPolicy

__all__ = [
    "ActivityDefinition",
    "ActivityInfo",
    "defn",
    "heartbeat",
    "heartbeat_details",
    "info",
    "is_cancelled",
]

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class ActivityDefinition:
    """An activity as registered with ``@activity.defn``: its name and default options."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    arg_hints: list[Any]
    return_hint: Any
    task_queue: str | None = None
    start_to_close_timeout: timedelta | None = None
    schedule_to_close_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    retry_policy: RetryPolicy | None = None

    @staticmethod
    def of(fn: Any) -> ActivityDefinition:
        """The definition of an ``@activity.defn`` function; raise ``TypeError`` otherwise."""
        d = getattr(fn, "__mainspring_activity__", None)
        if not isinstance(d, ActivityDefinition):
            raise TypeError(f"{fn!r} is not an activity; decorate it with @activity.defn")
        return d


@dataclass(frozen=True, kw_only=True)
class ActivityInfo:
    """Facts about the running activity attempt.

    Attributes:
        activity_id: The activity's id within its workflow run (its sequence number).
        activity_type: The activity's registered name.
        attempt: This attempt's number, from 1.
        workflow_id: The calling workflow's id.
        run_id: The calling workflow's run id.
        workflow_type: The calling workflow's type.
        task_queue: The task queue the activity was taken from.
        idempotency_key: Stable across attempts and workers: ``workflow_id/run_id/seq``.
        heartbeat_details: Details of the previous attempt's last heartbeat.
        scheduled_time: When the activity was scheduled (seconds since the epoch).
    """

    activity_id: str
    activity_type: str
    attempt: int
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    idempotency_key: str
    heartbeat_details: list[Any]
    scheduled_time: float


class _Context:
    """Per-attempt context, set by the worker around an activity's execution."""

    def __init__(self, info: ActivityInfo, heartbeat: Callable[[list[Any]], None]) -> None:
        self.info = info
        self._heartbeat = heartbeat
        self.cancelled = False

    def heartbeat(self, details: list[Any]) -> None:
        self._heartbeat(details)


_current: contextvars.ContextVar[_Context] = contextvars.ContextVar("mainspring_activity")


def _context() -> _Context:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("this function can only be called from an activity") from None


def info() -> ActivityInfo:
    """Facts about the current attempt (attempt number, ids, idempotency key)."""
    return _context().info


def heartbeat(*details: Any) -> None:
    """Report progress; ``details`` are handed to the next attempt if this one fails.

    Heartbeats keep a ``heartbeat_timeout`` from expiring and are how a running
    activity learns it was cancelled: an async activity is then cancelled at its next
    ``await``; a sync one should check :func:`is_cancelled`.
    """
    _context().heartbeat(list(details))


def heartbeat_details() -> list[Any]:
    """The details of the previous attempt's last heartbeat (empty on the first)."""
    return _context().info.heartbeat_details


def is_cancelled() -> bool:
    """Whether cancellation of this activity has been requested."""
    return _context().cancelled


@overload
def defn(fn: _F, /) -> _F: ...
@overload
def defn(
    *,
    name: str | None = None,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
) -> Callable[[_F], _F]: ...
def defn(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
) -> Any:
    """Declare an activity, with default options used wherever it is scheduled.

    Called from workflow code, the decorated function schedules the activity and returns
    an awaitable of its result (``await summarize(texts)``); called anywhere else it runs
    the function directly, so it can be tested like plain code.
    """

    def wrap(f: _F) -> _F:
        arg_hints, return_hint = type_hints_of(f)
        definition = ActivityDefinition(
            name=check_name(name or f.__name__, "activity name"),
            fn=f,
            is_async=inspect.iscoroutinefunction(f),
            arg_hints=arg_hints,
            return_hint=return_hint,
            task_queue=task_queue,
            start_to_close_timeout=start_to_close_timeout,
            schedule_to_close_timeout=schedule_to_close_timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=retry_policy,
        )

        @functools.wraps(f)
        def call(*args: Any, **kwargs: Any) -> Any:
            workflow = _workflow_module()
            if workflow.in_workflow():
                if kwargs:
                    raise TypeError("activities take positional arguments only")
                return workflow.start_activity(call, *args)
            return f(*args, **kwargs)

        call.__mainspring_activity__ = definition  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap


@functools.cache
def _workflow_module() -> ModuleType:
    from . import workflow  # imported late: it imports this module

    return workflow
