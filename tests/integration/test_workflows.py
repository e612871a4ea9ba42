"""End-to-end behaviour of workflows and activities on a real store."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from datetime import timedelta as td

import pytest

from mainspring import (
    Client,
    EventType,
    Replayer,
    Worker,
    WorkflowFailureError,
    WorkflowStatus,
)
from tests.integration import agents
from tests.integration.agents import ALL_ACTIVITIES, ALL_WORKFLOWS, TQ


@pytest.fixture
async def worker(client: Client) -> AsyncIterator[Worker]:
    async with Worker(
        client,
        task_queue=TQ,
        workflows=ALL_WORKFLOWS,
        activities=ALL_ACTIVITIES,
        deadlock_timeout=td(milliseconds=500),
        graceful_shutdown_timeout=td(milliseconds=200),
    ) as w:
        yield w


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def events_of(client: Client, wid: str) -> list[EventType]:
    return [e.event_type for e in await client.get_workflow_handle(wid).fetch_history()]


async def test_hello_async_and_sync_activities(client: Client, worker: Worker) -> None:
    result = await client.execute_workflow(
        agents.Hello.run, "world", id=uid("hello"), task_queue=TQ
    )
    assert result == "HELLO WORLD"


async def test_workflow_by_string_name_and_custom_name(client: Client, worker: Worker) -> None:
    assert await client.execute_workflow("Hello", "x", id=uid("s"), task_queue=TQ) == "HELLO X"
    assert await client.execute_workflow("custom-name", id=uid("n"), task_queue=TQ) == "named"


async def test_history_records_every_step_with_timestamps(client: Client, worker: Worker) -> None:
    wid = uid("hist")
    await client.execute_workflow(agents.Hello.run, "h", id=wid, task_queue=TQ)
    history = await client.get_workflow_handle(wid).fetch_history()
    types = [e.event_type for e in history]
    assert types[0] is EventType.WORKFLOW_EXECUTION_STARTED
    assert types[-1] is EventType.WORKFLOW_EXECUTION_COMPLETED
    assert types.count(EventType.ACTIVITY_TASK_SCHEDULED) == 2
    assert types.count(EventType.ACTIVITY_TASK_COMPLETED) == 2
    assert [e.event_id for e in history] == list(range(1, len(history) + 1))
    assert all(e.timestamp.tzinfo is UTC for e in history)
    assert history[0].timestamp <= history[-1].timestamp
    Replayer(workflows=ALL_WORKFLOWS).replay(history)


async def test_signal_query_and_wait_condition(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(agents.Approval.run, 30.0, id=uid("ap"), task_queue=TQ)
    assert await h.query(agents.Approval.status) == "waiting"
    await h.signal(agents.Approval.decide, "yes")
    await h.signal("decide", "ignored")
    assert await h.result() in ("decided yes after 1 signal(s)", "decided yes after 2 signal(s)")
    history = await h.fetch_history()
    assert [e.event_type for e in history].count(EventType.WORKFLOW_EXECUTION_SIGNALED) == 2


async def test_wait_condition_timeout(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(agents.Approval.run, 0.1, id=uid("exp"), task_queue=TQ)
    assert await h.result() == "expired"
    types = await events_of(client, h.id)
    assert EventType.TIMER_FIRED in types


async def test_activity_retries_then_succeeds(client: Client, worker: Worker) -> None:
    key = uid("flaky")
    result = await client.execute_workflow(agents.Retrying.run, key, 2, id=key, task_queue=TQ)
    assert result == "ok after 3"
    history = await client.get_workflow_handle(key).fetch_history()
    done = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_COMPLETED]
    assert len(done) == 1 and done[0].attributes["attempt"] == 3


async def test_activity_exhausts_attempts_and_fails_workflow(
    client: Client, worker: Worker
) -> None:
    key = uid("always")
    h = await client.start_workflow(agents.Failing.run, key, "always", id=key, task_queue=TQ)
    with pytest.raises(WorkflowFailureError) as info:
        await h.result()
    assert agents.calls[key] == 3
    err = info.value
    assert err.status == "FAILED"
    assert err.failure is not None and err.failure.type == "ActivityError"
    assert err.failure.cause is not None
    assert err.failure.cause.type == "ValueError" and err.failure.cause.message == "boom"
    assert "ValueError" in err.failure.cause.stack
    assert (await h.describe()).status is WorkflowStatus.FAILED


async def test_non_retryable_application_error(client: Client, worker: Worker) -> None:
    key = uid("refuses")
    h = await client.start_workflow(agents.Failing.run, key, "refuses", id=key, task_queue=TQ)
    with pytest.raises(WorkflowFailureError):
        await h.result()
    assert agents.calls[key] == 1


async def test_workflow_catches_activity_error_with_cause(client: Client, worker: Worker) -> None:
    key = uid("catch")
    result = await client.execute_workflow(
        agents.CatchesActivityError.run, key, id=key, task_queue=TQ
    )
    assert result == "ActivityError<-ApplicationError:boom"


async def test_application_error_fails_workflow(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(
        agents.Failing.run, "k", "workflow", id=uid("wf"), task_queue=TQ
    )
    with pytest.raises(WorkflowFailureError) as info:
        await h.result()
    assert info.value.failure is not None and info.value.failure.type == "GaveUp"


async def test_gather_of_many_activities(client: Client, worker: Worker) -> None:
    result = await client.execute_workflow(agents.Parallel.run, 30, id=uid("par"), task_queue=TQ)
    assert result == [str(i) for i in range(30)]


async def test_asyncio_primitives_and_replay(client: Client, worker: Worker) -> None:
    wid = uid("prim")
    result = await client.execute_workflow(agents.Primitives.run, id=wid, task_queue=TQ)
    assert result == ["item0", "item1", "item2", "timed out", "slept"]
    Replayer(workflows=ALL_WORKFLOWS).replay(await client.get_workflow_handle(wid).fetch_history())


async def test_deterministic_helpers_replay_identically(client: Client, worker: Worker) -> None:
    wid = uid("det")
    result = await client.execute_workflow(agents.Deterministic.run, id=wid, task_queue=TQ)
    assert result["workflow_id"] == wid and result["task_queue"] == TQ
    assert result["advanced"] is True
    uuid.UUID(str(result["u"]))
    Replayer(workflows=ALL_WORKFLOWS).replay(await client.get_workflow_handle(wid).fetch_history())


async def test_durable_sleep(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(agents.Sleeper.run, 0.2, id=uid("sleep"), task_queue=TQ)
    assert await h.result() == "awake"
    history = await h.fetch_history()
    started = next(e for e in history if e.event_type is EventType.TIMER_STARTED)
    fired = next(e for e in history if e.event_type is EventType.TIMER_FIRED)
    assert fired.time - started.time >= 0.19


async def test_heartbeat_details_reach_the_next_attempt(client: Client, worker: Worker) -> None:
    key = uid("hb")
    assert await client.execute_workflow(agents.Heartbeats.run, key, id=key, task_queue=TQ) == 3


@pytest.mark.parametrize("kind", ["start_to_close", "schedule_to_close"])
async def test_activity_timeouts(client: Client, worker: Worker, kind: str) -> None:
    result = await client.execute_workflow(agents.Timeouts.run, kind, id=uid(kind), task_queue=TQ)
    assert result == f"TimeoutFailure:{kind}"


async def test_activity_info_and_idempotency_key(client: Client, worker: Worker) -> None:
    wid = uid("info")
    h = await client.start_workflow(agents.Info.run, id=wid, task_queue=TQ)
    info = await h.result()
    assert info["attempt"] == 1 and info["workflow_id"] == wid and info["activity_id"] == "1"
    assert info["key"] == f"{wid}/{h.run_id}/1"


async def test_typed_payloads_round_trip(client: Client, worker: Worker) -> None:
    order = agents.Order(
        id=uuid.uuid4(),
        placed=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        color=agents.Color.BLUE,
        items=["a\x00b", "ü"],
        total=math.inf,
    )
    out = await client.execute_workflow(agents.Orders.run, order, id=uid("ord"), task_queue=TQ)
    assert isinstance(out, agents.Order)
    assert out.id == order.id and out.placed == order.placed and out.color is agents.Color.BLUE
    assert out.items == ["a\x00b", "ü", "gift"] and out.total == math.inf


async def test_nan_round_trips(client: Client, worker: Worker) -> None:
    out = await client.execute_workflow(agents.Hello.run, "nan", id=uid("nan"), task_queue=TQ)
    assert out == "HELLO NAN"
    h = await client.start_workflow("Approval", math.nan, id=uid("nanarg"), task_queue=TQ)
    history = await h.fetch_history()
    assert "NaN" in history[0].attributes["input"]
    await h.terminate("done")


async def test_cancel_runs_cleanup_and_ends_cancelled(client: Client, worker: Worker) -> None:
    key = uid("cancel")
    h = await client.start_workflow(agents.Cancellable.run, key, id=key, task_queue=TQ)
    while await h.query(agents.Cancellable.where) != "waiting":
        await asyncio.sleep(0.01)
    await h.cancel()
    with pytest.raises(WorkflowFailureError) as info:
        await h.result()
    assert info.value.status == "CANCELED"
    types = await events_of(client, key)
    assert EventType.WORKFLOW_EXECUTION_CANCEL_REQUESTED in types
    assert EventType.ACTIVITY_TASK_CANCEL_REQUESTED in types
    assert types.count(EventType.ACTIVITY_TASK_SCHEDULED) == 2  # the waiter and the cleanup
    assert types[-1] is EventType.WORKFLOW_EXECUTION_CANCELED


async def test_terminate(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(agents.Approval.run, 60.0, id=uid("term"), task_queue=TQ)
    await h.terminate(reason="operator said so")
    with pytest.raises(WorkflowFailureError) as info:
        await h.result()
    assert info.value.status == "TERMINATED"
    assert "operator said so" in str(info.value)
    d = await h.describe()
    assert d.status is WorkflowStatus.TERMINATED and d.close_time is not None


async def test_list_workflows_filters(client: Client, worker: Worker) -> None:
    await client.execute_workflow(agents.Hello.run, "a", id=uid("l1"), task_queue=TQ)
    h = await client.start_workflow(agents.Approval.run, 60.0, id=uid("l2"), task_queue=TQ)
    running = await client.list_workflows(status="running")
    assert [d.workflow_id for d in running] == [h.id]
    hellos = await client.list_workflows(workflow_type="Hello")
    assert len(hellos) == 1 and hellos[0].status is WorkflowStatus.COMPLETED
    await h.terminate()


async def test_evicted_runs_are_replayed_when_they_wake(client: Client) -> None:
    async with Worker(
        client,
        task_queue=TQ,
        workflows=ALL_WORKFLOWS,
        activities=ALL_ACTIVITIES,
        max_cached_workflows=1,
    ) as w:
        handles = [
            await client.start_workflow(agents.Approval.run, 60.0, id=uid("ev"), task_queue=TQ)
            for _ in range(4)
        ]
        for h in handles:
            assert await h.query(agents.Approval.status) == "waiting"
        assert w.cached_workflows <= 1
        for h in handles:
            await h.signal(agents.Approval.decide, "ok")
        for h in handles:
            assert await h.result() == "decided ok after 1 signal(s)"


async def test_result_timeout(client: Client, worker: Worker) -> None:
    from mainspring import WorkflowResultTimeoutError

    h = await client.start_workflow(agents.Approval.run, 60.0, id=uid("rt"), task_queue=TQ)
    with pytest.raises(WorkflowResultTimeoutError):
        await h.result(timeout=0.05)
    await h.terminate()


async def test_heartbeat_timeout_retries_a_silent_attempt(client: Client, worker: Worker) -> None:
    key = uid("hbt")
    h = await client.start_workflow(agents.HeartbeatTimeout.run, key, id=key, task_queue=TQ)
    assert await h.result(timeout=20) == "attempt 2"
    done = [e for e in await h.fetch_history() if e.event_type is EventType.ACTIVITY_TASK_COMPLETED]
    assert done[0].attributes["attempt"] == 2


async def test_next_retry_delay_overrides_the_policy(client: Client, worker: Worker) -> None:
    key = uid("nrd")
    result = await client.execute_workflow(agents.QuickRetry.run, key, id=key, task_queue=TQ)
    assert result == "retried quickly"
    assert agents.calls[key] == 2
