"""Timers, wake-up times and queries."""

from __future__ import annotations

import uuid

from ...history import EventType
from .._wakeups import ACTIVITIES, WORKFLOWS
from ..records import (
    QueryRequest,
    RunRecord,
    Wakeup,
    WorkflowStatus,
)
from .core import (
    Tx,
    _append_incoming,
    _open_run,
    _q1,
    _run,
)

# --------------------------------------------------------------------------- timers

TIE = 0.1  # seconds: work of several kinds due this close together wakes every kind


def fire_timers(tx: Tx, now: float, limit: int = 500) -> list[RunRecord]:
    """Fire every due timer: append ``TimerFired`` and make the run's task ready.
    Returns the runs whose timers fired, as read before."""
    fired: list[RunRecord] = []
    for run_id, seq in tx.q("due_timers", {"now": now, "limit": limit}):
        tx.w("delete_timer", {"run_id": run_id, "seq": seq})
        run = _run(tx, run_id)
        if run is None or run.status is not WorkflowStatus.RUNNING:
            continue
        _append_incoming(tx, run, now, EventType.TIMER_FIRED, {"seq": seq})
        fired.append(run)
    return fired


def next_wakeup(tx: Tx, task_queue: str, now: float, sticky_wait: float = 0.0) -> Wakeup | None:
    """The earliest time at which something of ``task_queue`` falls due, and whose.

    Timers and leases are the maintenance pass's own work: one already due (left by a
    pass that stopped at its limit) makes the answer a past time, to run it again at
    once. Workflow tasks and activities are the pollers' (of that kind): only future
    times count, or a backlog waiting for free slots would keep the pass running back
    to back. A task sticky to a worker falls due for the others ``sticky_wait`` seconds
    after it is ready.
    """
    due: list[Wakeup] = []
    for name in ("next_timer", "next_activity_expiry"):
        row = _q1(tx, name, {})
        if row and row[0] is not None:
            due.append(Wakeup(float(row[0]), None))
    for name, kind in (("next_activity_ready", ACTIVITIES), ("next_wft_ready", WORKFLOWS)):
        row = _q1(tx, name, {"task_queue": task_queue, "now": now, "sticky_wait": sticky_wait})
        if row and row[0] is not None:
            due.append(Wakeup(float(row[0]), kind))
    if not due:
        return None
    first = min(due, key=lambda w: w.at)
    # another kind's work due soon after would fall due during the wait: wake every kind
    if any(w.kind != first.kind and w.at - first.at < TIE for w in due):
        return Wakeup(first.at, None)
    return first


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
) -> tuple[str, RunRecord]:
    """Queue a query for a worker of the run's task queue; return its id and the run."""
    expires_at = now + timeout
    run = _open_run(tx, workflow_id, run_id, f"query {name!r} on")
    query_id = uuid.uuid4().hex
    tx.w(
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
    return query_id, run


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
    tx.w("answer_query", {"query_id": query_id, "answer": answer, "error": error})


def query_result(tx: Tx, query_id: str) -> tuple[bool, str | None, str | None]:
    """``(done, answer, error)`` of a query."""
    row = _q1(tx, "query_by_id", {"query_id": query_id})
    if row is None:
        return True, None, "the query was dropped"
    return bool(row[0]), row[1], row[2]


def drop_query(tx: Tx, query_id: str, now: float) -> None:
    """Delete a query (answered or abandoned) and any long-expired ones."""
    tx.w("delete_query", {"query_id": query_id})
    tx.w("delete_expired_queries", {"cutoff": now - 60})
