"""The engine's transactions, written once for every dialect.

Each function runs inside one database transaction on a :class:`Tx` and keeps the
promises: events are appended and the work they cause is enqueued in the same
transaction; every claim takes a lease with a fencing token; a completion whose token
is stale changes nothing.
"""

from __future__ import annotations

from .activities import (
    activity_cancel_requested,
    claim_activities,
    complete_activity,
    complete_activity_and_decide,
    expire,
    fail_activity,
    heartbeat_activity,
    release_activity,
    release_eager,
    step_reads,
)
from .core import (
    Reads,
    Tx,
    describe,
    events_after,
    history,
    inspect_run,
    list_runs,
    request_cancel,
    signal,
    start_workflow,
    started_attributes,
    terminate,
)
from .decisions import (
    claim_workflow_tasks,
    complete_workflow_task,
    fail_workflow_task,
    release_sticky,
    release_workflow_task,
    reset_backoff,
    start_and_decide,
)
from .retention import count_prunable, prune_closed_runs
from .timers import (
    answer_query,
    claim_queries,
    drop_query,
    fire_timers,
    next_wakeup,
    query_result,
    submit_query,
)

__all__ = [
    "Reads",
    "Tx",
    "activity_cancel_requested",
    "answer_query",
    "claim_activities",
    "claim_queries",
    "claim_workflow_tasks",
    "complete_activity",
    "complete_activity_and_decide",
    "complete_workflow_task",
    "count_prunable",
    "describe",
    "drop_query",
    "events_after",
    "expire",
    "fail_activity",
    "fail_workflow_task",
    "fire_timers",
    "heartbeat_activity",
    "history",
    "inspect_run",
    "list_runs",
    "next_wakeup",
    "prune_closed_runs",
    "query_result",
    "release_activity",
    "release_eager",
    "release_sticky",
    "release_workflow_task",
    "request_cancel",
    "reset_backoff",
    "signal",
    "start_and_decide",
    "start_workflow",
    "started_attributes",
    "step_reads",
    "submit_query",
    "terminate",
]
