"""Records the store returns and takes."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..history import Event
from ..runtime.commands import Command


class WorkflowStatus(enum.StrEnum):
    """A run's lifecycle state.

    RUNNING: not closed yet (it may be waiting, or blocked by a failing workflow task).
    COMPLETED, FAILED, CANCELED, TERMINATED: closed, with a result or a failure.
    """

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TERMINATED = "TERMINATED"


class Wakeup(NamedTuple):
    """When something of a task queue next falls due (see :meth:`Store.maintain`)."""

    at: float
    #: whose work it is: the pollers of one kind (``WORKFLOWS``, ``ACTIVITIES``), or
    #: ``None`` for the maintenance pass itself (a timer, a lease), which wakes them all
    kind: str | None


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A stored workflow run."""

    run_id: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    status: WorkflowStatus
    input: str
    result: str | None
    failure: dict[str, Any] | None
    created_at: float
    closed_at: float | None
    history_length: int
    wft_ready_at: float | None
    wft_attempt: int
    wft_failure: dict[str, Any] | None
    cancel_requested: bool
    wft_fence: int = 0
    wft_lease_owner: str | None = None
    wft_lease_until: float | None = None
    #: The worker that last decided the run and keeps it in memory (sticky workflow
    #: tasks); other workers leave the run's next task to it for a while.
    wft_sticky: str | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> RunRecord:
        """Build from a ``run_by_id``-shaped row."""
        return cls(
            run_id=row[0],
            workflow_id=row[1],
            workflow_type=row[2],
            task_queue=row[3],
            status=WorkflowStatus(row[4]),
            input=row[5],
            result=row[6],
            failure=json.loads(row[7]) if row[7] else None,
            created_at=row[8],
            closed_at=row[9],
            history_length=row[10] - 1,
            wft_ready_at=row[11],
            wft_lease_owner=row[12],
            wft_lease_until=row[13],
            wft_fence=row[14],
            wft_attempt=row[15],
            wft_failure=json.loads(row[16]) if row[16] else None,
            cancel_requested=bool(row[17]),
            wft_sticky=row[18],
        )


@dataclass(frozen=True, kw_only=True)
class WorkflowTask:
    """A claimed workflow task: the run and the events its worker has not seen."""

    run_id: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    fence: int
    attempt: int
    start_time: float
    history_length: int
    events: list[Event]
    events_after: int


@dataclass(frozen=True, kw_only=True)
class ActivityTask:
    """A claimed activity attempt. ``fence`` must accompany its completion."""

    run_id: str
    seq: int
    fence: int
    workflow_id: str
    workflow_type: str
    activity_type: str
    task_queue: str
    input: str
    options: dict[str, Any]
    attempt: int
    scheduled_at: float
    heartbeat_details: str | None
    attempt_deadline: float | None


@dataclass(frozen=True, kw_only=True)
class PendingActivityRecord:
    """A run's activity that has not finished, as stored (see :meth:`Store.inspect_run`):
    queued (``lease_owner`` None) or leased to a worker."""

    seq: int
    activity_type: str
    task_queue: str
    options: dict[str, Any]
    attempt: int
    scheduled_at: float
    ready_at: float
    deadline: float | None
    lease_owner: str | None
    lease_until: float | None
    heartbeat_details: str | None
    last_failure: dict[str, Any] | None
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> PendingActivityRecord:
        """Build from a ``run_activities`` row."""
        return cls(
            seq=int(row[0]),
            activity_type=row[1],
            task_queue=row[2],
            options=json.loads(row[3]),
            attempt=int(row[4]),
            scheduled_at=row[5],
            ready_at=row[6],
            deadline=row[7],
            lease_owner=row[8],
            lease_until=row[9],
            heartbeat_details=row[10],
            last_failure=json.loads(row[11]) if row[11] else None,
            cancel_requested=bool(row[12]),
        )


@dataclass(frozen=True, kw_only=True)
class WorkerRecord:
    """A worker as it registered itself (see :class:`~._worker_ops.WorkerOps`)."""

    instance: str
    identity: str
    task_queue: str
    workflows: list[str]
    activities: list[str]
    started_at: float
    seen_at: float
    stopped_at: float | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> WorkerRecord:
        """Build from a ``list_workers`` row."""
        return cls(
            instance=row[0],
            identity=row[1],
            task_queue=row[2],
            workflows=list(json.loads(row[3])),
            activities=list(json.loads(row[4])),
            started_at=row[5],
            seen_at=row[6],
            stopped_at=row[7],
        )


class RunInspection(NamedTuple):
    """A run, its unfinished activities (the first ``limit`` by ``seq``), how many it
    has in all, and the live workers (see :meth:`Store.inspect_run`)."""

    run: RunRecord
    pending: list[PendingActivityRecord]
    pending_count: int
    live_workers: list[WorkerRecord]


@dataclass(frozen=True, kw_only=True)
class WorkflowTaskCompletion:
    """What a worker hands back for a workflow task."""

    run_id: str
    fence: int
    owner: str
    through: int
    time: float
    commands: list[Command]
    eager_activity_slots: int = 0
    eager_seqs: frozenset[int] = frozenset()


@dataclass(frozen=True, kw_only=True)
class CompletionOutcome:
    """What the store did with a completion.

    ``accepted`` is false when the lease was lost (another worker has the run) or new
    signals arrived that the closing code did not see: the worker must drop its cached
    state. ``history_length`` is the run's length after the write. ``ready_run`` is the
    run (as read before the write) whose decider to wake when the write, without
    recording the decision, may have made its workflow task ready: late signals, or an
    activity result recorded on its own.
    """

    accepted: bool
    history_length: int = 0
    closed: bool = False
    ready_again: bool = False  # events arrived during the task: it is due again now
    eager: list[ActivityTask] = field(default_factory=list)
    ready_run: RunRecord | None = None


class FailedAttempt(NamedTuple):
    """What recording a failed activity attempt made ready at once: the activity's
    retry, when due without a backoff (on ``retry_queue``), or, when the activity failed
    for good, the run's workflow task (``ready_run``, the run as read before the write).
    Neither for a retry after a backoff, a cancelled activity or a closed run."""

    retry_queue: str | None = None
    ready_run: RunRecord | None = None


@dataclass(frozen=True, kw_only=True)
class QueryRequest:
    """A claimed query."""

    query_id: str
    run_id: str
    name: str
    args: str


@dataclass(frozen=True)
class SchemaInfo:
    """What :meth:`Store.inspect_schema` found: the version in the database (0 when
    there is no schema yet), the latest this code knows, and whether the database
    file or PostgreSQL schema exists at all."""

    current: int
    latest: int
    exists: bool
