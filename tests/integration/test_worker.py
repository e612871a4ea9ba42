"""Worker configuration, registration errors and logging."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta as td

import pytest

from mainspring import (
    ActivityError,
    Client,
    EventType,
    Worker,
    WorkerError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    activity,
    workflow,
)
from mainspring.store.records import Wakeup
from tests.integration import agents
from tests.integration.agents import TQ


@activity.defn
async def huge() -> str:
    return "x" * 5000


@workflow.defn
class HugeResult:
    @workflow.run
    async def run(self) -> str:
        try:
            return str(await huge())
        except ActivityError as err:
            return f"{type(err.__cause__).__name__}: {err.__cause__}"


@workflow.defn
class Chatty:
    @workflow.run
    async def run(self) -> str:
        workflow.logger.info("starting chatty")
        await agents.echo("one")
        workflow.logger.info("after one")
        await agents.echo("two")
        return "done"


def test_registration_errors() -> None:
    client = Client.__new__(Client)
    with pytest.raises(WorkerError, match="not a workflow class"):
        Worker(client, task_queue="q", workflows=[int])
    with pytest.raises(WorkerError, match="not an activity"):
        Worker(client, task_queue="q", activities=[print])
    with pytest.raises(WorkerError, match="at least one"):
        Worker(client, task_queue="q")
    with pytest.raises(WorkerError, match="task_queue"):
        Worker(client, task_queue="", workflows=[agents.Hello])
    with pytest.raises(WorkerError, match="max_concurrent_activities"):
        Worker(client, task_queue="q", workflows=[agents.Hello], max_concurrent_activities=0)


@pytest.mark.parametrize(
    ("argument", "value", "error", "message"),
    [
        ("poll_interval", td(0), WorkerError, "poll_interval must be more than 0 s, not 0 s"),
        ("poll_interval", -1.0, WorkerError, "poll_interval must be more than 0 s"),
        ("deadlock_timeout", td(0), WorkerError, "deadlock_timeout must be more than 0 s"),
        ("workflow_task_timeout", 0, WorkerError, "workflow_task_timeout must be more than 0"),
        ("sticky_timeout", float("nan"), WorkerError, "sticky_timeout must be a finite"),
        ("graceful_shutdown_timeout", float("inf"), WorkerError, "must be a finite"),
        ("graceful_shutdown_timeout", -0.5, WorkerError, "must not be negative"),
        ("poll_interval", td(days=8), WorkerError, "poll_interval must be at most 7 days"),
        pytest.param(
            "sticky_timeout", 10**400, WorkerError, "sticky_timeout must be a finite", id="huge"
        ),
        ("poll_interval", "1", TypeError, "poll_interval must be a timedelta or a number"),
        ("deadlock_timeout", True, TypeError, "not bool"),
        pytest.param(
            "max_concurrent_activities", 10**23, WorkerError, "from 1 to 10,000, not 1", id="big"
        ),
        ("max_concurrent_workflow_tasks", 10_001, WorkerError, "from 1 to 10,000"),
        ("max_cached_workflows", 10**7, WorkerError, "from 1 to 1,000,000"),
        ("max_cached_workflows", 2.5, TypeError, "max_cached_workflows must be an int"),
    ],
)
def test_argument_checks(argument: str, value: object, error: type, message: str) -> None:
    client = Client.__new__(Client)
    with pytest.raises(error, match=message):
        Worker(client, task_queue="q", workflows=[agents.Hello], **{argument: value})


async def test_durations_may_be_given_in_seconds(client: Client) -> None:
    w = Worker(
        client,
        task_queue=TQ,
        workflows=[agents.Hello],
        activities=[agents.echo, agents.sync_upper],
        poll_interval=0.05,
        deadlock_timeout=1,
        workflow_task_timeout=5.0,
        sticky_timeout=0,
        graceful_shutdown_timeout=2,
    )
    assert (w._poll, w._sticky, w._grace) == (0.05, 0.0, 2.0)
    async with w:
        out = await client.execute_workflow(
            agents.Hello.run, "seconds", id=f"s-{uuid.uuid4().hex}", task_queue=TQ
        )
    assert out == "HELLO SECONDS"


def test_workflow_definition_errors() -> None:
    with pytest.raises(TypeError, match=r"@workflow\.run"):

        @workflow.defn
        class NoRun:
            pass

    with pytest.raises(TypeError, match="async def"):

        @workflow.defn
        class SyncRun:
            @workflow.run
            def run(self) -> None:  # type: ignore[misc]
                pass

    with pytest.raises(TypeError, match="plain"):

        class AsyncQuery:
            @workflow.query
            async def q(self) -> None:
                pass


async def test_oversized_activity_result_fails_without_retry(client: Client) -> None:
    small = await Client.connect(client.store.url, max_payload_size=1000)
    try:
        async with Worker(small, task_queue=TQ, workflows=[HugeResult], activities=[huge]):
            result = await small.execute_workflow(HugeResult.run, id="huge", task_queue=TQ)
        assert result.startswith("ApplicationError: the result of activity 'huge' is")
        history = await small.get_workflow_handle("huge").fetch_history()
        failed = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_FAILED]
        assert failed[0].attributes["attempt"] == 1
    finally:
        await small.close()


async def test_workflow_logger_is_silent_during_replay(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    from mainspring import Replayer

    caplog.set_level(logging.INFO, logger="mainspring.workflow")
    async with Worker(client, task_queue=TQ, workflows=[Chatty], activities=[agents.echo]):
        h = await client.start_workflow(
            Chatty.run, id=f"chatty-{uuid.uuid4().hex[:6]}", task_queue=TQ
        )
        assert await h.result() == "done"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("starting chatty" in m for m in messages) == 1
    assert sum("after one" in m for m in messages) == 1
    assert any(h.id in m for m in messages)  # lines name the workflow
    caplog.clear()
    Replayer(workflows=[Chatty]).replay(await h.fetch_history())
    assert not [r for r in caplog.records if "chatty" in r.getMessage()]


async def test_workflow_failure_error_carries_the_cause(client: Client) -> None:
    async with Worker(
        client,
        task_queue=TQ,
        workflows=[agents.Failing],
        activities=[agents.always_fails],
        graceful_shutdown_timeout=td(milliseconds=100),
    ):
        h = await client.start_workflow(
            agents.Failing.run, "k", "workflow", id="fails", task_queue=TQ
        )
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
    cause = info.value.cause
    assert cause is not None and "workflow gave up" in str(cause)


async def test_eager_start_decides_the_first_step_in_the_start_commit(client: Client) -> None:
    async with Worker(
        client,
        task_queue=TQ,
        workflows=[agents.Approval, agents.Hello],
        activities=[agents.echo, agents.sync_upper],
    ):
        h = await client.start_workflow(agents.Hello.run, "eager", id="eager", task_queue=TQ)
        history = await h.fetch_history()
        # the start, the first decision and its command share one transaction (one time)
        assert [e.event_type for e in history[:3]] == [
            EventType.WORKFLOW_EXECUTION_STARTED,
            EventType.WORKFLOW_TASK_COMPLETED,
            EventType.ACTIVITY_TASK_SCHEDULED,
        ]
        assert history[0].time == history[1].time == history[2].time
        assert await h.result() == "HELLO EAGER"
        first = await client.start_workflow(agents.Approval.run, 60.0, id="dup", task_queue=TQ)
        with pytest.raises(WorkflowAlreadyStartedError):
            await client.start_workflow(agents.Approval.run, 60.0, id="dup", task_queue=TQ)
        again = await client.start_workflow(
            agents.Approval.run, 60.0, id="dup", task_queue=TQ, id_conflict_policy="use_existing"
        )
        assert again.run_id == first.run_id
        assert len(await client.list_workflows(workflow_type="Approval")) == 1
        await first.terminate()
    from mainspring import Replayer

    Replayer(workflows=[agents.Hello]).replay(await h.fetch_history())


async def test_types_the_local_worker_lacks_start_the_ordinary_way(client: Client) -> None:
    async with Worker(client, task_queue=TQ, workflows=[agents.Approval], activities=[agents.echo]):
        h = await client.start_workflow("Hello", "x", id="not-here", task_queue=TQ)
        history = await h.fetch_history()
        assert history[0].event_type is EventType.WORKFLOW_EXECUTION_STARTED
        assert EventType.WORKFLOW_TASK_COMPLETED not in [e.event_type for e in history]
        await h.terminate()


_gate: dict[str, object] = {}


@activity.defn
async def held() -> int:
    started = _gate["started"]
    release = _gate["release"]
    assert isinstance(started, asyncio.Event) and isinstance(release, asyncio.Event)
    started.set()
    await release.wait()
    return 1


@workflow.defn
class Backlog:
    @workflow.run
    async def run(self) -> int:
        return sum(await asyncio.gather(*(held() for _ in range(4))))


async def test_a_backlog_waiting_for_slots_does_not_spin_the_maintenance_pass(
    client: Client,
) -> None:
    # Three activities wait, ready, for the one slot. That is the pollers' business: the
    # maintenance pass (timers, leases) must keep to its own pace meanwhile, not see
    # ready work as "due now" and run back to back.
    _gate["started"], _gate["release"] = asyncio.Event(), asyncio.Event()
    passes = 0
    real = client.store.maintain

    async def counting(task_queue: str, sticky_wait: float = 0.0) -> Wakeup | None:
        nonlocal passes
        passes += 1
        return await real(task_queue, sticky_wait)

    client.store.maintain = counting  # type: ignore[method-assign]
    tq = f"backlog-{uuid.uuid4().hex[:6]}"
    async with Worker(
        client, task_queue=tq, workflows=[Backlog], activities=[held], max_concurrent_activities=1
    ):
        handle = await client.start_workflow(Backlog.run, id=f"bl-{tq}", task_queue=tq)
        started = _gate["started"]
        assert isinstance(started, asyncio.Event)
        await started.wait()
        before = passes
        await asyncio.sleep(0.5)  # the window observed: passes counted over half a second
        during = passes - before
        release = _gate["release"]
        assert isinstance(release, asyncio.Event)
        release.set()
        assert await handle.result(timeout=30) == 4
    assert during <= 5, f"{during} maintenance passes in 0.5 s while work waited for a slot"


async def test_a_worker_that_was_shut_down_refuses_to_serve_again(client: Client) -> None:
    worker = Worker(client, task_queue="once", workflows=[agents.Hello])
    async with worker:
        pass
    with pytest.raises(WorkerError, match=r"was shut down .*create a new Worker"):
        await worker.run()
    with pytest.raises(WorkerError, match="create a new Worker"):
        async with worker:
            pass
