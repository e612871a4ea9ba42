"""Fencing: an attempt whose lease ran out cannot record anything, on every store."""

from __future__ import annotations

import pytest

from mainspring import Client
from mainspring.history import EventType
from mainspring.retry import RetryPolicy
from mainspring.runtime.commands import CompleteWorkflow, ScheduleActivity
from mainspring.store.records import WorkflowTaskCompletion
from tests._clock import ManualClock


async def test_a_stale_attempt_cannot_complete_its_activity(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    s = client.store
    run_id, _ = await s.start_workflow(
        workflow_id="fenced", workflow_type="W", task_queue="q", input="[]"
    )
    [wft] = await s.claim_workflow_tasks("q", "w1", 1, 60, {})
    schedule = ScheduleActivity(
        seq=1,
        activity_type="a",
        task_queue="q",
        input="[]",
        options={"start_to_close_timeout": 5.0, "retry_policy": RetryPolicy().to_dict()},
    )
    out = await s.complete_workflow_task(
        WorkflowTaskCompletion(
            run_id=run_id,
            fence=wft.fence,
            owner="w1",
            through=wft.history_length,
            time=0.0,
            commands=[schedule],
            eager_activity_slots=1,
            eager_seqs=frozenset({1}),
        )
    )
    [first] = out.eager  # attempt 1, leased to w1 in the decision's commit
    clock.t += 10  # its start_to_close lease runs out
    assert await s.maintain("q") is not None  # expired: a retry is due after its backoff
    clock.t += 600
    [second] = await s.claim_activities("q", "w2", 1)
    assert (second.attempt, first.attempt) == (2, 1) and second.fence != first.fence

    # w1 comes back and reports attempt 1, by both paths: each is refused, nothing written
    assert await s.complete_activity(first, '"stale"') is False
    closing = WorkflowTaskCompletion(
        run_id=run_id,
        fence=wft.fence,
        owner="w1",
        through=out.history_length,
        time=0.0,
        commands=[CompleteWorkflow(result='"stale"')],
    )
    assert (
        await s.complete_activity_and_decide(first, '"stale"', out.history_length, closing) is None
    )
    assert await s.fail_activity(first, {"type": "X", "message": "stale"}) is False

    assert await s.complete_activity(second, '"fresh"') is True
    run, events = await s.history("fenced")
    done = [e.attributes for e in events if e.event_type is EventType.ACTIVITY_TASK_COMPLETED]
    assert [(d["result"], d["attempt"]) for d in done] == [('"fresh"', 2)]
    assert not [e for e in events if e.event_type is EventType.WORKFLOW_EXECUTION_COMPLETED]
    assert run.status.value == "RUNNING"


async def test_a_queued_activity_times_out_when_its_schedule_to_close_deadline_passes(
    clocked: tuple[Client, ManualClock],
) -> None:
    """An activity no worker has claimed still times out at its deadline: the
    maintenance pass wakes for that deadline and records the timeout when it passes."""
    client, clock = clocked
    s = client.store
    run_id, _ = await s.start_workflow(
        workflow_id="queued", workflow_type="W", task_queue="q", input="[]"
    )
    [wft] = await s.claim_workflow_tasks("q", "w1", 1, 60, {})
    schedule = ScheduleActivity(
        seq=1,
        activity_type="a",
        task_queue="nobody",  # no worker polls it: the activity stays queued
        input="[]",
        options={"schedule_to_close_timeout": 30.0, "retry_policy": RetryPolicy().to_dict()},
    )
    out = await s.complete_workflow_task(
        WorkflowTaskCompletion(
            run_id=run_id,
            fence=wft.fence,
            owner="w1",
            through=wft.history_length,
            time=0.0,
            commands=[schedule],
        )
    )
    assert out.accepted and not out.eager
    scheduled_at = clock.t
    wake = await s.maintain("q")
    assert wake is not None and wake.at == pytest.approx(scheduled_at + 30.0)

    clock.t += 29
    await s.maintain("q")
    assert not await s.claim_workflow_tasks("q", "w1", 1, 60, {})  # not yet
    clock.t += 2
    await s.maintain("q")
    _, history = await s.history("queued")
    [failed] = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_FAILED]
    assert failed.attributes["failure"]["details"]["timeout_type"] == "schedule_to_close"
    assert await s.claim_workflow_tasks("q", "w1", 1, 60, {})  # the run decides what next
