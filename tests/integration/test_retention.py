"""Retention: pruning runs that closed long ago, on both stores."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta as td

import psycopg
import pytest

from mainspring import Client, Worker, WorkflowNotFoundError
from mainspring.retry import RetryPolicy
from mainspring.runtime.commands import CompleteWorkflow, ScheduleActivity
from mainspring.store.records import WorkflowTaskCompletion
from tests._clock import ManualClock
from tests.integration import agents
from tests.integration.agents import ALL_ACTIVITIES, ALL_WORKFLOWS, TQ

HOUR = 3600.0
TABLES = ("runs", "events", "activities", "timers", "queries")


def rows_of(db_url: str, run_ids: list[str]) -> dict[str, int]:
    """How many rows each Mainspring table holds for ``run_ids`` (read with the driver)."""
    counts: dict[str, int] = {}
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            for t in TABLES:
                marks = ",".join("?" * len(run_ids))
                sql = f"SELECT count(*) FROM mainspring_{t} WHERE run_id IN ({marks})"
                counts[t] = conn.execute(sql, run_ids).fetchone()[0]
        return counts
    with psycopg.connect(db_url) as conn:
        for t in TABLES:
            sql = f"SELECT count(*) FROM mainspring.mainspring_{t} WHERE run_id = ANY(%s)"
            row = conn.execute(sql, [run_ids]).fetchone()
            assert row is not None
            counts[t] = row[0]
    return counts


@pytest.fixture
async def worker(clocked: tuple[Client, ManualClock]) -> AsyncIterator[Worker]:
    async with Worker(
        clocked[0],
        task_queue=TQ,
        workflows=ALL_WORKFLOWS,
        activities=ALL_ACTIVITIES,
        graceful_shutdown_timeout=td(milliseconds=200),
    ) as w:
        yield w


async def test_prune_deletes_old_closed_runs_whole_and_nothing_else(
    db_url: str, clocked: tuple[Client, ManualClock], worker: Worker
) -> None:
    client, clock = clocked
    old = [
        await client.execute_workflow(agents.Hello.run, f"n{i}", id=f"old-{i}", task_queue=TQ)
        for i in range(3)
    ]
    assert old == ["HELLO N0", "HELLO N1", "HELLO N2"]
    # an open run as old as they are, with a query left answered in its table
    waiting = await client.start_workflow(agents.Approval.run, 10 * HOUR, id="open", task_queue=TQ)
    assert await waiting.query(agents.Approval.status) == "waiting"
    # a run closed by force, with a query left in its table too
    doomed = await client.start_workflow(agents.Approval.run, 10 * HOUR, id="ended", task_queue=TQ)
    assert await doomed.query(agents.Approval.status) == "waiting"
    await doomed.terminate("enough")

    clock.t += 2 * HOUR
    recent = await client.execute_workflow(agents.Hello.run, "new", id="recent", task_queue=TQ)
    assert recent == "HELLO NEW"
    kept_history = await client.get_workflow_handle("recent").fetch_history()
    old_ids = [
        (await client.get_workflow_handle(w).describe()).run_id
        for w in ["old-0", "old-1", "old-2", "ended"]
    ]
    kept_ids = [(await client.get_workflow_handle(w).describe()).run_id for w in ["open", "recent"]]
    assert rows_of(db_url, old_ids)["events"] > 0

    assert await client.prune_closed_runs(td(hours=1), dry_run=True) == 4
    assert rows_of(db_url, old_ids)["runs"] == 4  # the dry run deleted nothing
    assert await client.prune_closed_runs(td(hours=1)) == 4

    assert rows_of(db_url, old_ids) == dict.fromkeys(TABLES, 0)
    for wid in ["old-0", "old-1", "old-2", "ended"]:
        with pytest.raises(WorkflowNotFoundError):
            await client.get_workflow_handle(wid).describe()
    assert rows_of(db_url, kept_ids)["runs"] == 2
    assert await client.get_workflow_handle("recent").fetch_history() == kept_history
    assert await client.prune_closed_runs(td(hours=1)) == 0  # nothing left to do

    # the open run, older than the cutoff, was left alone and still works
    await waiting.signal(agents.Approval.decide, "yes")
    assert await waiting.result() == "decided yes after 1 signal(s)"
    # and an id whose runs were pruned can be used again
    assert await client.execute_workflow(agents.Hello.run, "again", id="old-0", task_queue=TQ) == (
        "HELLO AGAIN"
    )


async def test_prune_walks_runs_in_batches_even_when_they_were_created_at_one_instant(
    db_url: str, clocked: tuple[Client, ManualClock]
) -> None:
    """The manual clock stands still: every run has the same creation time, so the
    batches must be told apart by run id."""
    client, clock = clocked
    s = client.store
    for i in range(23):
        await s.start_workflow(workflow_id=f"w{i}", workflow_type="W", task_queue="q", input="[]")
        await s.terminate(f"w{i}", None, "test")
    await s.start_workflow(workflow_id="open", workflow_type="W", task_queue="q", input="[]")
    clock.t += HOUR
    assert await s.count_prunable(clock.t) == 23
    assert await s.prune_closed_runs(clock.t, batch=5) == 23
    assert await s.count_prunable(clock.t) == 0
    assert [r.workflow_id for r in await s.list_runs()] == ["open"]


async def test_concurrent_prunes_delete_each_run_once(
    db_url: str, clocked: tuple[Client, ManualClock]
) -> None:
    client, clock = clocked
    s = client.store
    for i in range(30):
        await s.start_workflow(workflow_id=f"w{i}", workflow_type="W", task_queue="q", input="[]")
        await s.terminate(f"w{i}", None, "test")
        clock.t += 1
    clock.t += HOUR
    other = await Client.connect(db_url, clock=clock)  # another process would do the same
    try:
        counts = await asyncio.gather(
            s.prune_closed_runs(clock.t, batch=4),
            other.store.prune_closed_runs(clock.t, batch=3),
            s.prune_closed_runs(clock.t, batch=7),
        )
    finally:
        await other.close()
    assert sum(counts) == 30
    assert await s.list_runs() == []


async def test_a_late_report_from_an_activity_of_a_pruned_run_is_refused(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    s = client.store
    run_id, _ = await s.start_workflow(
        workflow_id="w", workflow_type="W", task_queue="q", input="[]"
    )
    [wft] = await s.claim_workflow_tasks("q", "w1", 1, 60, {})
    schedule = ScheduleActivity(
        seq=1,
        activity_type="a",
        task_queue="q",
        input="[]",
        options={"start_to_close_timeout": 5 * HOUR, "retry_policy": RetryPolicy().to_dict()},
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
    [attempt] = out.eager  # running on w1 when the run is terminated, then pruned
    await s.terminate("w", None, "test")
    clock.t += 2 * HOUR
    assert await s.prune_closed_runs(clock.t - HOUR) == 1

    assert await s.heartbeat_activity(attempt, None) is True  # stop
    assert await s.complete_activity(attempt, '"late"') is False
    closing = WorkflowTaskCompletion(
        run_id=run_id,
        fence=wft.fence,
        owner="w1",
        through=out.history_length,
        time=0.0,
        commands=[CompleteWorkflow(result='"late"')],
    )
    assert await s.complete_activity_and_decide(attempt, '"late"', out.history_length, closing) is (
        None
    )
    assert await s.fail_activity(attempt, {"type": "X", "message": "late"}) is False
    assert await s.list_runs() == []


@pytest.mark.parametrize("older_than", [0, 59.9, td(minutes=59), 3599.9, -HOUR, math.nan])
async def test_a_retention_shorter_than_an_hour_is_refused(
    client: Client, older_than: float | td
) -> None:
    await client.store.start_workflow(
        workflow_id="w", workflow_type="W", task_queue="q", input="[]"
    )
    await client.store.terminate("w", None, "test")
    with pytest.raises(
        ValueError, match=r"older_than must (be at least 3600 seconds|be a finite|not be negative)"
    ):
        await client.prune_closed_runs(older_than)
    assert len(await client.store.list_runs()) == 1


async def test_a_start_re_sent_minutes_later_still_finds_its_run_under_the_least_retention(
    clocked: tuple[Client, ManualClock],
) -> None:
    # A start whose answer was lost is sent again and finds its run by id; had the run
    # been pruned meanwhile, the re-send would start it a second time. A re-send may
    # arrive a minute or more after the first commit (and clocks differ): the least
    # retention allowed must leave the run there that long.
    from mainspring import client as client_module

    client, clock = clocked
    s = client.store
    run_id, started = await s.start_workflow(
        workflow_id="pay", workflow_type="W", task_queue="q", input="[]", run_id="r-pay"
    )
    assert started
    await s.terminate("pay", None, "done quickly")
    clock.t += 5 * 60  # a straggling re-send, on a machine whose clock runs ahead
    assert await client.prune_closed_runs(client_module.MIN_RETENTION) == 0
    again = await s.start_workflow(
        workflow_id="pay",
        workflow_type="W",
        task_queue="q",
        input="[]",
        run_id="r-pay",
        resent=True,
    )
    assert again == (run_id, True)  # the first send started it: the same answer
    assert [r.run_id for r in await s.list_runs()] == [run_id]


async def test_a_worker_with_a_retention_prunes_when_it_starts(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    s = client.store
    for wid in ["a", "b"]:
        await s.start_workflow(workflow_id=wid, workflow_type="W", task_queue="q", input="[]")
        await s.terminate(wid, None, "test")
    await s.start_workflow(workflow_id="open", workflow_type="W", task_queue="q", input="[]")
    clock.t += 2 * HOUR
    await s.start_workflow(workflow_id="recent", workflow_type="W", task_queue="q", input="[]")
    await s.terminate("recent", None, "test")
    async with Worker(
        client,
        task_queue=TQ,
        workflows=ALL_WORKFLOWS,
        retention=td(hours=1),
        graceful_shutdown_timeout=0,
    ):
        for _ in range(1000):  # the worker's first prune runs as it starts; 10 s at most
            left = sorted(r.workflow_id for r in await s.list_runs())
            if left == ["open", "recent"]:
                break
            await asyncio.sleep(0.01)
    assert left == ["open", "recent"]


@pytest.mark.parametrize("retention", [59 * 60, td(minutes=30), 0])
def test_a_worker_retention_under_an_hour_is_refused(client: Client, retention: object) -> None:
    from mainspring import WorkerError

    with pytest.raises(WorkerError, match="retention must be at least an hour"):
        Worker(client, task_queue=TQ, workflows=ALL_WORKFLOWS, retention=retention)  # type: ignore[arg-type]
