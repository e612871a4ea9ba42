"""What workflow code calls.

Workflow code is ordinary ``async`` Python that must be deterministic: it does no I/O
itself (that is what activities are for), reads time and randomness only through
:func:`now`, :func:`random` and :func:`uuid4`, and is replayed against its recorded
history whenever a worker needs to rebuild it. ``asyncio.gather``, tasks,
``asyncio.Event``/``Lock``/``Queue``, ``asyncio.sleep`` and ``asyncio.wait_for`` all
work and replay identically.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random as _random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._names import check_name
from .converter import type_hints_of
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .runtime.instance import WorkflowInstance
    from .runtime.loop import WorkflowEventLoop

__all__ = [
    "WorkflowDefinition",
    "WorkflowInfo",
    "defn",
    "execute_activity",
    "info",
    "logger",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "signal",
    "sleep",
    "start_activity",
    "uuid4",
    "wait_condition",
]

_C = TypeVar("_C", bound=type)
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class WorkflowInfo:
    """Facts about the running workflow.

    Attributes:
        workflow_id: The id given at start.
        run_id: This run's unique id.
        workflow_type: The workflow's registered name.
        task_queue: The task queue it runs on.
        attempt: The attempt of the current workflow task (1 unless it failed before).
        history_length: Events recorded so far.
        start_time: When the run started (UTC).
    """

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    attempt: int = 1
    history_length: int = 0
    start_time: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))


@dataclass(frozen=True, kw_only=True)
class HandlerDefinition:
    """A signal or query handler of a workflow class."""

    name: str
    fn: Callable[..., Any]
    arg_hints: list[Any]
    is_async: bool

    def check_args(self, args: Sequence[Any]) -> None:
        """Raise ``TypeError`` (saying what the handler takes) unless ``args`` fit it."""
        check_handler_args(self.fn, self.name, args)


def check_handler_args(fn: Callable[..., Any], name: str, args: Sequence[Any]) -> None:
    """Raise ``TypeError`` unless handler ``fn`` takes ``args`` (after ``self``, unless
    ``fn`` is a bound method)."""
    sig = inspect.signature(fn)
    bound = inspect.ismethod(fn)
    try:
        sig.bind(*args) if bound else sig.bind(None, *args)
    except TypeError as exc:
        params = list(sig.parameters.values())[0 if bound else 1 :]
        takes = ", ".join(_describe(p) for p in params) or "no arguments"
        raise TypeError(
            f"handler {name!r} takes ({takes}); {len(args)} argument(s) given: {exc}"
        ) from None


def _describe(p: inspect.Parameter) -> str:
    """``name: type`` of a parameter, with its ``*``/``**`` and default, for messages."""
    ann = p.annotation
    text = str(p.replace(annotation=inspect.Parameter.empty))
    if ann is inspect.Parameter.empty:
        return text
    shown = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    name, eq, default = text.partition("=")
    return f"{name}: {shown}" + (f" = {default}" if eq else "")


@dataclass(frozen=True, kw_only=True)
class WorkflowDefinition:
    """A workflow class as registered with ``@workflow.defn``."""

    name: str
    cls: type
    run_fn: Callable[..., Awaitable[Any]]
    arg_hints: list[Any]
    return_hint: Any
    signals: dict[str, HandlerDefinition]
    queries: dict[str, HandlerDefinition]

    @staticmethod
    def of(cls: Any) -> WorkflowDefinition:
        """The definition of a ``@workflow.defn`` class; raise ``TypeError`` otherwise."""
        defn_ = getattr(cls, "__mainspring_workflow__", None)
        if not isinstance(defn_, WorkflowDefinition) or defn_.cls is not cls:
            raise TypeError(f"{cls!r} is not a workflow class; decorate it with @workflow.defn")
        return defn_


# --------------------------------------------------------------------------- decorators


@overload
def defn(cls: _C, /) -> _C: ...
@overload
def defn(*, name: str | None = None) -> Callable[[_C], _C]: ...
def defn(cls: Any = None, /, *, name: str | None = None) -> Any:
    """Declare a workflow class: one ``@workflow.run`` method, any signals and queries.

    The workflow's name defaults to the class name; ``name=`` sets another (clients that
    do not import the code start it by that name).
    """

    def wrap(c: _C) -> _C:
        run_fn: Callable[..., Awaitable[Any]] | None = None
        signals: dict[str, HandlerDefinition] = {}
        queries: dict[str, HandlerDefinition] = {}
        for attr in dir(c):
            member = getattr(c, attr, None)
            if getattr(member, "__mainspring_run__", False):
                if run_fn is not None and run_fn is not member:
                    raise TypeError(f"workflow {c.__name__} has more than one @workflow.run")
                run_fn = member
            sig_name = getattr(member, "__mainspring_signal__", None)
            if sig_name is not None and callable(member):
                signals[sig_name] = _handler(sig_name, member)
            query_name = getattr(member, "__mainspring_query__", None)
            if query_name is not None and callable(member):
                queries[query_name] = _handler(query_name, member)
        if run_fn is None:
            raise TypeError(f"workflow {c.__name__} needs one async method marked @workflow.run")
        if not inspect.iscoroutinefunction(run_fn):
            raise TypeError(f"{c.__name__}.{run_fn.__name__} must be `async def`")
        arg_hints, return_hint = type_hints_of(run_fn)
        definition = WorkflowDefinition(
            name=check_name(name or c.__name__, "workflow name"),
            cls=c,
            run_fn=run_fn,
            arg_hints=arg_hints,
            return_hint=return_hint,
            signals=signals,
            queries=queries,
        )
        c.__mainspring_workflow__ = definition  # type: ignore[attr-defined]
        run_fn.__mainspring_workflow_name__ = definition.name  # type: ignore[attr-defined]
        return c

    return wrap(cls) if cls is not None else wrap


def _handler(name: str, fn: Callable[..., Any]) -> HandlerDefinition:
    arg_hints, _ = type_hints_of(fn)
    return HandlerDefinition(
        name=name, fn=fn, arg_hints=arg_hints, is_async=inspect.iscoroutinefunction(fn)
    )


def run(fn: _F) -> _F:
    """Mark the workflow's entry point (an ``async`` method)."""
    fn.__mainspring_run__ = True  # type: ignore[attr-defined]
    return fn


@overload
def signal(fn: _F, /) -> _F: ...
@overload
def signal(*, name: str | None = None) -> Callable[[_F], _F]: ...
def signal(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a method that receives a signal (sync or async; its return is ignored)."""

    def wrap(f: _F) -> _F:
        f.__mainspring_signal__ = check_name(name or f.__name__, "signal name")  # type: ignore[attr-defined]
        return f

    return wrap(fn) if fn is not None else wrap


@overload
def query(fn: _F, /) -> _F: ...
@overload
def query(*, name: str | None = None) -> Callable[[_F], _F]: ...
def query(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Mark a method that answers a query: sync, read-only, no awaits."""

    def wrap(f: _F) -> _F:
        if inspect.iscoroutinefunction(f):
            raise TypeError(f"query {f.__name__} must be a plain (non-async) method")
        f.__mainspring_query__ = check_name(name or f.__name__, "query name")  # type: ignore[attr-defined]
        return f

    return wrap(fn) if fn is not None else wrap


# --------------------------------------------------------------------------- in workflow


def _instance() -> WorkflowInstance:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if not isinstance(loop, _loop_class()):
        raise RuntimeError("this function can only be called from workflow code")
    return loop._instance


@functools.cache
def _loop_class() -> type[WorkflowEventLoop]:
    from .runtime.loop import WorkflowEventLoop  # imported late: it imports this module

    return WorkflowEventLoop


def in_workflow() -> bool:
    """Whether the caller is running inside workflow code."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return isinstance(loop, _loop_class())


def info() -> WorkflowInfo:
    """Facts about the current run (id, run id, attempt, task queue, history length)."""
    return _instance().current_info()


def now() -> datetime:
    """The workflow's current time: deterministic, the same on every replay (UTC)."""
    return datetime.fromtimestamp(_instance().now, UTC)


def random() -> _random.Random:
    """A random generator seeded per run: the same sequence on every replay."""
    return _instance().random


def uuid4() -> uuid.UUID:
    """A random UUID that is the same on every replay."""
    return uuid.UUID(int=_instance().random.getrandbits(128), version=4)


def patched(patch_id: str) -> bool:
    """Whether to take the new code path of a change named ``patch_id``.

    New runs (and runs reaching this point for the first time) get ``True`` and record
    it; runs replaying history recorded before the change get ``False``. Keep both
    branches until no run older than the change is left.
    """
    return _instance().patched(patch_id)


async def sleep(duration: timedelta | float) -> None:
    """Sleep durably: the timer lives in the database and survives restarts."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    _instance()
    await asyncio.sleep(seconds)


async def wait_condition(
    predicate: Callable[[], bool], *, timeout: timedelta | float | None = None
) -> bool:
    """Wait until ``predicate()`` is true; return ``False`` if ``timeout`` passes first.

    The predicate is checked after every event the workflow receives (a signal, an
    activity result, a timer), so it must depend only on workflow state.
    """
    inst = _instance()
    if predicate():
        return True
    fut = inst.add_condition(predicate)
    if timeout is None:
        await fut
        return True
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    try:
        await asyncio.wait_for(fut, seconds)
    except TimeoutError:
        return False
    return True


def _compute_options(
    activity: Any,
    task_queue: str | None,
    start_to_close_timeout: timedelta | None,
    schedule_to_close_timeout: timedelta | None,
    heartbeat_timeout: timedelta | None,
    retry_policy: RetryPolicy | None,
) -> tuple[str, dict[str, Any], list[Any], Any]:
    from .activity import ActivityDefinition

    if isinstance(activity, str):
        name, defaults, hints, ret = check_name(activity, "activity name"), None, [], None
    else:
        defaults = ActivityDefinition.of(activity)
        name, hints, ret = defaults.name, defaults.arg_hints, defaults.return_hint
    if defaults is not None:
        start_to_close_timeout = start_to_close_timeout or defaults.start_to_close_timeout
        schedule_to_close_timeout = schedule_to_close_timeout or defaults.schedule_to_close_timeout
        heartbeat_timeout = heartbeat_timeout or defaults.heartbeat_timeout
        retry_policy = retry_policy or defaults.retry_policy
        task_queue = task_queue or defaults.task_queue
    if task_queue is not None:
        check_name(task_queue, "activity task_queue")
    options = {
        "task_queue": task_queue,
        "start_to_close_timeout": _seconds(start_to_close_timeout),
        "schedule_to_close_timeout": _seconds(schedule_to_close_timeout),
        "heartbeat_timeout": _seconds(heartbeat_timeout),
        "retry_policy": (retry_policy or RetryPolicy()).to_dict(),
    }
    return name, options, hints, ret


def _activity_options(
    activity: Any,
    task_queue: str | None,
    start_to_close_timeout: timedelta | None,
    schedule_to_close_timeout: timedelta | None,
    heartbeat_timeout: timedelta | None,
    retry_policy: RetryPolicy | None,
) -> tuple[str, dict[str, Any], list[Any], Any]:
    """Options of one call; those of a defined activity called with no overrides are
    computed once (they are read-only: commands copy before changing them)."""
    if isinstance(activity, str) or any(
        o is not None
        for o in (
            task_queue,
            start_to_close_timeout,
            schedule_to_close_timeout,
            heartbeat_timeout,
            retry_policy,
        )
    ):
        return _compute_options(
            activity,
            task_queue,
            start_to_close_timeout,
            schedule_to_close_timeout,
            heartbeat_timeout,
            retry_policy,
        )
    found: tuple[str, dict[str, Any], list[Any], Any] | None = getattr(
        activity, "__mainspring_default_options__", None
    )
    if found is None:
        found = _compute_options(activity, None, None, None, None, None)
        try:
            activity.__mainspring_default_options__ = found
        except AttributeError:
            pass  # not a plain function: compute it each time
    return found


def _seconds(value: timedelta | None) -> float | None:
    if value is None:
        return None
    if value <= timedelta(0):
        raise ValueError("activity timeouts must be positive")
    return value.total_seconds()


def start_activity(
    activity: Callable[..., Any] | str,
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> asyncio.Future[Any]:
    """Schedule an activity and return a future of its result (see :func:`execute_activity`)."""
    name, options, _hints, ret = _activity_options(
        activity,
        task_queue,
        start_to_close_timeout,
        schedule_to_close_timeout,
        heartbeat_timeout,
        retry_policy,
    )
    return _instance().schedule_activity(name, list(args), options, result_type or ret)


async def execute_activity(
    activity: Callable[..., Any] | str,
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    result_type: Any = None,
) -> Any:
    """Run an activity and return its result.

    Options given here override the activity's ``@activity.defn`` defaults. With no
    timeout at all, ``start_to_close_timeout`` is 10 minutes. After the last attempt
    fails, raises :class:`~mainspring.ActivityError` whose ``__cause__`` is the last
    failure. Cancelling the awaiting task asks the activity to stop.
    """
    return await start_activity(
        activity,
        *args,
        task_queue=task_queue,
        start_to_close_timeout=start_to_close_timeout,
        schedule_to_close_timeout=schedule_to_close_timeout,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=retry_policy,
        result_type=result_type,
    )


class _ReplaySafeLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that stays silent while a workflow replays history."""

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging API
        try:
            if _instance().replaying:
                return False
        except RuntimeError:
            pass
        return self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        try:
            wf = _instance().info
            msg = f"[{wf.workflow_type} {wf.workflow_id}] {msg}"
        except RuntimeError:
            pass
        return msg, kwargs


logger: logging.LoggerAdapter[logging.Logger] = _ReplaySafeLogger(
    logging.getLogger("mainspring.workflow"), {}
)
"""Logger for workflow code; silent during replay so each line is logged once."""
