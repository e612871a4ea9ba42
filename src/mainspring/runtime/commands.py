"""Commands: what a workflow activation asks the engine to do.

Each command becomes one *command event* in history. On replay the commands the code
issues are matched, in order, against the command events recorded after each
``WorkflowTaskCompleted`` marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..history import Event, EventType


@dataclass(frozen=True, kw_only=True)
class ScheduleActivity:
    """Schedule activity ``seq``."""

    seq: int
    activity_type: str
    task_queue: str
    input: str
    options: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class RequestCancelActivity:
    """Ask activity ``seq`` to stop."""

    seq: int


@dataclass(frozen=True, kw_only=True)
class StartTimer:
    """Start durable timer ``seq`` that fires ``duration`` seconds after ``fire_at - duration``."""

    seq: int
    duration: float
    fire_at: float


@dataclass(frozen=True, kw_only=True)
class CancelTimer:
    """Cancel durable timer ``seq``."""

    seq: int


@dataclass(frozen=True, kw_only=True)
class RecordMarker:
    """Record that the code took the new branch of ``workflow.patched(patch_id)``."""

    patch_id: str


@dataclass(frozen=True, kw_only=True)
class CompleteWorkflow:
    """Close the run with a result (JSON text)."""

    result: str


@dataclass(frozen=True, kw_only=True)
class FailWorkflow:
    """Close the run as failed."""

    failure: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class CancelWorkflow:
    """Close the run as cancelled."""


Command = (
    ScheduleActivity
    | RequestCancelActivity
    | StartTimer
    | CancelTimer
    | RecordMarker
    | CompleteWorkflow
    | FailWorkflow
    | CancelWorkflow
)

CLOSING_COMMANDS = (CompleteWorkflow, FailWorkflow, CancelWorkflow)


def command_event(cmd: Command) -> tuple[EventType, dict[str, Any]]:
    """The event type and attributes recorded for ``cmd``."""
    if isinstance(cmd, ScheduleActivity):
        return EventType.ACTIVITY_TASK_SCHEDULED, {
            "seq": cmd.seq,
            "activity_type": cmd.activity_type,
            "task_queue": cmd.task_queue,
            "input": cmd.input,
            "options": cmd.options,
        }
    if isinstance(cmd, RequestCancelActivity):
        return EventType.ACTIVITY_TASK_CANCEL_REQUESTED, {"seq": cmd.seq}
    if isinstance(cmd, StartTimer):
        return EventType.TIMER_STARTED, {
            "seq": cmd.seq,
            "duration": cmd.duration,
            "fire_at": cmd.fire_at,
        }
    if isinstance(cmd, CancelTimer):
        return EventType.TIMER_CANCELED, {"seq": cmd.seq}
    if isinstance(cmd, RecordMarker):
        return EventType.MARKER_RECORDED, {"patch_id": cmd.patch_id}
    if isinstance(cmd, CompleteWorkflow):
        return EventType.WORKFLOW_EXECUTION_COMPLETED, {"result": cmd.result}
    if isinstance(cmd, FailWorkflow):
        return EventType.WORKFLOW_EXECUTION_FAILED, {"failure": cmd.failure}
    return EventType.WORKFLOW_EXECUTION_CANCELED, {}


def describe_command(cmd: Command) -> str:
    """A short phrase saying what the code does, for nondeterminism messages."""
    if isinstance(cmd, ScheduleActivity):
        return f"schedules activity {cmd.activity_type!r} (sequence {cmd.seq})"
    if isinstance(cmd, RequestCancelActivity):
        return f"cancels activity sequence {cmd.seq}"
    if isinstance(cmd, StartTimer):
        return f"starts timer {cmd.seq} ({cmd.duration:g} s)"
    if isinstance(cmd, CancelTimer):
        return f"cancels timer {cmd.seq}"
    if isinstance(cmd, RecordMarker):
        return f"records patch {cmd.patch_id!r}"
    if isinstance(cmd, CompleteWorkflow):
        return "completes the workflow"
    if isinstance(cmd, FailWorkflow):
        return "fails the workflow"
    return "cancels the workflow"


def describe_event(event: Event) -> str:
    """A short phrase saying what a recorded command event did."""
    a = event.attributes
    t = event.event_type
    if t is EventType.ACTIVITY_TASK_SCHEDULED:
        return f"activity {a.get('activity_type')!r} scheduled (sequence {a.get('seq')})"
    if t is EventType.ACTIVITY_TASK_CANCEL_REQUESTED:
        return f"cancel of activity sequence {a.get('seq')}"
    if t is EventType.TIMER_STARTED:
        return f"timer {a.get('seq')} started ({float(a.get('duration', 0)):g} s)"
    if t is EventType.TIMER_CANCELED:
        return f"timer {a.get('seq')} cancelled"
    if t is EventType.MARKER_RECORDED:
        return f"patch {a.get('patch_id')!r} recorded"
    return t.value


def matches(cmd: Command, event: Event) -> bool:
    """Whether ``cmd`` is what ``event`` recorded."""
    etype, _ = command_event(cmd)
    if etype is not event.event_type:
        return False
    a = event.attributes
    if isinstance(cmd, ScheduleActivity):
        return bool(a.get("seq") == cmd.seq and a.get("activity_type") == cmd.activity_type)
    if isinstance(cmd, RequestCancelActivity | StartTimer | CancelTimer):
        return bool(a.get("seq") == cmd.seq)
    if isinstance(cmd, RecordMarker):
        return bool(a.get("patch_id") == cmd.patch_id)
    return True
