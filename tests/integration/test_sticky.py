"""Sticky workflow tasks: a run's next step goes to the worker that keeps it in memory,
not to one that would replay its whole history; on every store."""

from __future__ import annotations

import asyncio
from datetime import timedelta as td

import pytest

from mainspring import Client, Worker, activity, workflow
from mainspring.errors import WorkerError
from mainspring.retry import RetryPolicy
from mainspring.runtime.commands import ScheduleActivity
from mainspring.store._wakeups import WORKFLOWS
from mainspring.store.records import WorkflowTaskCompletion
from tests._clock import ManualClock

from .agents import Approval

STEPS = 12
CREATED: list[str] = []  # one entry per workflow instance built: a replay builds another


@activity.defn
async def relay_step(n: int) -> int:
    return n + 1


@workflow.defn
class Relay:
    def __init__(self) -> None:
        CREATED.append(workflow.info().run_id)

    @workflow.run
    async def run(self, steps: int) -> int:
        n = 0
        for _ in range(steps):
            n = await workflow.execute_activity(
                relay_step, n, task_queue="acts", start_to_close_timeout=td(seconds=30)
            )
        return n


async def test_each_step_is_decided_by_the_worker_that_keeps_the_run(client: Client) -> None:
    """Activities run on a worker without the run; of two workflow workers, the one
    that decided first decides every later step, without a replay."""
    CREATED.clear()
    hour = td(hours=1)
    acts = Worker(client, task_queue="acts", activities=[relay_step])
    # a never polls on its own: it decides each step only if a wake-up reaches it
    a = Worker(client, task_queue="wf", workflows=[Relay], sticky_timeout=hour, poll_interval=hour)
    # b polls all the time: were a's tasks not left to a, b would take some of them
    b = Worker(
        client,
        task_queue="wf",
        workflows=[Relay],
        sticky_timeout=hour,
        poll_interval=td(milliseconds=1),
    )
    async with acts, a, b:
        result = await asyncio.wait_for(
            client.execute_workflow(Relay.run, STEPS, id="relay", task_queue="wf"), 60
        )
    assert result == STEPS
    assert len(CREATED) == 1  # built once: no other worker ever replayed it


async def test_a_worker_shutting_down_hands_its_runs_over_at_once(client: Client) -> None:
    """The other worker would leave the run to the first for an hour; the first hands it
    over as it stops, so the signal is handled now."""
    a = Worker(client, task_queue="wf", workflows=[Approval])
    b = Worker(client, task_queue="wf", workflows=[Approval], sticky_timeout=td(hours=1))
    await a.start()
    handle = await client.start_workflow(Approval.run, 3600.0, id="handover", task_queue="wf")
    assert await handle.query(Approval.status) == "waiting"  # a decided and keeps it
    assert a.cached_workflows == 1
    await b.start()
    await a.shutdown()
    try:
        await handle.signal(Approval.decide, "yes")
        # only b is left to decide it (and it would not take a's run for an hour)
        assert await asyncio.wait_for(handle.result(), 30) == "decided yes after 1 signal(s)"
    finally:
        await b.shutdown()


async def _scheduled_by(client: Client, workflow_id: str, owner: str) -> str:
    """A run whose first step ``owner`` decided, scheduling an activity it did not take."""
    s = client.store
    run_id, _ = await s.start_workflow(
        workflow_id=workflow_id, workflow_type="W", task_queue="q", input="[]"
    )
    [wft] = await s.claim_workflow_tasks("q", owner, 1, 60, {})
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
            owner=owner,
            through=wft.history_length,
            time=0.0,
            commands=[schedule],
        )
    )
    assert out.accepted and not out.eager
    return run_id


async def _decided_then_completed_elsewhere(client: Client) -> str:
    """A run whose first step w1 decided (scheduling an activity it did not take), and
    whose activity w2 then completed: its next task is ready and sticky to w1."""
    run_id = await _scheduled_by(client, "sticky", "w1")
    [task] = await client.store.claim_activities("q", "w2", 1)
    assert await client.store.complete_activity(task, '"done"') is True
    return run_id


async def test_a_ready_task_is_left_to_its_sticky_worker_for_the_sticky_wait(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    s = client.store
    run_id = await _decided_then_completed_elsewhere(client)
    ready_at = clock.t
    assert await s.claim_workflow_tasks("q", "w2", 10, 60, {}, sticky_wait=1.0) == []
    # w2's maintenance knows when the task falls due for it
    wake = await s.maintain("q", sticky_wait=1.0)
    assert wake is not None and wake.at == pytest.approx(ready_at + 1.0)
    assert wake.kind == WORKFLOWS
    clock.t += 1.5
    [late] = await s.claim_workflow_tasks("q", "w2", 10, 60, {}, sticky_wait=1.0)
    assert late.run_id == run_id
    assert late.events_after == 0  # w2 has nothing of the run: it gets the whole history


async def test_the_sticky_worker_takes_its_task_at_once_with_only_the_new_events(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, _ = clocked
    s = client.store
    run_id = await _decided_then_completed_elsewhere(client)
    run, events = await s.history("sticky")
    known = {run_id: run.history_length - 1}  # w1 saw all but the activity's result
    [task] = await s.claim_workflow_tasks("q", "w1", 10, 60, known, sticky_wait=3600.0)
    assert task.run_id == run_id
    assert [e.event_id for e in task.events] == [events[-1].event_id]


async def test_released_runs_go_to_any_worker_at_once(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, _ = clocked
    s = client.store
    run_id = await _decided_then_completed_elsewhere(client)
    assert await s.claim_workflow_tasks("q", "w2", 10, 60, {}, sticky_wait=3600.0) == []
    assert await s.release_sticky("q", "w1") == 1
    [task] = await s.claim_workflow_tasks("q", "w2", 10, 60, {}, sticky_wait=3600.0)
    assert task.run_id == run_id


async def test_a_negative_sticky_timeout_is_refused(client: Client) -> None:
    with pytest.raises(WorkerError, match="sticky_timeout must not be negative"):
        Worker(client, task_queue="q", workflows=[Relay], sticky_timeout=td(seconds=-1))


async def _theirs_then_mine(client: Client, clock: ManualClock) -> tuple[str, str]:
    """Two runs with a queued activity each: w1's, then (0.1 s later) w2's."""
    theirs = await _scheduled_by(client, "theirs", "w1")
    clock.t += 0.1
    return theirs, await _scheduled_by(client, "mine", "w2")


async def test_a_worker_claims_the_activities_it_scheduled_before_others_fresh_ones(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    s = client.store
    theirs, mine = await _theirs_then_mine(client, clock)
    [first] = await s.claim_activities("q", "w2", 1, sticky_wait=1.0)
    assert first.run_id == mine  # though w1's is older
    [second] = await s.claim_activities("q", "w2", 1, sticky_wait=1.0)
    assert second.run_id == theirs  # a slot to spare: others' fresh ones too


async def test_attempts_that_waited_past_the_sticky_wait_go_first_to_anyone(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    s = client.store
    theirs, _ = await _theirs_then_mine(client, clock)
    clock.t += 5  # both waited longer than the sticky wait: oldest first, so none starves
    [first] = await s.claim_activities("q", "w2", 1, sticky_wait=1.0)
    assert first.run_id == theirs


async def test_without_a_sticky_wait_activities_are_claimed_oldest_first(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    s = client.store
    theirs, mine = await _theirs_then_mine(client, clock)
    claimed = await s.claim_activities("q", "w2", 5)
    assert [t.run_id for t in claimed] == [theirs, mine]
