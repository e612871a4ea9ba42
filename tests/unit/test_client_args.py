"""Client and WorkflowHandle refuse bad arguments at once, each in one clear line."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from mainspring import Client, PayloadError


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = await Client.connect("memory://")
    try:
        yield c
    finally:
        await c.close()


BAD_TIMEOUTS = [math.nan, math.inf, -1.0, timedelta(seconds=-1), 10**400]
BAD_IDS = ["nan", "inf", "negative", "negative-timedelta", "huge-int"]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=BAD_IDS)
async def test_result_refuses_a_nan_infinite_or_negative_timeout(
    client: Client, timeout: float | timedelta
) -> None:
    await client.start_workflow("W", id="w", task_queue="q")
    with pytest.raises(ValueError, match=r"timeout must (be a finite duration|not be negative)"):
        await client.get_workflow_handle("w").result(timeout=timeout)


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=BAD_IDS)
async def test_query_refuses_a_nan_infinite_or_negative_timeout(
    client: Client, timeout: float | timedelta
) -> None:
    await client.start_workflow("W", id="w", task_queue="q")
    with pytest.raises(ValueError, match=r"timeout must (be a finite duration|not be negative)"):
        await client.get_workflow_handle("w").query("state", timeout=timeout)


async def test_timeouts_that_are_not_numbers_are_type_errors(client: Client) -> None:
    handle = client.get_workflow_handle("w")
    with pytest.raises(TypeError, match="not str"):
        await handle.result(timeout="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not str"):
        await handle.query("state", timeout="5")  # type: ignore[arg-type]


async def test_a_zero_result_timeout_still_asks_once(client: Client) -> None:
    await client.start_workflow("W", id="w", task_queue="q")
    with pytest.raises(TimeoutError, match="did not close within 0 s"):
        await client.get_workflow_handle("w").result(timeout=0)


async def test_an_unknown_status_names_the_valid_ones(client: Client) -> None:
    with pytest.raises(ValueError, match=r"status must be one of 'running', 'completed', "):
        await client.list_workflows(status="bogus")
    assert await client.list_workflows(status="Running") == []


async def test_an_argument_nested_too_deeply_is_a_payload_error(client: Client) -> None:
    value: list[object] = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(PayloadError, match="too deeply"):
        await client.start_workflow("W", value, id="deep", task_queue="q")
    assert await client.list_workflows() == []  # nothing was stored
