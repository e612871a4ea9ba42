"""Names at the limit work end to end on every store, and names past it are refused
before anything is written, the same on SQLite as on PostgreSQL (whose text cannot hold
NUL and whose indexes take at most 2,704 bytes an entry)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from mainspring import Client, InvalidNameError, Worker, activity, workflow
from mainspring._names import MAX_NAME_BYTES
from tests.integration.test_failures import wait_until


def incompressible(n_bytes: int, seed: int) -> str:
    """``n_bytes`` of UTF-8 that no index compression shrinks: random 2-byte letters."""
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(0x100, 0x800)) for _ in range(n_bytes // 2))


def handle_type(cls: type) -> str:
    return str(cls.__mainspring_workflow__.name)  # type: ignore[attr-defined]


LONG_SIGNAL = incompressible(MAX_NAME_BYTES, 3)
LONG_ACTIVITY = incompressible(MAX_NAME_BYTES, 4)


@activity.defn(name=LONG_ACTIVITY)
async def echo(text: str) -> str:
    return text


@workflow.defn(name=incompressible(MAX_NAME_BYTES, 5))
class AtTheLimit:
    def __init__(self) -> None:
        self.go = False

    @workflow.run
    async def run(self, text: str) -> str:
        await workflow.wait_condition(lambda: self.go)
        return str(
            await workflow.execute_activity(echo, text, start_to_close_timeout=timedelta(seconds=5))
        )

    @workflow.signal(name=LONG_SIGNAL)
    def proceed(self) -> None:
        self.go = True


async def test_names_of_the_largest_size_allowed_work_end_to_end(client: Client) -> None:
    wid, tq = incompressible(MAX_NAME_BYTES, 1), incompressible(MAX_NAME_BYTES, 2)
    assert len(wid.encode()) == len(tq.encode()) == MAX_NAME_BYTES
    async with Worker(client, task_queue=tq, workflows=[AtTheLimit], activities=[echo]):
        handle = await client.start_workflow(AtTheLimit.run, "hi", id=wid, task_queue=tq)
        await handle.signal(LONG_SIGNAL)
        assert await handle.result() == "hi"
    [run] = await client.list_workflows(workflow_type=handle_type(AtTheLimit))
    assert (run.workflow_id, run.task_queue) == (wid, tq)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"id": "a\x00b", "task_queue": "q"}, "workflow id 'a\\x00b' holds the NUL"),
        ({"id": "x" * 1001, "task_queue": "q"}, "workflow id"),
        ({"id": "ok", "task_queue": incompressible(3000, 6)}, "task_queue"),
    ],
)
async def test_a_start_with_a_name_past_the_rule_writes_nothing(
    client: Client, kwargs: dict[str, str], says: str
) -> None:
    with pytest.raises(InvalidNameError, match=None) as err:
        await client.start_workflow("T", **kwargs)
    assert says in str(err.value)
    assert await client.list_workflows() == []
    with pytest.raises(InvalidNameError, match="workflow name"):
        await client.start_workflow("T\x00", id="ok", task_queue="q")
    with pytest.raises(InvalidNameError, match="workflow id"):
        client.get_workflow_handle("a\x00b")


@workflow.defn
class BadQueue:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            echo, "x", task_queue="q\x00", start_to_close_timeout=timedelta(seconds=5)
        )


async def test_workflow_code_scheduling_on_a_bad_queue_blocks_its_run_saying_why(
    client: Client,
) -> None:
    # a bug in the workflow code: its task fails (the run waits for a fix), never a
    # database error on one store and a stored name on the other
    async with Worker(client, task_queue="bad", workflows=[BadQueue], activities=[echo]):
        handle = await client.start_workflow(BadQueue.run, id="bad", task_queue="bad")

        async def blocked() -> bool:
            return (await handle.describe()).blocked

        await wait_until(blocked, "the run to be blocked")
    failure = (await handle.describe()).workflow_task_failure
    assert failure is not None and failure.type == "InvalidNameError"
    assert "activity task_queue 'q\\x00' holds the NUL character" in failure.message
    await handle.terminate()
