"""Failure semantics and bad input: clear errors, and nothing lost or corrupted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta as td

import pytest

from mainspring import (
    ActivityError,
    ApplicationError,
    Client,
    EventType,
    NondeterminismError,
    PayloadError,
    PayloadTooLargeError,
    QueryFailedError,
    QueryTimeoutError,
    Replayer,
    Worker,
    WorkflowAlreadyStartedError,
    WorkflowClosedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowStatus,
    activity,
    workflow,
)
from mainspring import handle as handle_module
from mainspring.retry import RetryPolicy
from mainspring.runtime.commands import CompleteWorkflow
from mainspring.store._tx import Tx
from mainspring.store.records import WorkflowTaskCompletion
from tests.integration import agents
from tests.integration.agents import ALL_ACTIVITIES, ALL_WORKFLOWS, TQ


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_worker(client: Client, **kw: object) -> Worker:
    options: dict[str, object] = {
        "workflows": ALL_WORKFLOWS,
        "activities": ALL_ACTIVITIES,
        "deadlock_timeout": td(milliseconds=300),
        "graceful_shutdown_timeout": td(milliseconds=200),
    }
    options.update(kw)
    return Worker(client, task_queue=TQ, **options)  # type: ignore[arg-type]


@pytest.fixture
async def worker(client: Client) -> AsyncIterator[Worker]:
    async with make_worker(client) as w:
        yield w


async def wait_until(predicate: object, what: str, timeout: float = 10.0) -> None:
    """Await ``predicate()`` (an async callable) becoming true, polling the store."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def run_count(client: Client) -> int:
    return len(await client.list_workflows(limit=1000))


# --------------------------------------------------------------------------- client input


async def test_unserializable_arguments_store_nothing(client: Client) -> None:
    with pytest.raises(PayloadError, match="cannot serialize"):
        await client.start_workflow(agents.Hello.run, object(), id="bad", task_queue=TQ)
    with pytest.raises(WorkflowNotFoundError):
        await client.get_workflow_handle("bad").describe()
    assert await run_count(client) == 0


async def test_oversized_payload_fails_at_call_site(db_url: str) -> None:
    client = await Client.connect(db_url, max_payload_size=1000)
    try:
        with pytest.raises(PayloadTooLargeError, match="over the 1000-byte limit"):
            await client.start_workflow(agents.Hello.run, "x" * 2000, id="big", task_queue=TQ)
        assert await run_count(client) == 0
        h = await client.start_workflow(agents.Approval.run, 60.0, id="small", task_queue=TQ)
        with pytest.raises(PayloadTooLargeError):
            await h.signal(agents.Approval.decide, "y" * 2000)
        history = await h.fetch_history()
        assert [e.event_type for e in history] == [EventType.WORKFLOW_EXECUTION_STARTED]
    finally:
        await client.close()


async def test_default_payload_limit_is_two_mib(client: Client) -> None:
    with pytest.raises(PayloadTooLargeError):
        await client.start_workflow(
            agents.Hello.run, "x" * (2 * 1024 * 1024), id="b", task_queue=TQ
        )
    await client.start_workflow(agents.Hello.run, "x" * (1024 * 1024), id="ok", task_queue=TQ)


CUT = "\ud83d"  # half of a surrogate pair: a stream cut in the middle of an emoji


@activity.defn(retry_policy=agents.FAST)
async def cut_answer(prompt: str) -> str:
    return f"{prompt} -> answer {CUT}"


@activity.defn(retry_policy=agents.FAST)
async def cut_refusal(prompt: str) -> str:
    raise ApplicationError(f"refused {CUT}", {CUT: [CUT]}, non_retryable=True)


@workflow.defn
class CutText:
    @workflow.run
    async def run(self, prompt: str) -> list[object]:
        answer = await cut_answer(prompt)
        try:
            await cut_refusal(prompt)
        except ActivityError as err:
            cause = err.__cause__
            assert isinstance(cause, ApplicationError)
            return [answer, cause.message, cause.details]
        return [answer]


async def test_text_with_lone_surrogates_is_saved_and_read_back_exactly(client: Client) -> None:
    # Python text may hold half of a surrogate pair, which has no UTF-8 form: the
    # database driver refused it, so such an activity result could never be saved
    # and the activity ran again and again. It is stored escaped, and read back as is.
    async with Worker(
        client, task_queue="cut", workflows=[CutText], activities=[cut_answer, cut_refusal]
    ):
        h = await client.start_workflow(
            CutText.run, f"prompt {CUT}", id=uid("cut"), task_queue="cut"
        )
        assert await asyncio.wait_for(h.result(), 30) == [
            f"prompt {CUT} -> answer {CUT}",
            f"refused {CUT}",
            [{CUT: [CUT]}],
        ]
    async with make_worker(client):  # and in signals and a workflow's own text
        h = await client.start_workflow(agents.Approval.run, 60.0, id=uid("cut"), task_queue=TQ)
        await h.signal(agents.Approval.decide, f"yes {CUT}")
        assert await asyncio.wait_for(h.result(), 30) == f"decided yes {CUT} after 1 signal(s)"


async def test_duplicate_workflow_id(client: Client) -> None:
    h = await client.start_workflow(agents.Approval.run, 60.0, id="dup", task_queue=TQ)
    with pytest.raises(WorkflowAlreadyStartedError, match="use_existing"):
        await client.start_workflow(agents.Approval.run, 60.0, id="dup", task_queue=TQ)
    again = await client.start_workflow(
        agents.Approval.run, 60.0, id="dup", task_queue=TQ, id_conflict_policy="use_existing"
    )
    assert again.run_id == h.run_id
    assert await run_count(client) == 1


async def test_closed_workflow_id_can_be_reused(client: Client, worker: Worker) -> None:
    first = await client.start_workflow(agents.Hello.run, "1", id="again", task_queue=TQ)
    assert await first.result() == "HELLO 1"
    second = await client.start_workflow(agents.Hello.run, "2", id="again", task_queue=TQ)
    assert second.run_id != first.run_id
    assert await second.result() == "HELLO 2"
    assert await first.result() == "HELLO 1"  # a handle keeps pointing at its own run


async def test_unknown_workflow_id(client: Client) -> None:
    h = client.get_workflow_handle("nope")
    for call in (
        h.signal("decide", "x"),
        h.query("status"),
        h.cancel(),
        h.terminate(),
        h.describe(),
        h.result(),
    ):
        with pytest.raises(WorkflowNotFoundError, match="nope"):
            await call


async def test_closed_workflow_rejects_signal_query_cancel(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(agents.Hello.run, "c", id="closed", task_queue=TQ)
    await h.result()
    for call in (h.signal("decide", "x"), h.query("status"), h.cancel(), h.terminate()):
        with pytest.raises(WorkflowClosedError, match="COMPLETED"):
            await call


async def test_query_without_a_worker_times_out(client: Client) -> None:
    h = await client.start_workflow(agents.Approval.run, 60.0, id="noworker", task_queue=TQ)
    with pytest.raises(QueryTimeoutError, match="no worker answered"):
        await h.query(agents.Approval.status, timeout=0.2)


async def test_a_waiting_query_fails_as_soon_as_its_run_closes(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run closing wakes its waiting queries: one asked in the closing process and
    one asked through another store (another process's, on PostgreSQL a NOTIFY). Their
    periodic recheck is put an hour away, so only the wake-up can end them."""
    monkeypatch.setattr(handle_module, "QUERY_RECHECK", 3600.0)
    closer, other = await Client.connect(db_url), await Client.connect(db_url)
    try:
        h = await closer.start_workflow(agents.Approval.run, 60.0, id=uid("qc"), task_queue=TQ)
        asks = [
            asyncio.create_task(
                c.get_workflow_handle(h.id).query(agents.Approval.status, timeout=600)
            )
            for c in (closer, other)
        ]

        def open_queries(tx: Tx) -> int:
            now = closer.store.clock.now()
            return len(tx.q("query_candidates", {"task_queue": TQ, "now": now, "limit": 9}))

        async def both_queued() -> bool:
            return await closer.store._run(open_queries, readonly=True) == 2

        await wait_until(both_queued, "both queries to be queued")
        [task] = await closer.store.claim_workflow_tasks(TQ, "closer", 1, 60, {})
        out = await closer.store.complete_workflow_task(
            WorkflowTaskCompletion(
                run_id=task.run_id,
                fence=task.fence,
                owner="closer",
                through=task.history_length,
                time=0.0,
                commands=[CompleteWorkflow(result='"approved"')],
            )
        )
        assert out.closed
        for ask in asks:
            with pytest.raises(QueryFailedError, match="the workflow closed as COMPLETED"):
                await asyncio.wait_for(ask, timeout=60)  # a guard: the recheck is an hour off
    finally:
        await other.close()
        await closer.close()


async def test_signal_arguments_that_do_not_fit_are_refused_or_dropped(
    client: Client, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    h = await client.start_workflow(agents.Approval.run, 60.0, id=uid("sigargs"), task_queue=TQ)
    # handed the method, the client checks the arguments before anything is stored
    with pytest.raises(TypeError, match=r"handler 'decide' takes \(decision: str\); 2 arg"):
        await h.signal(agents.Approval.decide, "yes", "and more")
    with pytest.raises(TypeError, match="handler 'status' takes"):
        await h.query(agents.Approval.status, "unexpected")
    # by name it cannot check: the signal is recorded, and the worker drops it (as
    # Temporal does) instead of failing every task of the run until its code changes
    await h.signal("decide", "yes", "and more")
    await h.signal(agents.Approval().decide, "approved")  # a bound method does as well
    assert await h.result() == "decided approved after 1 signal(s)"
    assert "its arguments do not fit the handler" in caplog.text
    history = await h.fetch_history()
    signals = [e for e in history if e.event_type is EventType.WORKFLOW_EXECUTION_SIGNALED]
    assert len(signals) == 2  # the dropped one stays in the history, for the audit
    assert not [e for e in history if e.event_type is EventType.WORKFLOW_TASK_FAILED]
    Replayer(workflows=ALL_WORKFLOWS).replay(history)  # dropped again, the same way


async def test_query_errors(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(agents.Approval.run, 60.0, id="qerr", task_queue=TQ)
    with pytest.raises(QueryFailedError, match="no query 'missing'"):
        await h.query("missing")
    with pytest.raises(QueryFailedError, match="query blew up"):
        await h.query(agents.Approval.broken)
    assert await h.query(agents.Approval.status) == "waiting"  # the run is unharmed
    await h.terminate()


# --------------------------------------------------------------------------- worker side


async def test_bug_fails_the_task_not_the_run_and_a_fix_resumes(client: Client) -> None:
    agents.Buggy.fixed = False
    async with make_worker(client):
        h = await client.start_workflow(agents.Buggy.run, id=uid("bug"), task_queue=TQ)

        async def blocked() -> bool:
            return (await h.describe()).blocked

        await wait_until(blocked, "the run to be blocked")
        d = await h.describe()
        assert d.status is WorkflowStatus.RUNNING
        assert d.workflow_task_failure is not None
        assert d.workflow_task_failure.type == "KeyError"
        assert "a bug" in d.workflow_task_failure.stack
        history = await h.fetch_history()
        failed = [e for e in history if e.event_type is EventType.WORKFLOW_TASK_FAILED]
        assert len(failed) == 1  # recorded once per failure streak, not per retry
    agents.Buggy.fixed = True  # "deploy the fix" and restart the worker
    try:
        async with make_worker(client):
            assert await h.result(timeout=10) == "fixed"
    finally:
        agents.Buggy.fixed = False
    history = await h.fetch_history()
    assert [e.event_type for e in history].count(EventType.ACTIVITY_TASK_COMPLETED) == 1


async def test_nondeterminism_blocks_then_restoring_the_code_resumes(client: Client) -> None:
    agents.Evolving.version = 1
    try:
        async with make_worker(client):
            h = await client.start_workflow(agents.Evolving.run, id=uid("nd"), task_queue=TQ)

            async def second_step_recorded() -> bool:
                types = [e.event_type for e in await h.fetch_history()]
                return types.count(EventType.ACTIVITY_TASK_COMPLETED) == 2

            await wait_until(second_step_recorded, "two recorded activities")
        agents.Evolving.version = 2  # an incompatible change, then the worker restarts
        async with make_worker(client, max_cached_workflows=1):

            async def blocked() -> bool:
                return (await h.describe()).blocked

            await wait_until(blocked, "the nondeterminism error")
            d = await h.describe()
            assert d.status is WorkflowStatus.RUNNING
            assert d.workflow_task_failure is not None
            assert d.workflow_task_failure.type == "NondeterminismError"
            message = d.workflow_task_failure.message
            assert "'echo'" in message and "'sync_upper'" in message and "event" in message
            history = await h.fetch_history()
            assert any(e.event_type is EventType.WORKFLOW_TASK_FAILED for e in history)
            with pytest.raises(NondeterminismError):
                Replayer(workflows=[agents.Evolving]).replay(history)
        agents.Evolving.version = 1  # restore the code
        async with make_worker(client):
            assert await h.result(timeout=10) == "v1"
    finally:
        agents.Evolving.version = 1


async def test_patched_lets_code_change_safely(client: Client) -> None:
    agents.Evolving.version = 1
    try:
        async with make_worker(client):
            old = await client.start_workflow(agents.Evolving.run, id=uid("old"), task_queue=TQ)

            async def recorded() -> bool:
                types = [e.event_type for e in await old.fetch_history()]
                return types.count(EventType.ACTIVITY_TASK_COMPLETED) == 2

            await wait_until(recorded, "the old run's steps")
        agents.Evolving.version = 3  # the change guarded by workflow.patched
        async with make_worker(client):
            new = await client.start_workflow(agents.Evolving.run, id=uid("new"), task_queue=TQ)
            assert await old.result(timeout=10) == "v3"
            assert await new.result(timeout=10) == "v3"
        old_types = [e.event_type for e in await old.fetch_history()]
        new_history = await new.fetch_history()
        assert EventType.MARKER_RECORDED not in old_types
        scheduled = [
            e.attributes["activity_type"]
            for e in new_history
            if e.event_type is EventType.ACTIVITY_TASK_SCHEDULED
        ]
        assert scheduled == ["echo", "sync_upper"]
        Replayer(workflows=[agents.Evolving]).replay(new_history)
        Replayer(workflows=[agents.Evolving]).replay(await old.fetch_history())
    finally:
        agents.Evolving.version = 1


async def test_deadlock_detector(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(agents.Hangs.run, id=uid("hang"), task_queue=TQ)

    async def blocked() -> bool:
        return (await h.describe()).blocked

    await wait_until(blocked, "the deadlock to be detected")
    failure = (await h.describe()).workflow_task_failure
    assert failure is not None and failure.type == "DeadlockError"
    assert "did not yield" in failure.message
    await h.terminate()


async def test_busy_loop_in_a_cached_run_is_interrupted(client: Client, worker: Worker) -> None:
    h = await client.start_workflow(agents.SpinsLater.run, id=uid("spin"), task_queue=TQ)

    async def blocked() -> bool:
        return (await h.describe()).blocked

    await wait_until(blocked, "the busy loop to be interrupted")
    failure = (await h.describe()).workflow_task_failure
    assert failure is not None and failure.type == "DeadlockError"
    # the worker's thread is free again: other runs go on
    assert await client.execute_workflow(
        agents.Hello.run, "on", id=uid("after"), task_queue=TQ
    ) == ("HELLO ON")
    await h.terminate()


async def test_unknown_workflow_type_waits_for_a_worker_that_knows_it(client: Client) -> None:
    h = await client.start_workflow("Hello", "late", id=uid("unk"), task_queue=TQ)
    async with Worker(
        client, task_queue=TQ, workflows=[agents.Approval], activities=ALL_ACTIVITIES
    ):

        async def blocked() -> bool:
            return (await h.describe()).blocked

        await wait_until(blocked, "the unknown-type failure")
        failure = (await h.describe()).workflow_task_failure
        assert failure is not None and failure.type == "WorkflowNotRegistered"
        assert "'Hello'" in failure.message and "Approval" in failure.message
    async with make_worker(client):
        assert await h.result(timeout=10) == "HELLO LATE"


async def test_unknown_activity_type_fails_with_registered_list(client: Client) -> None:
    async with Worker(client, task_queue=TQ, workflows=[agents.Failing], activities=[agents.echo]):
        key = uid("unkact")
        h = await client.start_workflow(agents.Failing.run, key, "always", id=key, task_queue=TQ)

        async def has_failed_attempt() -> bool:
            return (await h.describe()).status is not WorkflowStatus.RUNNING

        await wait_until(has_failed_attempt, "the activity to fail")
    # ``always_fails`` is not registered: its attempts fail with a message naming what is.
    history = await h.fetch_history()
    failed = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_FAILED]
    assert failed, [e.event_type for e in history]
    failure = failed[0].attributes["failure"]
    assert failure["type"] == "ActivityNotRegistered"
    assert "'always_fails'" in failure["message"] and "echo" in failure["message"]
    assert key not in agents.calls  # the body never ran


@activity.defn(retry_policy=RetryPolicy(maximum_attempts=1))
async def fails_at_length(size: int) -> None:
    raise RuntimeError("e" * size)


@workflow.defn
class CallsFailsAtLength:
    @workflow.run
    async def run(self, size: int) -> None:
        await workflow.execute_activity(fails_at_length, size)


async def test_a_huge_error_message_is_recorded_cut_to_size(client: Client) -> None:
    # A 5 MB exception message once became a 10 MB event (message and stack), another
    # as the workflow's failure and a copy in the run's row.
    from mainspring.errors import MAX_FAILURE_MESSAGE, MAX_FAILURE_STACK

    async with make_worker(client, workflows=[CallsFailsAtLength], activities=[fails_at_length]):
        h = await client.start_workflow(
            CallsFailsAtLength.run, 5_000_000, id=uid("huge-error"), task_queue=TQ
        )
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
    history = await h.fetch_history()
    failed = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_FAILED]
    [event] = failed
    recorded = event.attributes["failure"]
    assert recorded["message"].startswith("e" * 1000)
    assert recorded["message"].endswith(
        f"… [{5_000_000 - MAX_FAILURE_MESSAGE:,} more characters cut]"
    )
    assert len(recorded["stack"]) < MAX_FAILURE_STACK + 100
    assert "characters cut" in recorded["stack"] and "fails_at_length" in recorded["stack"]
    activity_error = info.value.cause
    assert isinstance(activity_error, ActivityError)
    assert "more characters cut" in str(activity_error.__cause__)  # the RuntimeError, cut
    total = sum(len(str(e.attributes)) for e in history)
    assert total < 200_000, total  # the whole history, not 20 MB


async def test_a_terminate_reason_too_long_is_refused_and_changes_nothing(
    client: Client,
) -> None:
    h = await client.start_workflow(agents.Approval.run, 60.0, id=uid("reason"), task_queue=TQ)
    with pytest.raises(PayloadTooLargeError, match="the reason is 3,000,000 characters long"):
        await h.terminate("r" * 3_000_000)
    assert (await h.describe()).status is WorkflowStatus.RUNNING
    await h.terminate("x" * 16 * 1024)  # at the limit: fine
    assert (await h.describe()).status is WorkflowStatus.TERMINATED
