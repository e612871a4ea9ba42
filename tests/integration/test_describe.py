"""describe() says where each unfinished activity of a run stands: which worker runs it,
on which attempt, what it last reported, and why its last attempt failed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

from mainspring import (
    Client,
    PendingActivity,
    PendingActivityState,
    RetryPolicy,
    Worker,
    WorkflowDescription,
    WorkflowHandle,
    activity,
    workflow,
)
from mainspring.handle import MAX_PENDING_SHOWN
from tests._clock import ManualClock

_RELEASE: dict[str, asyncio.Event] = {}


@activity.defn
async def slow_step(label: str) -> str:
    activity.heartbeat("halfway", 50)
    await _RELEASE[label].wait()
    return label


@activity.defn
async def rate_limited() -> str:
    raise RuntimeError("429 Too Many Requests")


@activity.defn
async def unserved() -> str:
    return "never"


@workflow.defn
class ThreeWays:
    """One activity running, one backing off after a failure, one nobody serves."""

    @workflow.run
    async def run(self, label: str) -> list[str]:
        return list(
            await asyncio.gather(
                workflow.execute_activity(
                    slow_step,
                    label,
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=timedelta(minutes=5),
                ),
                workflow.execute_activity(
                    rate_limited,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(hours=1), maximum_attempts=5, jitter=0
                    ),
                ),
                workflow.execute_activity(
                    unserved,
                    task_queue="nobody-serves-this",
                    start_to_close_timeout=timedelta(seconds=30),
                    schedule_to_close_timeout=timedelta(days=2),
                ),
            )
        )


async def _described(
    handle: WorkflowHandle, ok: Callable[[WorkflowDescription], bool], what: str
) -> WorkflowDescription:
    """Describe the run until ``ok`` holds (each step is another worker's commit)."""
    deadline = time.monotonic() + 30
    while True:
        d = await handle.describe()
        if ok(d):
            return d
        assert time.monotonic() < deadline, f"{what}: {d.pending_activities}"
        await asyncio.sleep(0.02)


def _by_type(d: WorkflowDescription) -> dict[str, PendingActivity]:
    return {a.activity_type: a for a in d.pending_activities}


def _settled(d: WorkflowDescription) -> bool:
    a = _by_type(d)
    return (
        len(a) == 3
        and a["slow_step"].heartbeat_details == ["halfway", 50]
        and a["rate_limited"].state is PendingActivityState.BACKOFF
    )


async def test_describe_shows_each_unfinished_activity_where_it_stands(client: Client) -> None:
    _RELEASE["d1"] = asyncio.Event()
    worker = Worker(
        client, task_queue="q", workflows=[ThreeWays], activities=[slow_step, rate_limited]
    )
    try:
        async with worker:
            handle = await client.start_workflow(ThreeWays.run, "d1", id="d1", task_queue="q")
            d = await _described(handle, _settled, "the activities never settled")
            now = client.store.clock.now()
            running, failing, queued = (
                _by_type(d)[t] for t in ("slow_step", "rate_limited", "unserved")
            )
            assert [a.activity_type for a in d.pending_activities] == [
                "slow_step",
                "rate_limited",
                "unserved",
            ]  # in the order the workflow scheduled them
            assert running.state is PendingActivityState.STARTED
            assert running.worker == worker.identity
            assert running.attempt == 1 and running.maximum_attempts == 0
            assert running.lease_expires is not None and running.lease_expires.timestamp() > now
            assert running.last_failure is None and running.next_attempt_time is None

            assert failing.worker is None and failing.lease_expires is None
            assert failing.attempt == 2 and failing.maximum_attempts == 5
            assert failing.last_failure is not None
            assert failing.last_failure.message == "429 Too Many Requests"
            assert failing.next_attempt_time is not None
            assert failing.next_attempt_time.timestamp() > now + 3000  # an hour's backoff
            assert failing.able_workers == 1  # the worker registers it

            assert queued.state is PendingActivityState.SCHEDULED
            assert queued.task_queue == "nobody-serves-this"
            assert queued.attempt == 1 and queued.worker is None
            assert queued.able_workers == 0  # no worker serves its queue
            assert queued.deadline is not None
            assert queued.deadline.timestamp() > now + 86_400
            assert not any(a.cancel_requested for a in d.pending_activities)
            assert d.history_length == (await handle.describe()).history_length

            _RELEASE["d1"].set()  # the finished one leaves the list
            d = await _described(
                handle, lambda d: "slow_step" not in _by_type(d), "the finished one stayed"
            )
            assert sorted(_by_type(d)) == ["rate_limited", "unserved"]
            await handle.terminate("done looking")
            closed = await handle.describe()
            assert closed.pending_activities == ()
    finally:
        _RELEASE.clear()


@activity.defn
async def stubborn(label: str) -> str:
    """Goes on after the workflow asks it to stop (until the test releases it)."""
    while True:
        try:
            await _RELEASE[label].wait()
            return label
        except asyncio.CancelledError:
            continue


@workflow.defn
class CancelsOne:
    def __init__(self) -> None:
        self.stop = False

    @workflow.run
    async def run(self, label: str) -> str:
        step = workflow.start_activity(stubborn, label, start_to_close_timeout=timedelta(hours=1))
        await workflow.wait_condition(lambda: self.stop)
        step.cancel()
        await workflow.wait_condition(lambda: False)
        return "never"

    @workflow.signal
    def halt(self) -> None:
        self.stop = True


async def test_an_activity_the_workflow_cancelled_says_so(client: Client) -> None:
    _RELEASE["d3"] = asyncio.Event()
    try:
        async with Worker(client, task_queue="q", workflows=[CancelsOne], activities=[stubborn]):
            handle = await client.start_workflow(CancelsOne.run, "d3", id="d3", task_queue="q")
            await _described(
                handle,
                lambda d: [a.state for a in d.pending_activities] == [PendingActivityState.STARTED],
                "it never started",
            )
            await handle.signal(CancelsOne.halt)
            d = await _described(
                handle,
                lambda d: d.pending_activities[0].cancel_requested,
                "the cancel request never showed",
            )
            assert d.pending_activities[0].state is PendingActivityState.STARTED
            _RELEASE["d3"].set()
            await handle.terminate("done looking")
    finally:
        _RELEASE.clear()


async def test_a_retry_due_with_no_worker_left_waits_and_a_lapsed_lease_shows(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    async with Worker(client, task_queue="q", workflows=[ThreeWays], activities=[rate_limited]):
        handle = await client.start_workflow(ThreeWays.run, "d4", id="d4", task_queue="q")
        await _described(
            handle,
            lambda d: (
                _by_type(d).get("rate_limited") is not None
                and _by_type(d)["rate_limited"].state is PendingActivityState.BACKOFF
            ),
            "it never failed",
        )
    # a worker that claims slow_step and is lost: its lease stays in the store
    clock.t += 60  # past the lean of slow_step to the worker whose run scheduled it
    (task,) = await client.store.claim_activities("q", "lost-box:1:ab", 10)
    assert task.activity_type == "slow_step"
    d = await handle.describe()
    assert _by_type(d)["slow_step"].worker == "lost-box:1:ab"
    clock.t += 2 * 3600  # past the hour's backoff, and past slow_step's lease
    d = await handle.describe()
    running, failing = _by_type(d)["slow_step"], _by_type(d)["rate_limited"]
    assert running.state is PendingActivityState.STARTED
    assert running.lease_expires is not None
    assert running.lease_expires.timestamp() < clock.now()  # lapsed: its worker lost
    assert failing.state is PendingActivityState.SCHEDULED  # due, waiting for a worker
    assert (failing.attempt, failing.next_attempt_time) == (2, None)
    assert failing.able_workers == 0  # the only worker that served it stopped
    assert d.pending_activity_count == 3
    await handle.terminate("done looking")


@workflow.defn
class FansOut:
    @workflow.run
    async def run(self, n: int) -> None:
        await asyncio.gather(
            *(
                workflow.execute_activity(
                    unserved, task_queue="nobody-serves-this", start_to_close_timeout=timedelta(1)
                )
                for _ in range(n)
            )
        )


async def test_a_wide_fan_out_shows_the_first_activities_and_counts_them_all(
    client: Client,
) -> None:
    async with Worker(client, task_queue="q", workflows=[FansOut]):
        handle = await client.start_workflow(FansOut.run, 150, id="wide", task_queue="q")
        d = await _described(handle, lambda d: d.pending_activity_count == 150, "never fanned out")
        assert len(d.pending_activities) == MAX_PENDING_SHOWN
        assert [a.seq for a in d.pending_activities] == sorted(a.seq for a in d.pending_activities)
        await handle.terminate("done looking")
