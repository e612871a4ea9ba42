"""Mainspring: durable execution for AI agents.

Write an agent as a deterministic ``async`` workflow whose side effects are
activities; Mainspring records every step, so the agent survives crashes, retries
failing calls, sleeps and waits for humans, and resumes from its last recorded event.
"""

from __future__ import annotations

from . import activity, workflow
from .client import Client
from .errors import (
    ActivityError,
    ApplicationError,
    CancelledFailure,
    Failure,
    FailureError,
    InvalidNameError,
    MainspringError,
    NondeterminismError,
    NotAMainspringDatabaseError,
    PayloadError,
    PayloadTooLargeError,
    QueryFailedError,
    QueryTimeoutError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    TerminatedFailure,
    TimeoutFailure,
    WorkerError,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowResultTimeoutError,
)
from .handle import PendingActivity, PendingActivityState, WorkflowDescription, WorkflowHandle
from .history import Event, EventType
from .retry import RetryPolicy
from .store import WorkflowStatus
from .testing import Replayer
from .worker import Worker
from .worker_info import WorkerInfo, WorkerState

__version__ = "0.1.0"

__all__ = [
    "ActivityError",
    "ApplicationError",
    "CancelledFailure",
    "Client",
    "Event",
    "EventType",
    "Failure",
    "FailureError",
    "InvalidNameError",
    "MainspringError",
    "NondeterminismError",
    "NotAMainspringDatabaseError",
    "PayloadError",
    "PayloadTooLargeError",
    "PendingActivity",
    "PendingActivityState",
    "QueryFailedError",
    "QueryTimeoutError",
    "Replayer",
    "RetryPolicy",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "TerminatedFailure",
    "TimeoutFailure",
    "Worker",
    "WorkerError",
    "WorkerInfo",
    "WorkerState",
    "WorkflowAlreadyStartedError",
    "WorkflowClosedError",
    "WorkflowDescription",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowResultTimeoutError",
    "WorkflowStatus",
    "__version__",
    "activity",
    "workflow",
]
