"""A write whose caller stopped waiting still reports that it is over (``orphaned``)."""

from __future__ import annotations

import asyncio

import pytest

from mainspring.store._group_commit import _deliver, _Op, outcome


async def test_a_caller_cancelled_after_the_outcome_came_in_runs_the_hook() -> None:
    # asyncio drops an outcome that arrives just before its awaiting task is cancelled
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    orphaned: list[str] = []
    waiting = asyncio.create_task(outcome(fut, lambda: orphaned.append("written")))
    await asyncio.sleep(0)  # it awaits the op's future
    fut.set_result(1)  # the commit is over…
    waiting.cancel()  # …and its caller is cancelled before it resumed
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert orphaned == ["written"]


async def test_a_caller_cancelled_before_the_outcome_came_in_runs_the_hook_on_delivery() -> None:
    loop = asyncio.get_running_loop()
    orphaned: list[str] = []
    write = _Op(
        lambda tx: None, loop.create_future(), loop, False, orphaned=lambda: orphaned.append("w")
    )
    read = _Op(
        lambda tx: None, loop.create_future(), loop, True, orphaned=lambda: orphaned.append("r")
    )
    waiting = asyncio.create_task(outcome(write.fut, write.orphaned))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    read.fut.cancel()
    assert orphaned == []  # not yet: the write is still to commit
    _deliver([write, read])  # the batch committed
    assert orphaned == ["w"]  # the write's hook ran; a read changes nothing


async def test_an_outcome_awaited_to_the_end_runs_no_hook() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    orphaned: list[str] = []
    fut.set_result(7)
    assert await outcome(fut, lambda: orphaned.append("x")) == 7
    assert orphaned == []
