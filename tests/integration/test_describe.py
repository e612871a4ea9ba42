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

            assert queued.state is PendingActivityState.SCHEDULED
            assert queued.task_queue == "nobody-serves-this"
            assert queued.attempt == 1 and queued.worker is None
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
