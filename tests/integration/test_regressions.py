"""Regression tests for bugs found in review (each failed before its fix)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from mainspring import (
    Client,
    EventType,
    Replayer,
    RetryPolicy,
    Worker,
    activity,
    workflow,
)


@activity.defn(task_queue="gpu", retry_policy=RetryPolicy(maximum_attempts=1))
async def render() -> str:
    return "rendered"


@activity.defn
async def local() -> str:
    return "local"


@workflow.defn
class Mixed:
    @workflow.run
    async def run(self) -> list[str]:
        a = workflow.start_activity(render)  # for task queue "gpu"
        b = workflow.start_activity(local)  # for this worker's own queue
        return [await a, await b]


async def test_eager_claims_only_activities_the_worker_can_run(client: Client) -> None:
    async with (
        Worker(client, task_queue="gpu", activities=[render]),
        Worker(client, task_queue="main", workflows=[Mixed], activities=[local]),
    ):
        assert await client.execute_workflow(Mixed.run, id="mixed", task_queue="main") == [
            "rendered",
            "local",
        ]


@activity.defn
async def step(i: int) -> int:
    return i


@workflow.defn
class UntilLong:
    """Stops when its history passes a length: info() must agree live and on replay."""

    @workflow.run
    async def run(self) -> list[int]:
        seen = []
        while workflow.info().history_length < 12:
            seen.append(workflow.info().history_length)
            await step(len(seen))
        return seen


@workflow.defn
class RandomPath:
    @workflow.run
    async def run(self) -> str:
        if workflow.random().random() < 0.5:
            return str(await step(1))
        return str(await local())


async def test_info_and_random_are_the_same_on_replay(client: Client) -> None:
    async with Worker(
        client, task_queue="q", workflows=[UntilLong, RandomPath], activities=[step, local]
    ):
        lengths = await client.execute_workflow(UntilLong.run, id="long", task_queue="q")
        await client.execute_workflow(RandomPath.run, id="random", task_queue="q")
    assert lengths == sorted(lengths) and lengths[0] >= 1
    replayer = Replayer(workflows=[UntilLong, RandomPath])
    replayer.replay(await client.get_workflow_handle("long").fetch_history())
    replayer.replay(await client.get_workflow_handle("random").fetch_history())


started = asyncio.Event()


@activity.defn(retry_policy=RetryPolicy(maximum_attempts=1))
async def charge_card() -> str:
    if activity.info().attempt == 1 and not started.is_set():
        started.set()
        await asyncio.sleep(30)  # interrupted by the worker's shutdown
    return f"charged (attempt {activity.info().attempt})"


@workflow.defn
class Charge:
    @workflow.run
    async def run(self) -> str:
        return str(
            await workflow.execute_activity(
                charge_card, start_to_close_timeout=timedelta(seconds=60)
            )
        )


async def test_shutdown_gives_attempts_back_untried(client: Client) -> None:
    global started
    started = asyncio.Event()  # bound to this test's event loop
    first = Worker(
        client,
        task_queue="pay",
        workflows=[Charge],
        activities=[charge_card],
        graceful_shutdown_timeout=timedelta(milliseconds=50),
    )
    await first.start()
    h = await client.start_workflow(Charge.run, id="charge", task_queue="pay")
    await started.wait()
    await first.shutdown()
    async with Worker(client, task_queue="pay", workflows=[Charge], activities=[charge_card]):
        # maximum_attempts=1: the shutdown must not have used the only attempt up
        assert await h.result(timeout=20) == "charged (attempt 1)"
    failed = [e for e in await h.fetch_history() if e.event_type is EventType.ACTIVITY_TASK_FAILED]
    assert not failed


async def test_run_locks_do_not_accumulate(client: Client) -> None:
    async with Worker(
        client, task_queue="q", workflows=[RandomPath], activities=[step, local]
    ) as w:
        await asyncio.gather(
            *(
                client.execute_workflow(RandomPath.run, id=f"r{i}", task_queue="q")
                for i in range(20)
            )
        )
        runner = w._workflow
        assert len(runner._locks) <= runner.cached_runs
