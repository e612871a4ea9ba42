"""Activity attempts: claims, results, failures and retries, heartbeats, timeouts."""

from __future__ import annotations

import json
from typing import Any

from ...errors import (
    Failure,
)
from ...history import EventType
from ...retry import RetryPolicy
from ..records import (
    ActivityTask,
    CompletionOutcome,
    FailedAttempt,
    RunRecord,
    WorkflowStatus,
    WorkflowTaskCompletion,
)
from .core import (
    Reads,
    Tx,
    _append_incoming,
    _dumps,
    _q1,
    _rng,
    _run,
)
from .decisions import _apply_completion, _attempt_window


def claim_activities(
    tx: Tx, *, task_queue: str, owner: str, now: float, limit: int, sticky_wait: float = 0.0
) -> list[ActivityTask]:
    """Lease up to ``limit`` ready activity attempts of ``task_queue``, oldest first:
    first those ``owner`` scheduled itself and those ready for over ``sticky_wait``
    seconds (or nobody's), then, with slots to spare, other workers' fresh ones.

    A worker that runs the activities it scheduled holds their runs in memory, so each
    result and the run's next decision commit together; another worker's result costs
    the run a separate commit and a claim of its workflow task.
    """
    out = []
    params = {
        "task_queue": task_queue,
        "now": now,
        "limit": limit,
        "owner": owner,
        "fresh_after": now - sticky_wait,
    }
    rows = tx.q("activity_candidates", params)
    if len(rows) < limit and sticky_wait > 0:
        rows += tx.q("activity_candidates_others", {**params, "limit": limit - len(rows)})
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


def step_reads(run_id: str, seq: int, fence: int) -> Reads:
    """The reads :func:`complete_activity_and_decide` starts with: take the attempt (if
    its lease still holds) and lock the run. A dialect may run them ahead of the
    operation (see :meth:`Store._run`)."""
    return [
        ("take_activity", {"run_id": run_id, "seq": seq, "fence": fence}),
        ("run_by_id_for_update", {"run_id": run_id}),
    ]


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
    taken_rows, run_rows = tx.qs(step_reads(run_id, seq, fence))
    if not taken_rows:
        return None
    attempt, cancelled = int(taken_rows[0][0]), bool(taken_rows[0][1])
    run = RunRecord.from_row(run_rows[0]) if run_rows else None
    speculation_holds = (
        run is not None
        and run.status is WorkflowStatus.RUNNING
        and not cancelled
        and run.history_length == expected_length
        and run.wft_ready_at is None
        and run.wft_lease_owner is None
    )
    if not speculation_holds:
        recorded = _record_result(tx, run_id, seq, result, attempt, cancelled, now)
        return CompletionOutcome(accepted=False, ready_run=recorded)
    assert run is not None
    done = (
        EventType.ACTIVITY_TASK_COMPLETED,
        {"seq": seq, "result": result, "attempt": attempt},
    )
    return _apply_completion(tx, run, completion, now, activity_lease_cap, prefix=[done])


def fail_activity(
    tx: Tx, *, run_id: str, seq: int, fence: int, failure: dict[str, Any], now: float
) -> FailedAttempt | None:
    """Record a failed attempt: retry it under its policy, or fail the activity.
    ``None`` if the attempt is stale (nothing changes)."""
    row = _current_attempt(tx, run_id, seq, fence)
    if row is None:
        return None
    return _fail_attempt(tx, row, failure, now)


def _fail_attempt(
    tx: Tx, row: tuple[Any, ...], failure: dict[str, Any], now: float
) -> FailedAttempt:
    run_id, seq, attempt, deadline, cancel_requested = row[0], row[1], row[8], row[10], row[16]
    if cancel_requested:
        tx.w("delete_activity", {"run_id": run_id, "seq": seq})
        return FailedAttempt()
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
        tx.w(
            "retry_activity",
            {"run_id": run_id, "seq": seq, "ready_at": now + wait, "failure": _dumps(failure)},
        )
        return FailedAttempt(retry_queue=row[5] if wait <= 0 else None)
    tx.w("delete_activity", {"run_id": run_id, "seq": seq})
    run = _run(tx, run_id)
    if run is None or run.status is not WorkflowStatus.RUNNING:
        return FailedAttempt()
    _append_incoming(
        tx,
        run,
        now,
        EventType.ACTIVITY_TASK_FAILED,
        {"seq": seq, "failure": failure, "attempt": attempt},
    )
    return FailedAttempt(ready_run=run)


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
    tx.w(
        "heartbeat_activity",
        {"run_id": run_id, "seq": seq, "fence": fence, "details": details, "until": until},
    )
    return bool(row[16])


def activity_cancel_requested(tx: Tx, *, run_id: str, seq: int, fence: int) -> bool:
    """Whether the attempt should stop (cancelled, closed run, or lease lost)."""
    row = _current_attempt(tx, run_id, seq, fence)
    return row is None or bool(row[16])


def expire(tx: Tx, now: float, limit: int = 500) -> list[FailedAttempt]:
    """Time out attempts whose lease ran out and activities past their deadline."""
    out: list[FailedAttempt] = []
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
        out.append(_fail_attempt(tx, row, failure.to_dict(), now))
    return out


def release_eager(tx: Tx, *, run_id: str, seqs: list[int], owner: str, now: float) -> int:
    """Give back the attempts of ``seqs`` a decision leased eagerly to ``owner``, if it
    did (its commit's outcome is unknown); return how many there were."""
    return sum(
        tx.x("release_eager", {"run_id": run_id, "seq": seq, "owner": owner, "now": now})
        for seq in seqs
    )


def release_activity(tx: Tx, *, run_id: str, seq: int, fence: int, now: float) -> bool:
    """Give a leased attempt back without using it up (a graceful shutdown)."""
    return tx.x("release_activity", {"run_id": run_id, "seq": seq, "fence": fence, "now": now}) > 0
