"""History events: the append-only record of a workflow run."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class EventType(enum.StrEnum):
    """The kinds of history event.

    Events written by a workflow task for the commands the code issued are *command
    events*; on replay the code's commands are matched against them in order.
    """

    WORKFLOW_EXECUTION_STARTED = "WorkflowExecutionStarted"
    WORKFLOW_TASK_COMPLETED = "WorkflowTaskCompleted"
    WORKFLOW_TASK_FAILED = "WorkflowTaskFailed"
    ACTIVITY_TASK_SCHEDULED = "ActivityTaskScheduled"
    ACTIVITY_TASK_COMPLETED = "ActivityTaskCompleted"
    ACTIVITY_TASK_FAILED = "ActivityTaskFailed"
    ACTIVITY_TASK_CANCEL_REQUESTED = "ActivityTaskCancelRequested"
    TIMER_STARTED = "TimerStarted"
    TIMER_FIRED = "TimerFired"
    TIMER_CANCELED = "TimerCanceled"
    WORKFLOW_EXECUTION_SIGNALED = "WorkflowExecutionSignaled"
    WORKFLOW_EXECUTION_CANCEL_REQUESTED = "WorkflowExecutionCancelRequested"
    MARKER_RECORDED = "MarkerRecorded"
    WORKFLOW_EXECUTION_COMPLETED = "WorkflowExecutionCompleted"
    WORKFLOW_EXECUTION_FAILED = "WorkflowExecutionFailed"
    WORKFLOW_EXECUTION_CANCELED = "WorkflowExecutionCanceled"
    WORKFLOW_EXECUTION_TERMINATED = "WorkflowExecutionTerminated"


COMMAND_EVENTS = frozenset(
    {
        EventType.ACTIVITY_TASK_SCHEDULED,
        EventType.ACTIVITY_TASK_CANCEL_REQUESTED,
        EventType.TIMER_STARTED,
        EventType.TIMER_CANCELED,
        EventType.MARKER_RECORDED,
        EventType.WORKFLOW_EXECUTION_COMPLETED,
        EventType.WORKFLOW_EXECUTION_FAILED,
        EventType.WORKFLOW_EXECUTION_CANCELED,
    }
)

CLOSE_EVENTS = frozenset(
    {
        EventType.WORKFLOW_EXECUTION_COMPLETED,
        EventType.WORKFLOW_EXECUTION_FAILED,
        EventType.WORKFLOW_EXECUTION_CANCELED,
        EventType.WORKFLOW_EXECUTION_TERMINATED,
    }
)


@dataclass(frozen=True, kw_only=True)
class Event:
    """One history event.

    Attributes:
        event_id: Position in the run's history, from 1, without gaps.
        event_type: What happened.
        time: When it was recorded (UTC, seconds since the epoch).
        attributes: The event's data; payloads are JSON text.
    """

    event_id: int
    event_type: EventType
    time: float
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def timestamp(self) -> datetime:
        """``time`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time, UTC)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (the export format of ``mainspring workflow history``)."""
        return {
            "event_id": self.event_id,
            "event_type": self.event_type.value,
            "time": self.time,
            "timestamp": self.timestamp.isoformat(),
            "attributes": self.attributes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output."""
        return cls(
            event_id=int(data["event_id"]),
            event_type=EventType(data["event_type"]),
            time=float(data["time"]),
            attributes=dict(data.get("attributes") or {}),
        )

    @classmethod
    def from_row(cls, event_id: int, event_type: str, time: float, data: str) -> Event:
        """Rebuild an event from its stored columns."""
        return cls(
            event_id=event_id,
            event_type=EventType(event_type),
            time=time,
            attributes=json.loads(data),
        )


def histories_to_json(workflow_id: str, run_id: str, events: list[Event]) -> dict[str, Any]:
    """The export document of one run's history."""
    return {
        "format": "mainspring.history/1",
        "workflow_id": workflow_id,
        "run_id": run_id,
        "events": [e.to_dict() for e in events],
    }


def events_from_json(doc: dict[str, Any] | list[Any]) -> list[Event]:
    """Read events from an export document (or a bare list of events)."""
    items = doc["events"] if isinstance(doc, dict) else doc
    return [Event.from_dict(e) for e in items]
