"""A commit that succeeded but whose acknowledgement was lost duplicates and loses nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from mainspring import (
    Client,
    EventType,
    Replayer,
    RetryPolicy,
    StoreError,
    StoreUnavailableError,
    Worker,
    activity,
    workflow,
)
from mainspring.store.base import Store

TQ = "ambiguous"
ran: dict[tuple[str, int], int] = {}


@activity.defn(
    start_to_close_timeout=timedelta(seconds=1),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
)
async def step(wid: str, i: int) -> int:
    ran[(wid, i)] = ran.get((wid, i), 0) + 1
    return i * i


@workflow.defn
class Steps:
    @workflow.run
    async def run(self, n: int) -> int:
        total = 0
        for i in range(n):
            total += await step(workflow.info().workflow_id, i)
        return total


def lose_acknowledgements(store: Store, every: int) -> list[str]:
    """Make every ``every``-th write raise *after* its transaction committed."""
    lost: list[str] = []
    real = store._run
    count = 0

    async def run(fn: Callable[..., Any], *, readonly: bool = False, **options: Any) -> Any:
        nonlocal count
        result = await real(fn, readonly=readonly, **options)
        if not readonly:
            count += 1
            if count % every == 0:
                lost.append(getattr(fn, "__qualname__", repr(fn)))
                raise StoreError("connection lost while committing (simulated)")
        return result

    store._run = run  # type: ignore[method-assign]
    return lost


async def test_lost_acknowledgements_neither_duplicate_nor_lose_steps(client: Client) -> None:
    lost = lose_acknowledgements(client.store, every=7)
    ids = [f"amb-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)]
    async with Worker(
        client,
        task_queue=TQ,
        workflows=[Steps],
        activities=[step],
        workflow_task_timeout=timedelta(seconds=1),
        graceful_shutdown_timeout=timedelta(milliseconds=200),
    ):
        handles = []
        for wid in ids:
            for _ in range(5):  # the start itself may be the write whose reply is lost
                try:
                    handles.append(
                        await client.start_workflow(
                            Steps.run, 6, id=wid, task_queue=TQ, id_conflict_policy="use_existing"
                        )
                    )
                    break
                except StoreError:
                    continue
        for h in handles:
            for _ in range(10):
                try:
                    assert await h.result(timeout=30) == sum(i * i for i in range(6))
                    break
                except StoreError:
                    continue
    assert lost, "the test injected no failure"
    for h in handles:
        history = await h.fetch_history()
        done = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_COMPLETED]
        assert sorted(e.attributes["seq"] for e in done) == list(range(1, 7))
        assert [e.event_id for e in history] == list(range(1, len(history) + 1))
        Replayer(workflows=[Steps]).replay(history)
        for i in range(6):
            assert ran[(h.id, i)] >= 1


@activity.defn(start_to_close_timeout=timedelta(hours=1))
async def slow_to_expire(x: int) -> int:
    return x + 1


@workflow.defn
class OneStep:
    @workflow.run
    async def run(self, x: int) -> int:
        return await slow_to_expire(x)


async def test_a_lost_acknowledgement_does_not_strand_an_eagerly_leased_activity(
    client: Client, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The decision that schedules the activity also leases it to the deciding worker.
    # If that commit lands but its acknowledgement is lost, the worker must give the
    # attempt back: otherwise it waits out its start_to_close timeout (an hour here).
    real = client.store.complete_workflow_task
    lost: list[str] = []

    async def lose_first(c: Any) -> Any:
        out = await real(c)
        if not lost:
            lost.append(c.run_id)
            raise StoreError("connection lost while committing (simulated)")
        return out

    client.store.complete_workflow_task = lose_first  # type: ignore[method-assign]
    starter = await Client.connect(db_url)  # no worker in its process: no eager start
    try:
        async with Worker(
            client, task_queue="lost-ack", workflows=[OneStep], activities=[slow_to_expire]
        ):
            h = await starter.start_workflow(OneStep.run, 41, id="one", task_queue="lost-ack")
            assert await asyncio.wait_for(h.result(), timeout=60) == 42  # a guard, not a time
    finally:
        await starter.close()
    assert lost and "handed back 1 activity attempt(s)" in caplog.text
    history = await client.get_workflow_handle("one").fetch_history()
    assert [e.event_id for e in history] == list(range(1, len(history) + 1))
    scheduled = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_SCHEDULED]
    assert len(scheduled) == 1  # the decision was recorded once


def lost_while_committing() -> StoreUnavailableError:
    return StoreUnavailableError(
        "the connection to PostgreSQL was lost while committing: the change may or may "
        "not be saved; retry (simulated)"
    )


async def test_a_start_whose_answer_is_lost_starts_one_run_even_if_it_closes_first(
    client: Client,
) -> None:
    # The start commits, its answer is lost, and the run closes before the start is
    # sent again: the client must return that run, not start the workflow a second time
    # (an open-run check alone would find nothing and start it again).
    real = client.store.start_workflow
    lost: list[str] = []

    async def start(**kw: Any) -> tuple[str, bool]:
        out = await real(**kw)
        if not lost:
            lost.append(out[0])
            await client.store.terminate(kw["workflow_id"], out[0], "finished meanwhile")
            raise lost_while_committing()
        return out

    client.store.start_workflow = start  # type: ignore[method-assign]
    h = await client.start_workflow(
        OneStep.run, 1, id="once", task_queue="nobody", id_conflict_policy="use_existing"
    )
    assert lost and h.run_id == lost[0]
    assert [r.run_id for r in await client.list_workflows()] == lost


async def test_an_eager_start_whose_answer_is_lost_runs_once(client: Client) -> None:
    # With a worker in this process, the start and the first decision commit together;
    # when that answer is lost, the start sent again finds the run instead of raising
    # WorkflowAlreadyStartedError (this is its own run) or starting another.
    real = client.store.start_and_decide
    lost: list[str] = []

    async def start_and_decide(**kw: Any) -> Any:
        out = await real(**kw)
        if not lost:
            lost.append(out[0])
            raise lost_while_committing()
        return out

    client.store.start_and_decide = start_and_decide  # type: ignore[method-assign]
    async with Worker(
        client, task_queue="eager-lost", workflows=[OneStep], activities=[slow_to_expire]
    ):
        h = await client.start_workflow(OneStep.run, 1, id="eager", task_queue="eager-lost")
        assert await asyncio.wait_for(h.result(), timeout=60) == 2  # a guard, not a time
    assert lost and h.run_id == lost[0]
    assert [r.run_id for r in await client.list_workflows()] == lost
    history = await h.fetch_history()
    scheduled = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_SCHEDULED]
    assert len(scheduled) == 1


async def test_a_start_that_gets_no_answer_for_the_whole_window_says_so(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mainspring import client as client_module

    monkeypatch.setattr(client_module, "START_RETRY_WINDOW", 0.3)
    sent: list[bool] = []

    async def start(**kw: Any) -> tuple[str, bool]:
        sent.append(kw.get("resent", False))
        raise lost_while_committing()

    client.store.start_workflow = start  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError) as info:
        await client.start_workflow(OneStep.run, 1, id="never", task_queue="nobody")
    assert "workflow 'never' may or may not have started" in str(info.value)
    assert 'id_conflict_policy="use_existing"' in str(info.value)
    assert sent[0] is False and len(sent) > 1 and all(sent[1:])


async def test_a_start_sent_again_into_a_closed_client_says_it_may_have_happened(
    db_url: str,
) -> None:
    # The first start commits and its answer is lost; before it can be sent again,
    # the client is closed. "The store is closed" alone would hide that the workflow
    # may well be running.
    client = await Client.connect(db_url)
    real = client.store.start_workflow

    async def start(**kw: Any) -> tuple[str, bool]:
        await real(**kw)
        await client.close()
        raise lost_while_committing()

    client.store.start_workflow = start  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailableError) as info:
        await client.start_workflow(OneStep.run, 1, id="closing", task_queue="nobody")
    assert "workflow 'closing' may or may not have started: the client was closed" in str(
        info.value
    )
    reader = await Client.connect(db_url)
    try:
        assert [r.workflow_id for r in await reader.list_workflows()] == ["closing"]
    finally:
        await reader.close()
