"""The engine's transactions, written once for every dialect.

Each function runs inside one database transaction on a :class:`Tx` and keeps the
promises: events are appended and the work they cause is enqueued in the same
transaction; every claim takes a lease with a fencing token; a completion whose token
is stale changes nothing.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import (
    Failure,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from ..history import Event, EventType
from ..retry import RetryPolicy
from ..runtime.commands import (
    CancelTimer,
    CancelWorkflow,
    CompleteWorkflow,
    FailWorkflow,
    RecordMarker,
    RequestCancelActivity,
    ScheduleActivity,
    StartTimer,
    command_event,
)
from .records import (
    ActivityTask,
    CompletionOutcome,
    QueryRequest,
    RunRecord,
    WorkflowStatus,
    WorkflowTask,
    WorkflowTaskCompletion,
)

_rng = random.Random()
_LATE_EVENTS = (
    EventType.WORKFLOW_EXECUTION_SIGNALED,
    EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED,
)


class Tx(Protocol):
    """The handful of primitives a dialect provides inside a transaction."""

    def q(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run named query ``name``; return all rows."""
        ...

    def x(self, name: str, params: dict[str, Any]) -> int:
        """Run named statement ``name``; return the affected row count."""
        ...

    def xmany(self, name: str, params: Sequence[dict[str, Any]]) -> None:
        """Run named statement ``name`` once per parameter set."""
        ...


def _q1(tx: Tx, name: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    rows = tx.q(name, params)
    return rows[0] if rows else None


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


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
    run = _find_run(tx, workflow_id, run_id)
    if run.status is not WorkflowStatus.RUNNING:
        raise WorkflowClosedError(
            f"cannot {action} workflow {workflow_id!r}: it already closed as {run.status.value}"
        )
    fresh = _run(tx, run.run_id)  # lock the row (PostgreSQL) before writing
    if fresh is None or fresh.status is not WorkflowStatus.RUNNING:
        raise WorkflowClosedError(
            f"cannot {action} workflow {workflow_id!r}: it already closed as "
            f"{(fresh or run).status.value}"
        )
    return fresh


def _append(
    tx: Tx, run_id: str, next_id: int, now: float, events: list[tuple[EventType, dict[str, Any]]]
) -> tuple[int, list[Event]]:
    """Append events from ``next_id``; return the next free id and the events."""
    out = []
    rows = []
    for etype, attrs in events:
        out.append(Event(event_id=next_id, event_type=etype, time=now, attributes=attrs))
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
    return next_id, out


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
) -> None:
    tx.x(
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
) -> tuple[str, bool]:
    """Start a run; return ``(run_id, started)``. Idempotent by workflow id."""
    existing = _q1(tx, "open_run_by_workflow_id", {"workflow_id": workflow_id})
    if existing is not None:
        run = RunRecord.from_row(existing)
        if use_existing:
            return run.run_id, False
        raise WorkflowAlreadyStartedError(workflow_id, run.run_id)
    run_id = uuid.uuid4().hex
    tx.x(
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
    attrs = {
        "workflow_id": workflow_id,
        "workflow_type": workflow_type,
        "task_queue": task_queue,
        "input": input,
    }
    _append(tx, run_id, 1, now, [(EventType.WORKFLOW_EXECUTION_STARTED, attrs)])
    return run_id, True


def describe(tx: Tx, workflow_id: str, run_id: str | None) -> RunRecord:
    """The latest (or given) run of ``workflow_id``."""
    return _find_run(tx, workflow_id, run_id)


def list_runs(tx: Tx, status: str | None, workflow_type: str | None, limit: int) -> list[RunRecord]:
    """Runs, newest first, filtered by status and type."""
    rows = tx.q("list_runs", {"status": status, "workflow_type": workflow_type, "limit": limit})
    return [RunRecord.from_row(r) for r in rows]


def history(tx: Tx, workflow_id: str, run_id: str | None) -> tuple[RunRecord, list[Event]]:
    """A run and all its events."""
    run = _find_run(tx, workflow_id, run_id)
    return run, events_after(tx, run.run_id, 0)


def events_after(tx: Tx, run_id: str, after: int) -> list[Event]:
    """Events of ``run_id`` with ids above ``after``."""
    return [Event.from_row(*r) for r in tx.q("events_after", {"run_id": run_id, "after": after})]


def signal(tx: Tx, workflow_id: str, run_id: str | None, name: str, input: str, now: float) -> str:
    """Record a signal for the open run; return its run id."""
    run = _open_run(tx, workflow_id, run_id, f"signal {name!r} to")
    _append_incoming(
        tx, run, now, EventType.WORKFLOW_EXECUTION_SIGNALED, {"name": name, "input": input}
    )
    return run.run_id


def request_cancel(tx: Tx, workflow_id: str, run_id: str | None, now: float) -> str:
    """Record a cancel request for the open run (once)."""
    run = _open_run(tx, workflow_id, run_id, "cancel")
    if not run.cancel_requested:
        _append_incoming(
            tx, run, now, EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED, {}, cancel_requested=True
        )
    return run.run_id


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
    tx.x(
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
    tx.x("delete_run_activities", {"run_id": run.run_id})
    tx.x("delete_run_timers", {"run_id": run.run_id})
    tx.x(
        "fail_run_queries",
        {"run_id": run.run_id, "error": f"the workflow closed as {status.value}"},
    )


# --------------------------------------------------------------------------- workflow tasks


def claim_workflow_tasks(
    tx: Tx,
    *,
    task_queue: str,
    owner: str,
    now: float,
    limit: int,
    lease: float,
    known: dict[str, int],
) -> list[WorkflowTask]:
    """Lease up to ``limit`` ready workflow tasks; include events after ``known[run]``."""
    out = []
    for (run_id,) in tx.q("wft_candidates", {"task_queue": task_queue, "now": now, "limit": limit}):
        fence_row = _q1(tx, "lease_wft", {"run_id": run_id, "owner": owner, "until": now + lease})
        run = _run(tx, run_id, for_update=False)
        if fence_row is None or run is None:
            continue
        after = known.get(run_id, 0)
        out.append(
            WorkflowTask(
                run_id=run_id,
                workflow_id=run.workflow_id,
                workflow_type=run.workflow_type,
                task_queue=run.task_queue,
                fence=int(fence_row[0]),
                attempt=run.wft_attempt,
                start_time=run.created_at,
                history_length=run.history_length,
                events=events_after(tx, run_id, after),
                events_after=after,
            )
        )
    return out


def complete_workflow_task(
    tx: Tx, c: WorkflowTaskCompletion, now: float, activity_lease_cap: float
) -> CompletionOutcome:
    """Append the task's marker and command events and enqueue what they cause."""
    run = _run(tx, c.run_id)
    if (
        run is None
        or run.status is not WorkflowStatus.RUNNING
        or run.wft_fence != c.fence
        or run.wft_lease_owner != c.owner
    ):
        return CompletionOutcome(
            accepted=False, closed=run is not None and run.status is not WorkflowStatus.RUNNING
        )
    return _apply_completion(tx, run, c, now, activity_lease_cap)


def _apply_completion(
    tx: Tx,
    run: RunRecord,
    c: WorkflowTaskCompletion,
    now: float,
    activity_lease_cap: float,
    prefix: list[tuple[EventType, dict[str, Any]]] | None = None,
) -> CompletionOutcome:
    closing = next(
        (
            cmd
            for cmd in c.commands
            if isinstance(cmd, CompleteWorkflow | FailWorkflow | CancelWorkflow)
        ),
        None,
    )
    unseen = run.history_length > c.through
    if closing is not None and unseen:
        late = [e for e in events_after(tx, run.run_id, c.through) if e.event_type in _LATE_EVENTS]
        if late:  # the code would close without seeing them: run it again with them
            _progress(
                tx, run, next_event_id=run.history_length + 1, wft_ready_at=now, wft_attempt=1
            )
            return CompletionOutcome(accepted=False)
    marker = (EventType.WORKFLOW_TASK_COMPLETED, {"through": c.through, "time": c.time})
    events = [*(prefix or ()), marker, *(command_event(cmd) for cmd in c.commands)]
    next_id, _ = _append(tx, run.run_id, run.history_length + 1, now, events)
    eager: list[ActivityTask] = []
    slots = c.eager_activity_slots
    for cmd in c.commands:
        if isinstance(cmd, ScheduleActivity):
            task = _insert_activity(
                tx, run, cmd, now, c.owner if slots > 0 else None, activity_lease_cap
            )
            if task is not None:
                eager.append(task)
                slots -= 1
        elif isinstance(cmd, RequestCancelActivity):
            row = _q1(tx, "activity_by_key", {"run_id": run.run_id, "seq": cmd.seq})
            if row is not None and row[13] is None:
                tx.x("delete_activity", {"run_id": run.run_id, "seq": cmd.seq})
            elif row is not None:
                tx.x("request_cancel_activity", {"run_id": run.run_id, "seq": cmd.seq})
        elif isinstance(cmd, StartTimer):
            tx.x(
                "insert_timer",
                {
                    "run_id": run.run_id,
                    "seq": cmd.seq,
                    "task_queue": run.task_queue,
                    "fire_at": max(cmd.fire_at, now + 0.0) if cmd.duration > 0 else now,
                },
            )
        elif isinstance(cmd, CancelTimer):
            tx.x("delete_timer", {"run_id": run.run_id, "seq": cmd.seq})
        elif isinstance(cmd, RecordMarker):
            pass
    if isinstance(closing, CompleteWorkflow):
        _close(tx, run, WorkflowStatus.COMPLETED, closing.result, None, next_id, now)
    elif isinstance(closing, FailWorkflow):
        _close(tx, run, WorkflowStatus.FAILED, None, closing.failure, next_id, now)
    elif isinstance(closing, CancelWorkflow):
        failure = Failure(type="Cancelled", message="workflow cancelled", kind="CancelledFailure")
        _close(tx, run, WorkflowStatus.CANCELED, None, failure.to_dict(), next_id, now)
    else:
        _progress(
            tx,
            run,
            next_event_id=next_id,
            wft_ready_at=now if unseen else None,
            wft_attempt=1,
        )
    return CompletionOutcome(
        accepted=True, history_length=next_id - 1, closed=closing is not None, eager=eager
    )


def fail_workflow_task(
    tx: Tx,
    *,
    run_id: str,
    fence: int,
    owner: str,
    failure: dict[str, Any],
    now: float,
    retry_in: float,
) -> None:
    """Record a failed workflow task (once per streak) and schedule its retry."""
    retry_at = now + retry_in
    run = _run(tx, run_id)
    if run is None or run.status is not WorkflowStatus.RUNNING:
        return
    if run.wft_fence != fence or run.wft_lease_owner != owner:
        return
    next_id = run.history_length + 1
    if run.wft_attempt == 1:
        next_id, _ = _append(
            tx,
            run_id,
            next_id,
            now,
            [(EventType.WORKFLOW_TASK_FAILED, {"failure": failure, "attempt": 1})],
        )
    _progress(
        tx,
        run,
        next_event_id=next_id,
        wft_ready_at=retry_at,
        wft_attempt=run.wft_attempt + 1,
        wft_failure=failure,
    )


def release_workflow_task(tx: Tx, *, run_id: str, fence: int, owner: str, now: float) -> None:
    """Give a claimed workflow task back (worker shutting down)."""
    run = _run(tx, run_id)
    if run is None or run.wft_fence != fence or run.wft_lease_owner != owner:
        return
    _progress(
        tx, run, next_event_id=run.history_length + 1, wft_ready_at=now, wft_failure=run.wft_failure
    )


def reset_backoff(tx: Tx, task_queue: str, now: float) -> int:
    """Make failed workflow tasks of ``task_queue`` due now (a new worker may fix them)."""
    return tx.x("reset_wft_backoff", {"task_queue": task_queue, "now": now})


# --------------------------------------------------------------------------- activities


def _attempt_window(
    options: dict[str, Any], deadline: float | None, now: float
) -> tuple[float, float]:
    """Return (lease_until, attempt_deadline) for an attempt starting ``now``."""
    stc = options.get("start_to_close_timeout")
    attempt_deadline = now + float(stc) if stc else (deadline or now + 600.0)
    if deadline is not None:
        attempt_deadline = min(attempt_deadline, deadline)
    hb = options.get("heartbeat_timeout")
    until = min(attempt_deadline, now + float(hb)) if hb else attempt_deadline
    return until, attempt_deadline


def _insert_activity(
    tx: Tx, run: RunRecord, cmd: ScheduleActivity, now: float, owner: str | None, cap: float
) -> ActivityTask | None:
    stc = cmd.options.get("schedule_to_close_timeout")
    deadline = now + float(stc) if stc else None
    until, attempt_deadline = _attempt_window(cmd.options, deadline, now)
    tx.x(
        "insert_activity",
        {
            "run_id": run.run_id,
            "seq": cmd.seq,
            "workflow_id": run.workflow_id,
            "workflow_type": run.workflow_type,
            "activity_type": cmd.activity_type,
            "task_queue": cmd.task_queue,
            "input": cmd.input,
            "options": _dumps(cmd.options),
            "now": now,
            "deadline": deadline,
            "owner": owner,
            "until": until if owner else None,
            "attempt_deadline": attempt_deadline if owner else None,
            "fence": 1 if owner else 0,
        },
    )
    if owner is None:
        return None
    return ActivityTask(
        run_id=run.run_id,
        seq=cmd.seq,
        fence=1,
        workflow_id=run.workflow_id,
        workflow_type=run.workflow_type,
        activity_type=cmd.activity_type,
        task_queue=cmd.task_queue,
        input=cmd.input,
        options=cmd.options,
        attempt=1,
        scheduled_at=now,
        heartbeat_details=None,
        attempt_deadline=attempt_deadline,
    )


def claim_activities(
    tx: Tx, *, task_queue: str, owner: str, now: float, limit: int
) -> list[ActivityTask]:
    """Lease up to ``limit`` ready activity attempts of ``task_queue``."""
    out = []
    rows = tx.q("activity_candidates", {"task_queue": task_queue, "now": now, "limit": limit})
    for run_id, seq, options_text, deadline in rows:
        options = json.loads(options_text)
        until, attempt_deadline = _attempt_window(options, deadline, now)
        r = _q1(
            tx,
            "lease_activity",
            {
                "run_id": run_id,
                "seq": seq,
                "owner": owner,
                "until": until,
                "attempt_deadline": attempt_deadline,
            },
        )
        if r is None:
            continue
        out.append(
            ActivityTask(
                run_id=r[0],
                seq=r[1],
                workflow_id=r[2],
                workflow_type=r[3],
                activity_type=r[4],
                task_queue=r[5],
                input=r[6],
                options=options,
                attempt=r[8],
                scheduled_at=r[9],
                fence=r[11],
                heartbeat_details=r[12],
                attempt_deadline=attempt_deadline,
            )
        )
    return out


def _current_attempt(tx: Tx, run_id: str, seq: int, fence: int) -> tuple[Any, ...] | None:
    row = _q1(tx, "activity_by_key", {"run_id": run_id, "seq": seq})
    if row is None or row[11] != fence or row[13] is None:
        return None
    return row


def complete_activity(
    tx: Tx, *, run_id: str, seq: int, fence: int, result: str, now: float
) -> RunRecord | None:
    """Record an attempt's result; ``None`` if the attempt is stale (nothing changes)."""
    taken = _q1(tx, "take_activity", {"run_id": run_id, "seq": seq, "fence": fence})
    if taken is None:
        return None
    return _record_result(tx, run_id, seq, result, int(taken[0]), bool(taken[1]), now)


def _record_result(
    tx: Tx, run_id: str, seq: int, result: str, attempt: int, cancelled: bool, now: float
) -> RunRecord | None:
    run = _run(tx, run_id)
    if run is None or run.status is not WorkflowStatus.RUNNING or cancelled:
        return run
    _append_incoming(
        tx,
        run,
        now,
        EventType.ACTIVITY_TASK_COMPLETED,
        {"seq": seq, "result": result, "attempt": attempt},
    )
    return run


def complete_activity_and_decide(
    tx: Tx,
    *,
    seq: int,
    fence: int,
    result: str,
    expected_length: int,
    completion: WorkflowTaskCompletion,
    now: float,
    activity_lease_cap: float,
) -> CompletionOutcome | None:
    """One commit for one step: an activity's result and the workflow's next decision.

    The worker ran the decision speculatively on its cached run, assuming the history
    is ``expected_length`` long and no other worker holds the run. If so, the result,
    the decision's marker and its commands are appended together; if not, only the
    result is recorded (returned outcome not accepted) and the worker drops its cache.
    Returns ``None`` if the attempt itself is stale.
    """
    run_id = completion.run_id
    taken = _q1(tx, "take_activity", {"run_id": run_id, "seq": seq, "fence": fence})
    if taken is None:
        return None
    attempt, cancelled = int(taken[0]), bool(taken[1])
    run = _run(tx, run_id)
    speculation_holds = (
        run is not None
        and run.status is WorkflowStatus.RUNNING
        and not cancelled
        and run.history_length == expected_length
        and run.wft_ready_at is None
        and run.wft_lease_owner is None
    )
    if not speculation_holds:
        _record_result(tx, run_id, seq, result, attempt, cancelled, now)
        return CompletionOutcome(accepted=False)
    assert run is not None
    done = (
        EventType.ACTIVITY_TASK_COMPLETED,
        {"seq": seq, "result": result, "attempt": attempt},
    )
    return _apply_completion(tx, run, completion, now, activity_lease_cap, prefix=[done])


def fail_activity(
    tx: Tx, *, run_id: str, seq: int, fence: int, failure: dict[str, Any], now: float
) -> bool:
    """Record a failed attempt: retry it under its policy, or fail the activity."""
    row = _current_attempt(tx, run_id, seq, fence)
    if row is None:
        return False
    _fail_attempt(tx, row, failure, now)
    return True


def _fail_attempt(tx: Tx, row: tuple[Any, ...], failure: dict[str, Any], now: float) -> None:
    run_id, seq, attempt, deadline, cancel_requested = row[0], row[1], row[8], row[10], row[16]
    if cancel_requested:
        tx.x("delete_activity", {"run_id": run_id, "seq": seq})
        return
    options = json.loads(row[7])
    policy = RetryPolicy.from_dict(options["retry_policy"])
    f = Failure.from_dict(failure)
    if f.kind == "TimeoutError" and deadline is not None and now >= deadline - 0.05:
        f = Failure(
            type="TimeoutError",
            message=f"activity {row[4]!r} hit its schedule_to_close timeout",
            kind="TimeoutError",
            non_retryable=True,
            details={"timeout_type": "schedule_to_close"},
        )
        failure = f.to_dict()
    delay = f.details.get("next_retry_delay")
    wait = float(delay) if delay is not None else policy.backoff(attempt, _rng)
    if policy.should_retry(attempt, f.type, f.non_retryable) and (
        deadline is None or now + wait < deadline
    ):
        tx.x(
            "retry_activity",
            {"run_id": run_id, "seq": seq, "ready_at": now + wait, "failure": _dumps(failure)},
        )
        return
    tx.x("delete_activity", {"run_id": run_id, "seq": seq})
    run = _run(tx, run_id)
    if run is None or run.status is not WorkflowStatus.RUNNING:
        return
    _append_incoming(
        tx,
        run,
        now,
        EventType.ACTIVITY_TASK_FAILED,
        {"seq": seq, "failure": failure, "attempt": attempt},
    )


def heartbeat_activity(
    tx: Tx, *, run_id: str, seq: int, fence: int, details: str | None, now: float
) -> bool:
    """Record progress and extend the lease; return whether the activity should stop."""
    row = _current_attempt(tx, run_id, seq, fence)
    if row is None:
        return True
    options = json.loads(row[7])
    hb = options.get("heartbeat_timeout")
    attempt_deadline = row[15] or now
    until = min(attempt_deadline, now + float(hb)) if hb else row[14]
    tx.x(
        "heartbeat_activity",
        {"run_id": run_id, "seq": seq, "fence": fence, "details": details, "until": until},
    )
    return bool(row[16])


def activity_cancel_requested(tx: Tx, *, run_id: str, seq: int, fence: int) -> bool:
    """Whether the attempt should stop (cancelled, closed run, or lease lost)."""
    row = _current_attempt(tx, run_id, seq, fence)
    return row is None or bool(row[16])


def expire(tx: Tx, now: float, limit: int = 500) -> int:
    """Time out attempts whose lease ran out and activities past their deadline."""
    n = 0
    for run_id, seq in tx.q("expired_activities", {"now": now, "limit": limit}):
        row = _q1(tx, "activity_by_key", {"run_id": run_id, "seq": seq})
        if row is None:
            continue
        options = json.loads(row[7])
        deadline = row[10]
        if deadline is not None and deadline < now:
            kind, non_retryable = "schedule_to_close", True
        elif options.get("heartbeat_timeout") and (row[15] is None or row[14] < row[15]):
            kind, non_retryable = "heartbeat", False
        else:
            kind, non_retryable = "start_to_close", False
        failure = Failure(
            type="TimeoutError",
            message=f"activity {row[4]!r} attempt {row[8]} hit its {kind} timeout",
            kind="TimeoutError",
            non_retryable=non_retryable,
            details={"timeout_type": kind},
        )
        _fail_attempt(tx, row, failure.to_dict(), now)
        n += 1
    return n


# --------------------------------------------------------------------------- timers


def fire_timers(tx: Tx, now: float, limit: int = 500) -> int:
    """Fire every due timer: append ``TimerFired`` and make the run's task ready."""
    n = 0
    for run_id, seq in tx.q("due_timers", {"now": now, "limit": limit}):
        tx.x("delete_timer", {"run_id": run_id, "seq": seq})
        run = _run(tx, run_id)
        if run is None or run.status is not WorkflowStatus.RUNNING:
            continue
        _append_incoming(tx, run, now, EventType.TIMER_FIRED, {"seq": seq})
        n += 1
    return n


def next_wakeup(tx: Tx, task_queue: str) -> float | None:
    """The earliest future time at which something of ``task_queue`` becomes due."""
    times = []
    for name in ("next_timer", "next_activity_expiry"):
        row = _q1(tx, name, {})
        if row and row[0] is not None:
            times.append(float(row[0]))
    for name in ("next_activity_ready", "next_wft_ready"):
        row = _q1(tx, name, {"task_queue": task_queue})
        if row and row[0] is not None:
            times.append(float(row[0]))
    return min(times) if times else None


# --------------------------------------------------------------------------- queries


def submit_query(
    tx: Tx,
    *,
    workflow_id: str,
    run_id: str | None,
    name: str,
    args: str,
    now: float,
    timeout: float,
) -> str:
    """Queue a query for a worker of the run's task queue; return its id."""
    expires_at = now + timeout
    run = _open_run(tx, workflow_id, run_id, f"query {name!r} on")
    query_id = uuid.uuid4().hex
    tx.x(
        "insert_query",
        {
            "query_id": query_id,
            "run_id": run.run_id,
            "task_queue": run.task_queue,
            "name": name,
            "args": args,
            "now": now,
            "expires_at": expires_at,
        },
    )
    return query_id


def claim_queries(
    tx: Tx, *, task_queue: str, owner: str, now: float, limit: int
) -> list[QueryRequest]:
    """Lease open queries of ``task_queue``."""
    out = []
    for (query_id,) in tx.q(
        "query_candidates", {"task_queue": task_queue, "now": now, "limit": limit}
    ):
        r = _q1(tx, "lease_query", {"query_id": query_id, "owner": owner, "until": now + 10})
        if r is not None:
            out.append(QueryRequest(query_id=r[0], run_id=r[1], name=r[2], args=r[3]))
    return out


def answer_query(tx: Tx, *, query_id: str, answer: str | None, error: str | None) -> None:
    """Store a query's answer or error."""
    tx.x("answer_query", {"query_id": query_id, "answer": answer, "error": error})


def query_result(tx: Tx, query_id: str) -> tuple[bool, str | None, str | None]:
    """``(done, answer, error)`` of a query."""
    row = _q1(tx, "query_by_id", {"query_id": query_id})
    if row is None:
        return True, None, "the query was dropped"
    return bool(row[0]), row[1], row[2]


def drop_query(tx: Tx, query_id: str, now: float) -> None:
    """Delete a query (answered or abandoned) and any long-expired ones."""
    tx.x("delete_query", {"query_id": query_id})
    tx.x("delete_expired_queries", {"cutoff": now - 60})
