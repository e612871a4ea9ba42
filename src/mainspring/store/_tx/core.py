"""Runs: starting, reading, signalling, cancelling and closing them; shared helpers.

Each function runs inside one database transaction on a :class:`Tx` and keeps the
promises: events are appended and the work they cause is enqueued in the same
transaction; every claim takes a lease with a fencing token; a completion whose token
is stale changes nothing.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from ..._json import encoder
from ...errors import (
    Failure,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from ...history import Event, EventType
from ..records import (
    PendingActivityRecord,
    RunInspection,
    RunRecord,
    WorkerRecord,
    WorkflowStatus,
)

_rng = random.Random()
_LATE_EVENTS = (
    EventType.WORKFLOW_EXECUTION_SIGNALED,
    EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED,
)


Reads = list[tuple[str, dict[str, Any]]]
"""Named queries and their parameters, as :meth:`Tx.qs` takes them."""


class Tx(Protocol):
    """The handful of primitives a dialect provides inside a transaction."""

    def q(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run named query ``name``; return all rows."""
        ...

    def qs(self, queries: Sequence[tuple[str, dict[str, Any]]]) -> list[list[tuple[Any, ...]]]:
        """Run independent named queries in order; return each one's rows.

        A dialect may send them together (PostgreSQL: one round trip for all).
        """
        ...

    def x(self, name: str, params: dict[str, Any]) -> int:
        """Run named statement ``name``; return the affected row count."""
        ...

    def w(self, name: str, params: dict[str, Any]) -> None:
        """Run named statement ``name`` whose row count is not needed.

        A dialect may defer it (PostgreSQL pipelines it with what follows); an error
        it raises then surfaces at the next read or at commit.
        """
        ...

    def publish(self, *topics: str) -> None:
        """Say whom this transaction's changes concern (see :func:`topic`).

        Other processes wake only those waiters when it commits; with no topics, no
        one. A transaction that writes without calling this wakes every waiter. A
        dialect whose processes learn of commits otherwise may ignore it.
        """
        ...

    def xmany(self, name: str, params: Sequence[dict[str, Any]]) -> None:
        """Run named statement ``name`` once per parameter set (deferrable like :meth:`w`)."""
        ...


def _q1(tx: Tx, name: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    rows = tx.q(name, params)
    return rows[0] if rows else None


_dumps = encoder()


# --------------------------------------------------------------------------- runs


def _run(tx: Tx, run_id: str, *, for_update: bool = True) -> RunRecord | None:
    row = _q1(tx, "run_by_id_for_update" if for_update else "run_by_id", {"run_id": run_id})
    return RunRecord.from_row(row) if row else None


def _find_run(tx: Tx, workflow_id: str, run_id: str | None) -> RunRecord:
    if run_id:
        run = _run(tx, run_id, for_update=False)  # a read: never block a claim
        if run is None or run.workflow_id != workflow_id:
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no run {run_id!r}")
        return run
    row = _q1(tx, "latest_run_by_workflow_id", {"workflow_id": workflow_id})
    if row is None:
        raise WorkflowNotFoundError(
            f"no workflow with id {workflow_id!r}; list them with `mainspring workflow list`"
        )
    return RunRecord.from_row(row)


def _open_run(tx: Tx, workflow_id: str, run_id: str | None, action: str) -> RunRecord:
    """The open run, its row locked (PostgreSQL) before anything is written."""
    if run_id:
        run = _run(tx, run_id)
        if run is None or run.workflow_id != workflow_id:
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no run {run_id!r}")
    else:
        found = _find_run(tx, workflow_id, None)
        run = _run(tx, found.run_id) if found.status is WorkflowStatus.RUNNING else found
        run = run or found
    if run.status is not WorkflowStatus.RUNNING:
        raise WorkflowClosedError(
            f"cannot {action} workflow {workflow_id!r}: it already closed as {run.status.value}"
        )
    return run


def _append(
    tx: Tx, run_id: str, next_id: int, now: float, events: list[tuple[EventType, dict[str, Any]]]
) -> tuple[int, None]:
    """Append events from ``next_id``; return the next free id."""
    rows = []
    for etype, attrs in events:
        rows.append(
            {
                "run_id": run_id,
                "event_id": next_id,
                "event_type": etype.value,
                "time": now,
                "data": _dumps(attrs),
            }
        )
        next_id += 1
    tx.xmany("insert_event", rows)
    return next_id, None


def _progress(
    tx: Tx,
    run: RunRecord,
    *,
    next_event_id: int,
    wft_ready_at: float | None,
    owner: str | None = None,
    until: float | None = None,
    wft_attempt: int | None = None,
    wft_failure: dict[str, Any] | None = None,
    cancel_requested: bool | None = None,
    sticky: str | None = None,
) -> None:
    """Update the run's progress columns; ``sticky`` names a new sticky worker (``None``
    keeps the one there is)."""
    tx.w(
        "set_run_progress",
        {
            "run_id": run.run_id,
            "next_event_id": next_event_id,
            "wft_ready_at": wft_ready_at,
            "owner": owner,
            "until": until,
            "wft_attempt": run.wft_attempt if wft_attempt is None else wft_attempt,
            "wft_failure": _dumps(wft_failure) if wft_failure else None,
            "cancel_requested": int(
                run.cancel_requested if cancel_requested is None else cancel_requested
            ),
            "sticky": sticky,
        },
    )


def _append_incoming(
    tx: Tx, run: RunRecord, now: float, etype: EventType, attrs: dict[str, Any], **kw: Any
) -> int:
    """Append an event the workflow must see and make its workflow task ready."""
    next_id, _ = _append(tx, run.run_id, run.history_length + 1, now, [(etype, attrs)])
    ready = run.wft_ready_at if run.wft_ready_at is not None else now
    _progress(
        tx,
        run,
        next_event_id=next_id,
        wft_ready_at=ready,
        owner=run.wft_lease_owner,
        until=run.wft_lease_until,
        wft_failure=run.wft_failure,
        **kw,
    )
    return next_id - 1


def start_workflow(
    tx: Tx,
    *,
    workflow_id: str,
    workflow_type: str,
    task_queue: str,
    input: str,
    now: float,
    use_existing: bool,
    run_id: str | None = None,
    resent: bool = False,
) -> tuple[str, bool]:
    """Start a run; return ``(run_id, started)``. Idempotent by workflow id.

    ``resent``: this start, with this ``run_id``, was sent before and its outcome is
    unknown (the answer was lost); if that start committed, its run is returned, open
    or already closed, as started by this call.

    The started event's attributes are :func:`started_attributes`; a worker that
    decides the first step eagerly builds the same event before this runs.
    """
    if resent and run_id is not None:
        mine = _run(tx, run_id)
        if mine is not None and mine.workflow_id == workflow_id:
            return run_id, True
    existing = _q1(tx, "open_run_by_workflow_id", {"workflow_id": workflow_id})
    if existing is not None:
        run = RunRecord.from_row(existing)
        if use_existing:
            return run.run_id, False
        raise WorkflowAlreadyStartedError(workflow_id, run.run_id)
    run_id = run_id or uuid.uuid4().hex
    tx.w(
        "insert_run",
        {
            "run_id": run_id,
            "workflow_id": workflow_id,
            "workflow_type": workflow_type,
            "task_queue": task_queue,
            "input": input,
            "now": now,
        },
    )
    attrs = started_attributes(run_id, workflow_id, workflow_type, task_queue, input)
    _append(tx, run_id, 1, now, [(EventType.WORKFLOW_EXECUTION_STARTED, attrs)])
    return run_id, True


def started_attributes(
    run_id: str, workflow_id: str, workflow_type: str, task_queue: str, input: str
) -> dict[str, Any]:
    """The attributes of a run's ``WorkflowExecutionStarted`` event."""
    return {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "workflow_type": workflow_type,
        "task_queue": task_queue,
        "input": input,
    }


def describe(tx: Tx, workflow_id: str, run_id: str | None) -> RunRecord:
    """The latest (or given) run of ``workflow_id``."""
    return _find_run(tx, workflow_id, run_id)


def inspect_run(
    tx: Tx, workflow_id: str, run_id: str | None, seen_since: float, limit: int
) -> RunInspection:
    """The latest (or given) run of ``workflow_id``, its first ``limit`` unfinished
    activities and their number, and (if it has any) the workers that serve and were
    seen since ``seen_since``."""
    run = _find_run(tx, workflow_id, run_id)
    rows = tx.q("run_activities", {"run_id": run.run_id, "limit": limit})
    count = len(rows)
    if count >= limit:
        count = int(tx.q("count_run_activities", {"run_id": run.run_id})[0][0])
    live = tx.q("live_workers", {"since": seen_since}) if rows else []
    return RunInspection(
        run,
        [PendingActivityRecord.from_row(r) for r in rows],
        count,
        [WorkerRecord.from_row(r) for r in live],
    )


def list_runs(tx: Tx, status: str | None, workflow_type: str | None, limit: int) -> list[RunRecord]:
    """Runs, newest first, filtered by status and type (a query per filter: each uses
    its own index)."""
    if status == WorkflowStatus.RUNNING.value:
        name = "list_open_runs"
    elif status is not None:
        name = "list_closed_runs"
    else:
        name = "list_runs" if workflow_type is None else "list_runs_of_type"
    rows = tx.q(name, {"status": status, "workflow_type": workflow_type, "limit": limit})
    return [RunRecord.from_row(r) for r in rows]


def history(tx: Tx, workflow_id: str, run_id: str | None) -> tuple[RunRecord, list[Event]]:
    """A run and all its events."""
    run = _find_run(tx, workflow_id, run_id)
    return run, events_after(tx, run.run_id, 0)


def events_after(tx: Tx, run_id: str, after: int) -> list[Event]:
    """Events of ``run_id`` with ids above ``after``."""
    return [Event.from_row(*r) for r in tx.q("events_after", {"run_id": run_id, "after": after})]


def signal(
    tx: Tx, workflow_id: str, run_id: str | None, name: str, input: str, now: float
) -> RunRecord:
    """Record a signal for the open run; return the run (as read before)."""
    run = _open_run(tx, workflow_id, run_id, f"signal {name!r} to")
    _append_incoming(
        tx, run, now, EventType.WORKFLOW_EXECUTION_SIGNALED, {"name": name, "input": input}
    )
    return run


def request_cancel(tx: Tx, workflow_id: str, run_id: str | None, now: float) -> str:
    """Record a cancel request for the open run (once); return its task queue."""
    run = _open_run(tx, workflow_id, run_id, "cancel")
    if not run.cancel_requested:
        _append_incoming(
            tx, run, now, EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED, {}, cancel_requested=True
        )
    return run.task_queue


def terminate(tx: Tx, workflow_id: str, run_id: str | None, reason: str, now: float) -> str:
    """Close the open run at once; its activities learn of it at their next heartbeat."""
    run = _open_run(tx, workflow_id, run_id, "terminate")
    next_id, _ = _append(
        tx,
        run.run_id,
        run.history_length + 1,
        now,
        [(EventType.WORKFLOW_EXECUTION_TERMINATED, {"reason": reason})],
    )
    failure = Failure(type="Terminated", message=reason or "terminated", kind="TerminatedFailure")
    _close(tx, run, WorkflowStatus.TERMINATED, None, failure.to_dict(), next_id, now)
    return run.run_id


def _close(
    tx: Tx,
    run: RunRecord,
    status: WorkflowStatus,
    result: str | None,
    failure: dict[str, Any] | None,
    next_id: int,
    now: float,
) -> None:
    tx.w(
        "close_run",
        {
            "run_id": run.run_id,
            "status": status.value,
            "result": result,
            "failure": _dumps(failure) if failure else None,
            "now": now,
            "next_event_id": next_id,
        },
    )
    tx.w("delete_run_activities", {"run_id": run.run_id})
    tx.w("delete_run_timers", {"run_id": run.run_id})
    tx.w(
        "fail_run_queries",
        {"run_id": run.run_id, "error": f"the workflow closed as {status.value}"},
    )
