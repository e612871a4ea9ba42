"""Workers say they are alive: `Client.list_workers` shows which serve, on which
machines, and which stopped; describe counts the live workers able to take a queued
activity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from mainspring import Client, StoreUnavailableError, Worker, WorkerInfo, WorkerState
from mainspring.store import _worker_ops
from tests._clock import ManualClock
from tests.integration.agents import Hello, echo, sync_upper


async def _until(
    client: Client, ok: Callable[[list[WorkerInfo]], bool], what: str
) -> list[WorkerInfo]:
    deadline = time.monotonic() + 30
    while True:
        found = await client.list_workers()
        if ok(found):
            return found
        assert time.monotonic() < deadline, f"{what}: {found}"
        await asyncio.sleep(0.02)


async def test_a_worker_is_listed_while_it_serves_and_after_it_stops(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_worker_ops, "WORKER_HEARTBEAT", 0.05)
    assert await client.list_workers() == []
    worker = Worker(
        client, task_queue="q", workflows=[Hello], activities=[echo, sync_upper], identity="box-1"
    )
    async with worker:
        (info,) = await client.list_workers()
        assert info.identity == "box-1" and info.task_queue == "q"
        assert info.state is WorkerState.SERVING and info.stopped_time is None
        assert info.workflows == ("Hello",)
        assert info.activities == ("echo", "sync_upper")
        started = info.started_time
        # it says it is alive again and again while it serves
        await _until(client, lambda w: w[0].last_seen > started, "never marked alive again")
    (info,) = await client.list_workers()
    assert info.state is WorkerState.STOPPED
    assert info.stopped_time is not None and info.stopped_time >= info.started_time
    assert await client.list_workers(task_queue="other") == []


async def test_a_worker_not_seen_for_a_minute_is_lost_and_forgotten_after_a_day(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    gone = Worker(client, task_queue="q", activities=[echo], identity="gone")
    await gone.start()
    try:
        clock.t += _worker_ops.WORKER_LOST + 1  # no mark since: as if its process died
        (info,) = await client.list_workers()
        assert info.identity == "gone" and info.state is WorkerState.LOST
        clock.t += _worker_ops.WORKER_FORGET
        async with Worker(client, task_queue="q", activities=[echo], identity="new"):
            # a worker that starts deletes the rows of workers gone for a day
            assert [w.identity for w in await client.list_workers()] == ["new"]
    finally:
        await gone.shutdown()


async def test_two_workers_of_one_identity_are_two_rows(client: Client) -> None:
    async with (
        Worker(client, task_queue="q", activities=[echo], identity="same"),
        Worker(client, task_queue="q", activities=[echo], identity="same"),
    ):
        found = await client.list_workers(task_queue="q")
        assert [w.identity for w in found] == ["same", "same"]
        assert all(w.state is WorkerState.SERVING for w in found)


async def test_a_worker_whose_start_fails_is_not_listed_as_serving(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def blip(task_queue: str) -> None:
        raise StoreUnavailableError("cannot reach the database (simulated)")

    monkeypatch.setattr(client.store, "reset_backoff", blip)
    for _ in range(2):
        with pytest.raises(StoreUnavailableError):
            async with Worker(client, task_queue="q", workflows=[Hello]):
                pass
    monkeypatch.undo()
    assert await client.list_workers() == []
    assert [t for t in asyncio.all_tasks() if "_say_alive" in repr(t)] == []


async def test_a_worker_whose_row_went_missing_writes_it_again(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration that failed, or a row forgotten while its worker was cut off for a
    day: the next mark writes it again, so a serving worker is never missing for long."""
    monkeypatch.setattr(_worker_ops, "WORKER_HEARTBEAT", 0.05)
    real = client.store.register_worker

    async def fails(worker: object) -> None:
        raise StoreUnavailableError("cannot reach the database (simulated)")

    monkeypatch.setattr(client.store, "register_worker", fails)
    async with Worker(client, task_queue="q", activities=[echo], identity="back"):
        monkeypatch.setattr(client.store, "register_worker", real)
        found = await _until(client, lambda w: len(w) == 1, "its row never came")
        assert found[0].identity == "back" and found[0].state is WorkerState.SERVING
    (info,) = await client.list_workers()
    assert info.state is WorkerState.STOPPED  # and a late mark does not bring it back


async def test_workers_gone_a_day_are_not_listed_even_before_they_are_deleted(
    clocked: tuple[Client, ManualClock],
) -> None:
    client, clock = clocked
    async with Worker(client, task_queue="q", activities=[echo], identity="old"):
        pass
    assert len(await client.list_workers()) == 1
    clock.t += _worker_ops.WORKER_FORGET + 1
    assert await client.list_workers() == []
