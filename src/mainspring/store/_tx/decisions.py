"""Workflow tasks: claims, decisions (and the activities and timers they schedule), failures."""

from __future__ import annotations

from typing import Any

from ...errors import (
    Failure,
)
from ...history import Event, EventType
from ...runtime.commands import (
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
from ..records import (
    ActivityTask,
    CompletionOutcome,
    RunRecord,
    WorkflowStatus,
    WorkflowTask,
    WorkflowTaskCompletion,
)
from .core import (
    _LATE_EVENTS,
    Tx,
    _append,
    _close,
    _dumps,
    _progress,
    _q1,
    _run,
    events_after,
    start_workflow,
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
    sticky_wait: float = 0.0,
) -> list[WorkflowTask]:
    """Lease up to ``limit`` ready workflow tasks; include events after ``known[run]``.

    A task sticky to another worker (which keeps its run in memory) is left to that
    worker until it has been ready for ``sticky_wait`` seconds.
    """
    out: list[WorkflowTask] = []
    found = tx.q(
        "wft_candidates",
        {
            "task_queue": task_queue,
            "now": now,
            "limit": limit,
            "owner": owner,
            "sticky_cutoff": now - sticky_wait,
        },
    )
    ids = [r[0] for r in found]
    if not ids:
        return out
    # the candidates are locked: lease each, read it and its new events, all at once
    until = now + lease
    rows = tx.qs(
        [
            q
            for run_id in ids
            for q in (
                ("lease_wft", {"run_id": run_id, "owner": owner, "until": until}),
                ("run_by_id", {"run_id": run_id}),
                ("events_after", {"run_id": run_id, "after": known.get(run_id, 0)}),
            )
        ]
    )
    for i, run_id in enumerate(ids):
        fence_rows, run_rows, event_rows = rows[3 * i : 3 * i + 3]
        if not fence_rows or not run_rows:
            continue
        run = RunRecord.from_row(run_rows[0])
        after = known.get(run_id, 0)
        out.append(
            WorkflowTask(
                run_id=run_id,
                workflow_id=run.workflow_id,
                workflow_type=run.workflow_type,
                task_queue=run.task_queue,
                fence=int(fence_rows[0][0]),
                attempt=run.wft_attempt,
                start_time=run.created_at,
                history_length=run.history_length,
                events=[Event.from_row(*r) for r in event_rows],
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
            return CompletionOutcome(accepted=False, ready_run=run)
    marker = (EventType.WORKFLOW_TASK_COMPLETED, {"through": c.through, "time": c.time})
    events = [*(prefix or ()), marker, *(command_event(cmd) for cmd in c.commands)]
    next_id, _ = _append(tx, run.run_id, run.history_length + 1, now, events)
    eager: list[ActivityTask] = []
    slots = c.eager_activity_slots
    for cmd in c.commands:
        if isinstance(cmd, ScheduleActivity):
            task = _insert_activity(
                tx,
                run,
                cmd,
                now,
                c.owner if slots > 0 and cmd.seq in c.eager_seqs else None,
                activity_lease_cap,
                c.owner,
            )
            if task is not None:
                eager.append(task)
                slots -= 1
        elif isinstance(cmd, RequestCancelActivity):
            row = _q1(tx, "activity_by_key", {"run_id": run.run_id, "seq": cmd.seq})
            if row is not None and row[13] is None:
                tx.w("delete_activity", {"run_id": run.run_id, "seq": cmd.seq})
            elif row is not None:
                tx.w("request_cancel_activity", {"run_id": run.run_id, "seq": cmd.seq})
        elif isinstance(cmd, StartTimer):
            tx.w(
                "insert_timer",
                {
                    "run_id": run.run_id,
                    "seq": cmd.seq,
                    "task_queue": run.task_queue,
                    "fire_at": max(cmd.fire_at, now + 0.0) if cmd.duration > 0 else now,
                },
            )
        elif isinstance(cmd, CancelTimer):
            tx.w("delete_timer", {"run_id": run.run_id, "seq": cmd.seq})
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
            sticky=c.owner,  # it keeps the run in memory: its next task is cheapest there
        )
    return CompletionOutcome(
        accepted=True,
        history_length=next_id - 1,
        closed=closing is not None,
        ready_again=closing is None and unseen,
        eager=eager,
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


def release_workflow_task(
    tx: Tx, *, run_id: str, fence: int, owner: str, now: float
) -> RunRecord | None:
    """Give a claimed workflow task back (worker shutting down); the run, if it was
    the caller's to give back."""
    run = _run(tx, run_id)
    if run is None or run.wft_fence != fence or run.wft_lease_owner != owner:
        return None
    _progress(
        tx, run, next_event_id=run.history_length + 1, wft_ready_at=now, wft_failure=run.wft_failure
    )
    return run


def release_sticky(tx: Tx, *, task_queue: str, owner: str) -> int:
    """Make the open runs of ``task_queue`` sticky to ``owner`` anyone's: it is going
    away."""
    return tx.x("release_sticky", {"task_queue": task_queue, "owner": owner})


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
    tx: Tx,
    run: RunRecord,
    cmd: ScheduleActivity,
    now: float,
    owner: str | None,
    cap: float,
    scheduler: str,
) -> ActivityTask | None:
    """Insert the activity's first attempt, leased to ``owner`` if given (eagerly);
    ``scheduler``, the deciding worker, claims it before other workers do."""
    stc = cmd.options.get("schedule_to_close_timeout")
    deadline = now + float(stc) if stc else None
    until, attempt_deadline = _attempt_window(cmd.options, deadline, now)
    tx.w(
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
            "sticky": scheduler,
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


def start_and_decide(
    tx: Tx,
    *,
    workflow_id: str,
    workflow_type: str,
    task_queue: str,
    input: str,
    now: float,
    use_existing: bool,
    completion: WorkflowTaskCompletion,
    activity_lease_cap: float,
) -> tuple[str, bool, CompletionOutcome | None]:
    """Eager start: a run and its first decision (made by a local worker) in one commit.

    Returns ``(run_id, started, outcome)``; with an open run of this id and
    ``use_existing``, ``(its run_id, False, None)`` and nothing is written.
    """
    run_id, started = start_workflow(
        tx,
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        task_queue=task_queue,
        input=input,
        now=now,
        use_existing=use_existing,
        run_id=completion.run_id,
    )
    if not started:
        return run_id, False, None
    run = _run(tx, run_id)
    assert run is not None
    return run_id, True, _apply_completion(tx, run, completion, now, activity_lease_cap)
