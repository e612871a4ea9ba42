"""A finished activity's result is not thrown away when the database is away at the
moment it is recorded: the worker tries again until the database answers, and the
activity does not run again (its side effects, its tokens) nor fail for it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import pytest

from mainspring import (
    Client,
    EventType,
    RetryPolicy,
    StoreError,
    StoreUnavailableError,
    Worker,
    _activity_runner,
    _trouble,
    activity,
    workflow,
)
from mainspring.store.base import Store
from tests import _pg

_RAN: dict[str, int] = {}
_FINISHING: dict[str, asyncio.Event] = {}  # set as the activity returns its result
_GO: dict[str, asyncio.Event] = {}


@activity.defn
async def send_email(to: str) -> str:
    """A side effect that must happen once: one attempt only, and an hour to report."""
    _RAN[to] = _RAN.get(to, 0) + 1
    await _GO[to].wait()
    _FINISHING[to].set()
    return f"sent to {to}"


@workflow.defn
class Notify:
    @workflow.run
    async def run(self, to: str) -> str:
        return await workflow.execute_activity(
            send_email,
            to,
            start_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


def outage(
    store: Store,
    writes: int,
    *,
    committed: bool | Literal["first"],
    error: StoreError | None = None,
) -> list[str]:
    """From the moment the activity finishes, fail the next ``writes`` writes as an
    outage would: before they are sent, or (``committed``) after they committed with
    the answer lost (``"first"``: only the first of them); with ``error`` (else: the
    database is unreachable)."""
    failed: list[str] = []
    real = store._run

    async def run(fn: Callable[..., Any], *, readonly: bool = False, **options: Any) -> Any:
        finishing = any(e.is_set() for e in _FINISHING.values())
        if readonly or not finishing or len(failed) >= writes:
            return await real(fn, readonly=readonly, **options)
        failed.append(getattr(fn, "__qualname__", repr(fn)))
        if committed is True or (committed == "first" and len(failed) == 1):
            await real(fn, readonly=readonly, **options)
        raise error or StoreUnavailableError(
            "cannot reach the database (simulated outage)", maybe_saved=bool(committed)
        )

    store._run = run  # type: ignore[method-assign]
    return failed


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    _RAN.clear()
    _FINISHING.clear()
    _GO.clear()
    monkeypatch.setattr(_trouble, "_last", {})  # no line held back for an earlier test's


@pytest.mark.parametrize(
    ("committed", "error"),
    [
        (False, None),
        (True, None),
        (False, StoreError("database error: canceling statement due to statement timeout")),
    ],
    ids=["not-sent", "answer-lost", "statement-timeout"],
)
async def test_a_result_met_by_an_outage_is_recorded_once_the_database_answers(
    client: Client, committed: bool, error: StoreError | None, caplog: pytest.LogCaptureFixture
) -> None:
    to = f"alice-{committed}-{error is None}"
    _GO[to], _FINISHING[to] = asyncio.Event(), asyncio.Event()
    _GO[to].set()
    failed = outage(client.store, writes=4, committed=committed, error=error)
    async with Worker(client, task_queue="q", workflows=[Notify], activities=[send_email]):
        handle = await client.start_workflow(Notify.run, to, id=to, task_queue="q")
        assert await asyncio.wait_for(handle.result(), 30) == f"sent to {to}"
    assert len(failed) == 4  # the outage happened, and the result outlived it
    assert _RAN[to] == 1  # not run again, nor failed for it
    history = await handle.fetch_history()
    completed = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_COMPLETED]
    assert [e.attributes["attempt"] for e in completed] == [1]
    assert "trying again until the database answers" in caplog.text


@pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())
async def test_a_real_outage_while_an_activity_finishes_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The database stops taking connections and drops every session just as the
    activity finishes; the worker records its result once connections are allowed."""
    import psycopg

    caplog.set_level(logging.DEBUG, "mainspring")
    to = "bob"
    _GO[to], _FINISHING[to] = asyncio.Event(), asyncio.Event()
    with _pg.fresh_database() as url:
        name = url.rsplit("/", 1)[1]

        def admin(sql: str) -> None:
            with psycopg.connect(_pg.admin_url(), autocommit=True) as conn:
                conn.execute(sql)  # type: ignore[arg-type]

        async with (
            await Client.connect(url) as client,
            Worker(client, task_queue="q", workflows=[Notify], activities=[send_email]),
        ):
            handle = await client.start_workflow(Notify.run, to, id=to, task_queue="q")
            while not _RAN.get(to):  # it runs
                await asyncio.sleep(0.01)
            admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            try:
                admin(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                )
                _GO[to].set()
                deadline = time.monotonic() + 30
                while "trying again until the database answers" not in caplog.text:
                    assert time.monotonic() < deadline, caplog.text
                    await asyncio.sleep(0.05)
            finally:
                admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            assert await asyncio.wait_for(handle.result(), 60) == f"sent to {to}"
    assert _RAN[to] == 1
    assert "recorded the result of activity send_email after" in caplog.text


@activity.defn
async def flaky_once(to: str) -> str:
    _RAN[to] = _RAN.get(to, 0) + 1
    if _RAN[to] == 1:
        _FINISHING[to].set()  # its failure is what meets the outage
        raise RuntimeError("503 Service Unavailable")
    return f"done for {to}"


@workflow.defn
class Flaky:
    @workflow.run
    async def run(self, to: str) -> str:
        return await workflow.execute_activity(
            flaky_once,
            to,
            start_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
        )


async def test_a_failed_attempt_met_by_an_outage_is_recorded_and_retried_at_once(
    client: Client,
) -> None:
    to = "carol"
    _FINISHING[to] = asyncio.Event()
    failed = outage(client.store, writes=3, committed=False)
    async with Worker(client, task_queue="q", workflows=[Flaky], activities=[flaky_once]):
        handle = await client.start_workflow(Flaky.run, to, id=to, task_queue="q")
        assert await asyncio.wait_for(handle.result(), 30) == f"done for {to}"
    assert len(failed) == 3
    assert _RAN[to] == 2  # the failed attempt and its retry: not a third after a lease


async def test_a_worker_that_stops_while_it_still_tries_says_it_gave_up(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    to = "dave"
    _GO[to], _FINISHING[to] = asyncio.Event(), asyncio.Event()
    _GO[to].set()
    outage(client.store, writes=10**9, committed=False)  # it never comes back
    async with Worker(
        client,
        task_queue="q",
        workflows=[Notify],
        activities=[send_email],
        graceful_shutdown_timeout=timedelta(milliseconds=200),
    ):
        await client.start_workflow(Notify.run, to, id=to, task_queue="q")
        deadline = time.monotonic() + 30
        while "trying again until the database answers" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.02)
    assert (
        "gave up recording the result of activity send_email as the worker stopped; the "
        "attempt runs again when its lease runs out"
    ) in caplog.text


@activity.defn
async def draft(to: str) -> str:
    _RAN["draft"] = _RAN.get("draft", 0) + 1
    _FINISHING[to].set()
    return "draft "


@workflow.defn
class DraftThenSend:
    @workflow.run
    async def run(self, to: str) -> str:
        text = await workflow.execute_activity(draft, to, start_to_close_timeout=timedelta(hours=1))
        return text + await workflow.execute_activity(
            send_email,
            to,
            start_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def test_a_next_activity_a_lost_answer_leased_here_is_handed_back_and_runs(
    client: Client,
) -> None:
    """The first try saves the result and the workflow's next step, which leases the
    next activity to this worker, but its answer is lost, and the database stays away
    a while: that activity is handed back once it answers, and runs, once."""
    to = "erin"
    _GO[to], _FINISHING[to] = asyncio.Event(), asyncio.Event()
    _GO[to].set()
    failed = outage(client.store, writes=6, committed="first")
    async with Worker(
        client, task_queue="q", workflows=[DraftThenSend], activities=[draft, send_email]
    ):
        handle = await client.start_workflow(DraftThenSend.run, to, id=to, task_queue="q")
        assert await asyncio.wait_for(handle.result(), 30) == f"draft sent to {to}"
    assert len(failed) == 6
    assert {"draft": 1, to: 1} == _RAN


_SENT: list[float] = []


@activity.defn
async def slow_send(to: str) -> str:
    _SENT.append(time.monotonic())
    await asyncio.sleep(1.5)  # still running when a stale hand-back would strike
    return f"sent to {to}"


@workflow.defn
class SlowNotify:
    @workflow.run
    async def run(self, to: str) -> str:
        return await workflow.execute_activity(
            slow_send,
            to,
            start_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def test_a_hand_back_never_releases_an_attempt_the_run_leased_here_again(
    client: Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision's commit hangs past the workflow task's lease, then fails with its
    fate unknown. Meanwhile the run is claimed again, and its next decision waits for
    the lock; once it may, it leases the activity here afresh (the same fence, the same
    attempt) and starts it. The first decision's hand-back must not release that
    attempt, or it would run twice: the next decision waits for the hand-back."""
    _SENT.clear()
    store = client.store
    real_complete, real_release = store.complete_workflow_task, store.release_eager
    order: list[str] = []

    async def complete(c: Any) -> Any:
        if not order and c.eager_seqs:
            await asyncio.sleep(2.5)  # a connection that hangs, then breaks
            order.append("commit failed")
            raise StoreUnavailableError("simulated hang, then a break", maybe_saved=True)
        order.append("decided")
        return await real_complete(c)

    async def release(*args: Any) -> int:
        n: int = await real_release(*args)
        order.append(f"handed back {n}")
        return n

    monkeypatch.setattr(store, "complete_workflow_task", complete)
    monkeypatch.setattr(store, "release_eager", release)
    # started from another client, so the worker's first decision is a task of its own
    # (not made in the start's commit)
    async with (
        Worker(
            client,
            task_queue="q",
            workflows=[SlowNotify],
            activities=[slow_send],
            workflow_task_timeout=timedelta(seconds=1),
            poll_interval=timedelta(milliseconds=200),
        ),
        await Client.connect(db_url) as starter,
    ):
        handle = await starter.start_workflow(SlowNotify.run, "fay", id="fay", task_queue="q")
        assert await asyncio.wait_for(handle.result(), 40) == "sent to fay"
    assert order[:3] == ["commit failed", "handed back 0", "decided"], order
    assert len(_SENT) == 1


async def test_a_write_the_database_keeps_refusing_is_given_up_soon(
    client: Client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused, not unreachable (a right revoked, say): tried for a short while only,
    since the attempt's lease would run out meanwhile and its next attempt would start
    another such loop beside it."""
    monkeypatch.setattr(_activity_runner, "REFUSED_PATIENCE", 0.5)
    to = "gus"
    _GO[to], _FINISHING[to] = asyncio.Event(), asyncio.Event()
    _GO[to].set()
    refused = StoreError("database error: permission denied for table mainspring_events")
    outage(client.store, writes=10**9, committed=False, error=refused)
    async with Worker(client, task_queue="q", workflows=[Notify], activities=[send_email]):
        await client.start_workflow(Notify.run, to, id=to, task_queue="q")
        deadline = time.monotonic() + 30
        while "recording the result of activity send_email failed for" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.02)
    assert "permission denied for table mainspring_events; it runs again" in caplog.text
