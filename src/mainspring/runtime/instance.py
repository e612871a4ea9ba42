"""One workflow run in memory: applies events, runs activations, collects commands.

An *activation* applies a batch of incoming events (activity results, fired timers,
signals, cancel requests) to the workflow, runs its coroutines until they all wait,
and returns the commands they issued. Replay is the same activations fed from history;
their commands are matched against the recorded command events.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from .. import errors
from ..converter import PayloadConverter
from ..errors import (
    ActivityError,
    ApplicationError,
    FailureError,
    NondeterminismError,
    error_to_failure,
    failure_to_error,
)
from ..history import COMMAND_EVENTS, Event, EventType
from ..workflow import WorkflowDefinition, WorkflowInfo
from .commands import (
    CLOSING_COMMANDS,
    CancelTimer,
    CancelWorkflow,
    Command,
    CompleteWorkflow,
    FailWorkflow,
    RecordMarker,
    RequestCancelActivity,
    ScheduleActivity,
    StartTimer,
    describe_command,
    describe_event,
    matches,
)
from .loop import WorkflowEventLoop

DEFAULT_START_TO_CLOSE = 600.0


class WorkflowTaskError(Exception):
    """Workflow code raised something other than a ``FailureError``: fail the task, retry."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class WorkflowInstance:
    """The in-memory state of one workflow run."""

    def __init__(
        self,
        definition: WorkflowDefinition,
        info: WorkflowInfo,
        converter: PayloadConverter,
    ) -> None:
        self.definition = definition
        self.info = info
        self.converter = converter
        self.loop = WorkflowEventLoop(self)  # type: ignore[abstract]
        self.now = info.start_time.timestamp()
        self.random = random.Random(info.run_id)
        self.replaying = False
        self.attempt = 1
        self.history_length = 0
        self.visible_length = 0  # info().history_length: the `through` of the activation
        self.applied_through = 0  # highest incoming event id applied
        self.last_marker_id = 0
        self.closed = False
        self._obj: Any = None
        self._main: asyncio.Task[Any] | None = None
        self._commands: list[Command] = []
        self._activities: dict[int, tuple[asyncio.Future[Any], str, Any]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._activity_seq = 0
        self._timer_seq = 0
        self._patches: dict[str, bool] = {}
        self._recorded: list[Event] = []  # recorded commands of the activation replaying
        self._task_error: BaseException | None = None
        self._cancel_requested = False
        self.activations = 0
        self.discarded = False

    # ------------------------------------------------------------------ activations

    def activate(
        self, incoming: list[Event], time: float, *, replaying: bool, through: int | None = None
    ) -> list[Command]:
        """Apply ``incoming`` events at workflow time ``time``; return the new commands.

        Raises:
            WorkflowTaskError: workflow code raised an error that is not a failure.
        """
        self.now = max(self.now, time)
        self.replaying = replaying
        if through is not None:
            self.visible_length = through  # what info().history_length shows: the marker's
        self.activations += 1
        prev = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self.loop)
        try:
            for event in incoming:
                self._apply(event)
                self.applied_through = max(self.applied_through, event.event_id)
            self._run_until_idle()
        finally:
            asyncio.events._set_running_loop(prev)
        if self._task_error is not None:
            err, self._task_error = self._task_error, None
            self._commands.clear()
            raise WorkflowTaskError(err)
        commands, self._commands = self._commands, []
        return commands

    def replay(self, events: list[Event]) -> list[Event]:
        """Replay recorded ``events``; return the incoming events not yet processed.

        Raises:
            NondeterminismError: the code's commands do not match the history.
            WorkflowTaskError: workflow code raised an error that is not a failure.
        """
        pending: list[Event] = []
        i = 0
        n = len(events)
        while i < n:
            event = events[i]
            i += 1
            etype = event.event_type
            if etype is EventType.WORKFLOW_TASK_COMPLETED:
                through = int(event.attributes["through"])
                batch = [e for e in pending if e.event_id <= through]
                pending = [e for e in pending if e.event_id > through]
                j = i
                while j < n and events[j].event_type in COMMAND_EVENTS:
                    j += 1
                self._recorded = events[i:j]
                self.attempt = 1
                commands = self.activate(
                    batch, float(event.attributes["time"]), replaying=True, through=through
                )
                self._match(commands, events[i:j], event)
                self._recorded = []
                self.last_marker_id = event.event_id
                i = j
            elif etype in COMMAND_EVENTS or etype is EventType.WORKFLOW_TASK_FAILED:
                continue
            elif etype is EventType.WORKFLOW_EXECUTION_TERMINATED:
                self.closed = True
            else:
                pending.append(event)
        self.history_length = events[-1].event_id if events else 0
        return pending

    def _match(self, commands: list[Command], recorded: list[Event], marker: Event) -> None:
        k = 0
        for cmd in commands:
            while (
                k < len(recorded)
                and recorded[k].event_type is EventType.MARKER_RECORDED
                and not matches(cmd, recorded[k])
            ):
                k += 1  # a patch marker the code no longer asks about
            if k >= len(recorded):
                raise NondeterminismError(
                    f"workflow {self.info.workflow_id!r} (run {self.info.run_id}): the code "
                    f"now {describe_command(cmd)} in the workflow task recorded at event "
                    f"{marker.event_id}, but history recorded no such command there"
                )
            if not matches(cmd, recorded[k]):
                ev = recorded[k]
                raise NondeterminismError(
                    f"workflow {self.info.workflow_id!r} (run {self.info.run_id}): history "
                    f"event {ev.event_id} recorded {describe_event(ev)}, but the code now "
                    f"{describe_command(cmd)}"
                )
            k += 1
        rest = [e for e in recorded[k:] if e.event_type is not EventType.MARKER_RECORDED]
        if rest:
            ev = rest[0]
            raise NondeterminismError(
                f"workflow {self.info.workflow_id!r} (run {self.info.run_id}): history event "
                f"{ev.event_id} recorded {describe_event(ev)}, but the code no longer does it"
            )

    def _run_until_idle(self) -> None:
        while True:
            self.loop.run_ready()
            fired = False
            for pred, fut in list(self._conditions):
                if fut.done():
                    self._conditions.remove((pred, fut))
                    continue
                try:
                    ok = pred()
                except BaseException as exc:  # noqa: BLE001 - reported as task failure
                    self._task_error = exc
                    return
                if ok:
                    self._conditions.remove((pred, fut))
                    fut.set_result(None)
                    fired = True
            if not fired and not self.loop._ready:
                break
        self._check_main()

    def _check_main(self) -> None:
        main = self._main
        if main is None or not main.done() or self.closed:
            return
        if any(isinstance(c, CLOSING_COMMANDS) for c in self._commands):
            return
        if main.cancelled():
            self._close(CancelWorkflow())
            return
        exc = main.exception()
        if exc is None:
            try:
                text = self.converter.encode(main.result(), what="workflow result")
            except errors.PayloadError as perr:
                self._close(FailWorkflow(failure=error_to_failure(perr).to_dict()))
                return
            self._close(CompleteWorkflow(result=text))
        elif isinstance(exc, asyncio.CancelledError):
            self._close(CancelWorkflow())
        elif isinstance(exc, FailureError):
            self._close(FailWorkflow(failure=error_to_failure(exc).to_dict()))
        else:
            self._task_error = exc

    def _close(self, cmd: Command) -> None:
        self.closed = True
        self._commands.append(cmd)

    # ------------------------------------------------------------------ events

    def _apply(self, event: Event) -> None:
        t = event.event_type
        a = event.attributes
        if t is EventType.WORKFLOW_EXECUTION_STARTED:
            self._start(a)
        elif t is EventType.ACTIVITY_TASK_COMPLETED:
            entry = self._activities.pop(int(a["seq"]), None)
            if entry is not None and not entry[0].done():
                fut, _, hint = entry
                try:
                    fut.set_result(self.converter.decode(a.get("result"), hint))
                except errors.PayloadError as exc:
                    fut.set_exception(exc)
        elif t is EventType.ACTIVITY_TASK_FAILED:
            entry = self._activities.pop(int(a["seq"]), None)
            if entry is not None and not entry[0].done():
                fut, name, _ = entry
                failure = errors.Failure.from_dict(a["failure"])
                err = ActivityError(
                    f"activity {name!r} failed after {a.get('attempt', 1)} attempt(s)",
                    activity_type=name,
                    activity_id=str(a["seq"]),
                    attempt=int(a.get("attempt", 1)),
                )
                err.__cause__ = failure_to_error(failure)
                fut.set_exception(err)
        elif t is EventType.TIMER_FIRED:
            handle = self._timers.pop(int(a["seq"]), None)
            if handle is not None and not handle.cancelled():
                self.loop._ready.append(handle)
        elif t is EventType.WORKFLOW_EXECUTION_SIGNALED:
            self._signal(str(a["name"]), str(a.get("input") or "[]"))
        elif t is EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED:
            self._cancel_requested = True
            if self._main is not None and not self._main.done():
                self._main.cancel()

    def _start(self, a: dict[str, Any]) -> None:
        d = self.definition
        try:
            args = self.converter.decode_args(str(a["input"]), d.arg_hints)
            self._obj = d.cls()
            coro: Any = d.run_fn(self._obj, *args)
        except BaseException as exc:  # noqa: BLE001 - becomes a task failure or workflow failure
            fut = self.loop.create_future()
            fut.set_exception(exc)
            self._main = fut  # type: ignore[assignment]
            return
        self._main = self.loop.create_task(coro, name=f"workflow:{self.info.workflow_id}")

    def _signal(self, name: str, input_text: str) -> None:
        handler = self.definition.signals.get(name)
        if handler is None or self._obj is None:
            if not self.replaying:
                from ..workflow import logger

                logger.warning("signal %r has no handler; dropped", name)
            return
        try:
            args = self.converter.decode_args(input_text, handler.arg_hints)
            handler.check_args(args)
        except Exception as exc:  # noqa: BLE001 - the same on every replay: dropped each time
            # Recorded, but not deliverable: dropping it (as Temporal does) keeps the run
            # going; failing the task would block the run until its code changed.
            if not self.replaying:
                from ..workflow import logger

                logger.error(
                    "signal %r to workflow %r: its arguments do not fit the handler (%s); "
                    "dropped (it stays in the history)",
                    name,
                    self.info.workflow_id,
                    exc,
                )
            return
        if handler.is_async:
            self.loop.create_task(handler.fn(self._obj, *args), name=f"signal:{name}")
        else:
            try:
                handler.fn(self._obj, *args)
            except FailureError as exc:
                self._close(FailWorkflow(failure=error_to_failure(exc).to_dict()))
            except Exception as exc:  # noqa: BLE001 - fails the task, retried
                self._task_error = exc

    def query(self, name: str, args_text: str) -> Any:
        """Run query ``name`` against the current state; return its (plain) result."""
        handler = self.definition.queries.get(name)
        if handler is None:
            known = ", ".join(sorted(self.definition.queries)) or "none"
            raise errors.QueryFailedError(
                f"workflow {self.definition.name!r} has no query {name!r} (queries: {known})"
            )
        args = self.converter.decode_args(args_text, handler.arg_hints)
        prev = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self.loop)
        self.replaying = True
        try:
            return handler.fn(self._obj, *args)
        finally:
            asyncio.events._set_running_loop(prev)

    # ------------------------------------------------------------------ from workflow code

    def current_info(self) -> WorkflowInfo:
        from dataclasses import replace

        return replace(self.info, attempt=self.attempt, history_length=self.visible_length)

    def schedule_activity(
        self, name: str, args: list[Any], options: dict[str, Any], result_hint: Any
    ) -> asyncio.Future[Any]:
        if self.closed:
            raise RuntimeError("the workflow has already closed")
        text = self.converter.encode_args(args, what=f"arguments of activity {name!r}")
        if options.get("start_to_close_timeout") is None and (
            options.get("schedule_to_close_timeout") is None
        ):
            options = {**options, "start_to_close_timeout": DEFAULT_START_TO_CLOSE}
        if options.get("task_queue") is None:
            options = {**options, "task_queue": self.info.task_queue}
        self._activity_seq += 1
        seq = self._activity_seq
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._activities[seq] = (fut, name, result_hint)
        self._commands.append(
            ScheduleActivity(
                seq=seq,
                activity_type=name,
                task_queue=str(options["task_queue"]),
                input=text,
                options=options,
            )
        )

        def on_done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() and seq in self._activities and not self.closed:
                self._activities.pop(seq, None)
                self._commands.append(RequestCancelActivity(seq=seq))

        fut.add_done_callback(on_done)
        return fut

    def start_timer(self, delay: float, handle: asyncio.TimerHandle) -> int:
        self._timer_seq += 1
        seq = self._timer_seq
        self._timers[seq] = handle
        self._commands.append(StartTimer(seq=seq, duration=delay, fire_at=self.now + delay))
        return seq

    def cancel_timer(self, seq: int) -> None:
        if self._timers.pop(seq, None) is None or self.closed:
            return
        for i, cmd in enumerate(self._commands):
            if isinstance(cmd, StartTimer) and cmd.seq == seq:
                del self._commands[i]  # started and cancelled in one activation
                return
        self._commands.append(CancelTimer(seq=seq))

    def add_condition(self, predicate: Callable[[], bool]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.loop.create_future()
        self._conditions.append((predicate, fut))
        return fut

    def patched(self, patch_id: str) -> bool:
        if patch_id in self._patches:
            return self._patches[patch_id]
        if self.replaying:
            value = any(
                e.event_type is EventType.MARKER_RECORDED
                and e.attributes.get("patch_id") == patch_id
                for e in self._recorded
            )
        else:
            value = True
        self._patches[patch_id] = value
        if value:
            self._commands.append(RecordMarker(patch_id=patch_id))
        return value

    def discard(self) -> None:
        """Forget this instance (evicted from a cache): silence its pending tasks."""
        self.discarded = True
        self.replaying = True

    @property
    def cancel_requested(self) -> bool:
        """Whether cancellation of this run was requested."""
        return self._cancel_requested


def application_error_failure(message: str, type_: str) -> dict[str, Any]:
    """A recorded failure for an engine-detected problem (no stack)."""
    return error_to_failure(ApplicationError(message, type=type_)).to_dict()
