"""PostgreSQL wake-ups across processes: each commit's NOTIFY names whom it concerns,
and another process wakes only those pollers and waiters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from mainspring.runtime.commands import ScheduleActivity
from mainspring.store._wakeups import ACTIVITIES, WORKFLOWS
from mainspring.store.postgres import PostgresStore
from mainspring.store.records import WorkflowTaskCompletion
from tests import _pg
from tests._clock import ManualClock

pytestmark = pytest.mark.skipif(not _pg.enabled(), reason=_pg.report_header())


@pytest.fixture
def pg_url() -> Iterator[str]:
    with _pg.fresh_database() as url:
        yield url


async def test_notify_wakes_another_process_pollers(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    await a.open()
    await b.open()
    try:
        waiter = asyncio.create_task(b.wait_for_work("wake" + WORKFLOWS, timeout=30))
        bystander = asyncio.create_task(b.wait_for_work("wake" + ACTIVITIES, timeout=30))
        await asyncio.sleep(0.1)
        await a.start_workflow(workflow_id="w", workflow_type="T", task_queue="wake", input="[]")
        await asyncio.wait_for(waiter, 10)  # far below the 30 s poll timeout
        # the notification named what changed (a workflow task of "wake"), so the
        # activity poller of the same queue, woken in the same step if at all, slept on
        for _ in range(3):
            await asyncio.sleep(0)
        assert not bystander.done()
        bystander.cancel()
    finally:
        await a.close()
        await b.close()


async def test_a_listen_url_on_another_database_is_refused_at_start(pg_url: str) -> None:
    from urllib.parse import quote

    from mainspring.errors import StoreError

    with _pg.fresh_database() as other:
        url = f"{pg_url}?listen_url={quote(other, safe='')}"
        with pytest.raises(StoreError) as info:
            await PostgresStore(url).open()
    here, there = pg_url.rsplit("/", 1)[1], other.rsplit("/", 1)[1]
    assert f"listen_url reaches database {there!r}" in str(info.value)
    assert f"the store's URL reaches {here!r}" in str(info.value)


async def test_a_completion_elsewhere_wakes_the_sticky_worker_in_its_own_process(
    pg_url: str,
) -> None:
    from mainspring.retry import RetryPolicy
    from mainspring.store._wakeups import sticky_queue

    a, b = PostgresStore(pg_url), PostgresStore(pg_url)  # two processes' stores
    await a.open()
    await b.open()
    try:
        # w1, a worker of b's, decided the run; its activity is run through a
        run_id, _ = await a.start_workflow(
            workflow_id="st", workflow_type="W", task_queue="q", input="[]"
        )
        [wft] = await a.claim_workflow_tasks("q", "w1", 1, 60, {})
        schedule = ScheduleActivity(
            seq=1,
            activity_type="a",
            task_queue="q",
            input="[]",
            options={"start_to_close_timeout": 60.0, "retry_policy": RetryPolicy().to_dict()},
        )
        await a.complete_workflow_task(
            WorkflowTaskCompletion(
                run_id=run_id,
                fence=wft.fence,
                owner="w1",
                through=wft.history_length,
                time=0.0,
                commands=[schedule],
            )
        )
        [task] = await a.claim_activities("q", "w2", 1)
        # w1's wake-ups reach a queue no other change concerns, so only they can wake it
        b.share_queue(sticky_queue("w1"), "w1-only", WORKFLOWS)
        waiter = asyncio.create_task(b.wait_for_work("w1-only" + WORKFLOWS, timeout=30))
        await asyncio.sleep(0)
        assert await a.complete_activity(task, '"done"') is True
        await asyncio.wait_for(waiter, 10)  # far below the 30 s poll timeout
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------- precise wake-ups
# A write that concerns one run tells other processes whom it concerns (the run's
# decider, a queue's pollers), never everyone: a broadcast would wake every result
# waiter and poller of every process, for every busy run. In these tests, store ``b``
# stands for the process of worker w1, the run's sticky worker, which also waits for
# the run's result and polls the queue's activities; ``a`` runs on a clock the test
# moves.


@pytest.fixture
async def two_stores(
    pg_url: str,
) -> AsyncIterator[tuple[PostgresStore, PostgresStore, ManualClock]]:
    clock = ManualClock()
    a, b = PostgresStore(pg_url, clock), PostgresStore(pg_url)
    await a.open()
    await b.open()
    try:
        yield a, b, clock
    finally:
        await a.close()
        await b.close()


async def _synced(a: PostgresStore, b: PostgresStore) -> None:
    """Return once ``b`` has heard every notification of ``a``'s commits so far: they
    arrive in commit order, so hearing a new one proves the earlier ones were handled."""
    marker = "marker-" + uuid.uuid4().hex
    heard = asyncio.create_task(b.wait_for_work(marker + WORKFLOWS, timeout=30))
    await asyncio.sleep(0)
    await a.start_workflow(workflow_id=marker, workflow_type="M", task_queue=marker, input="[]")
    await asyncio.wait_for(heard, 10)  # far below the 30 s poll timeout


async def _decided_by_w1(s: PostgresStore, *commands: Any) -> tuple[str, WorkflowTaskCompletion]:
    """A run of queue q whose first decision w1 recorded (so it is sticky to w1)."""
    run_id, _ = await s.start_workflow(
        workflow_id="r", workflow_type="W", task_queue="q", input="[]"
    )
    [wft] = await s.claim_workflow_tasks("q", "w1", 1, 60, {})
    c = WorkflowTaskCompletion(
        run_id=run_id,
        fence=wft.fence,
        owner="w1",
        through=wft.history_length,
        time=0.0,
        commands=list(commands),
    )
    assert (await s.complete_workflow_task(c)).accepted
    return run_id, c


def _activity(max_attempts: int) -> ScheduleActivity:
    from mainspring.retry import RetryPolicy

    policy = RetryPolicy(maximum_attempts=max_attempts).to_dict()
    options = {"start_to_close_timeout": 60.0, "retry_policy": policy}
    return ScheduleActivity(seq=1, activity_type="a", task_queue="q", input="[]", options=options)


class _Waiters:
    """b's waiters: w1's own wake-ups, the queue's activity pollers, the run's result."""

    def __init__(self, b: PostgresStore, run_id: str) -> None:
        from mainspring.store._wakeups import sticky_queue

        b.share_queue(sticky_queue("w1"), "w1-only", WORKFLOWS)
        self.decider = asyncio.create_task(b.wait_for_work("w1-only" + WORKFLOWS, timeout=30))
        self.activities = asyncio.create_task(b.wait_for_work("q" + ACTIVITIES, timeout=30))
        self._watch = b.watch(run_id)
        self.result = self._watch.__enter__()

    async def woken(self, which: asyncio.Task[None]) -> None:
        """Wait until ``which`` wakes (far below the 30 s poll timeout); whatever else
        the same notification woke was woken in the same step."""
        await asyncio.wait_for(which, 10)

    def close(self) -> None:
        self._watch.__exit__(None, None, None)
        self.decider.cancel()
        self.activities.cancel()


async def _waiting(a: PostgresStore, b: PostgresStore, run_id: str) -> _Waiters:
    """b's waiters, set up once b has heard of everything a did before."""
    await _synced(a, b)
    waits = _Waiters(b, run_id)
    await asyncio.sleep(0)
    return waits


async def test_a_result_recorded_apart_from_its_decision_wakes_only_the_runs_decider(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, first = await _decided_by_w1(a, _activity(0))
    [task] = await a.claim_activities("q", "w1", 1)
    waits = await _waiting(a, b, run_id)
    try:
        stale_length = 1  # the decision was made on a history the run has outgrown
        out = await a.complete_activity_and_decide(task, '"done"', stale_length, first)
        assert out is not None and not out.accepted  # the result was recorded alone
        await waits.woken(waits.decider)
        assert not waits.result.is_set()  # the run did not close
        assert not waits.activities.done()  # no activity was scheduled
    finally:
        waits.close()
    assert (await b.describe("r", run_id)).wft_ready_at is not None  # ready for w1


async def test_an_activity_failed_for_good_wakes_only_the_runs_decider(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a, _activity(1))
    [task] = await a.claim_activities("q", "w1", 1)
    waits = await _waiting(a, b, run_id)
    try:
        assert await a.fail_activity(task, {"type": "Boom", "message": "no"}) is True
        await waits.woken(waits.decider)
        assert not waits.result.is_set()
        assert not waits.activities.done()  # no retry
    finally:
        waits.close()
    _, history = await b.history("r", run_id)
    assert history[-1].event_type.value == "ActivityTaskFailed"


async def test_a_retry_due_at_once_wakes_only_its_queues_activity_pollers(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a, _activity(0))
    [task] = await a.claim_activities("q", "w1", 1)
    waits = await _waiting(a, b, run_id)
    try:
        failure = {"type": "RateLimited", "message": "429", "details": {"next_retry_delay": 0}}
        assert await a.fail_activity(task, failure) is True
        await waits.woken(waits.activities)
        assert not waits.result.is_set()
        assert not waits.decider.done()  # the run has nothing new to decide
    finally:
        waits.close()
    assert len(await b.claim_activities("q", "w2", 1)) == 1  # the retry is due


async def test_a_retry_after_a_backoff_wakes_no_one_yet(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a, _activity(0))
    [task] = await a.claim_activities("q", "w1", 1)
    waits = await _waiting(a, b, run_id)
    try:
        assert await a.fail_activity(task, {"type": "Boom", "message": "later"}) is True
        await _synced(a, b)  # b heard whatever the failure said
        assert not waits.activities.done()  # nothing to take for a second yet
        assert not waits.result.is_set()
        assert not waits.decider.done()
    finally:
        waits.close()


async def test_an_attempt_timed_out_for_good_wakes_only_the_runs_decider(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, clock = two_stores
    run_id, _ = await _decided_by_w1(a, _activity(1))
    await a.claim_activities("q", "w1", 1)
    waits = await _waiting(a, b, run_id)
    try:
        clock.t += 61  # past its 60 s start_to_close timeout
        await a.maintain("q")  # times it out; one attempt allowed: it fails for good
        await waits.woken(waits.decider)
        assert not waits.result.is_set()
        assert not waits.activities.done()
    finally:
        waits.close()
    _, history = await b.history("r", run_id)
    assert history[-1].event_type.value == "ActivityTaskFailed"


async def test_a_fired_timer_wakes_only_its_runs_decider(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    from mainspring.runtime.commands import StartTimer

    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a, StartTimer(seq=1, duration=0.0, fire_at=0.0))
    waits = await _waiting(a, b, run_id)
    try:
        await a.maintain("q")  # fires the due timer
        await waits.woken(waits.decider)
        assert not waits.result.is_set()
        assert not waits.activities.done()
    finally:
        waits.close()
    _, history = await b.history("r", run_id)
    assert history[-1].event_type.value == "TimerFired"


async def test_forgetting_an_answered_query_wakes_no_one(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a)
    waits = await _waiting(a, b, run_id)
    try:
        await a.drop_query("a-query")
        await _synced(a, b)  # b heard whatever the drop said
        assert not waits.result.is_set()
        assert not waits.decider.done()
        assert not waits.activities.done()
    finally:
        waits.close()


async def test_a_signal_wakes_only_the_runs_sticky_worker(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a)
    waits = await _waiting(a, b, run_id)
    others = asyncio.create_task(b.wait_for_work("q" + WORKFLOWS, timeout=30))
    try:
        await asyncio.sleep(0)
        await a.signal("r", run_id, "go", "[]")
        await waits.woken(waits.decider)
        assert not others.done()  # the queue's other workers leave the run to w1
        assert not waits.result.is_set()
        assert not waits.activities.done()
    finally:
        others.cancel()
        waits.close()


async def test_a_close_refused_for_late_signals_wakes_only_the_runs_decider(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    from mainspring.runtime.commands import CompleteWorkflow

    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a)
    await a.signal("r", run_id, "first", "[]")
    [wft] = await a.claim_workflow_tasks("q", "w1", 1, 60, {})
    await a.signal("r", run_id, "late", "[]")  # arrives while w1 decides
    waits = await _waiting(a, b, run_id)
    try:
        closing = WorkflowTaskCompletion(
            run_id=run_id,
            fence=wft.fence,
            owner="w1",
            through=wft.history_length,
            time=0.0,
            commands=[CompleteWorkflow(result="null")],
        )
        out = await a.complete_workflow_task(closing)
        assert not out.accepted  # run again, with the late signal
        await waits.woken(waits.decider)
        assert not waits.result.is_set()  # the run did not close
        assert not waits.activities.done()
    finally:
        waits.close()
    assert (await b.describe("r", run_id)).status.value == "RUNNING"


async def test_a_termination_wakes_only_the_runs_waiters(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a, _activity(0))
    waits = await _waiting(a, b, run_id)
    others = asyncio.create_task(b.wait_for_work("q" + WORKFLOWS, timeout=30))
    try:
        await asyncio.sleep(0)
        await a.terminate("r", run_id, "enough")
        await asyncio.wait_for(waits.result.wait(), 10)
        assert not waits.decider.done()  # nothing is left to decide
        assert not waits.activities.done()  # its activity learns at its next heartbeat
        assert not others.done()
    finally:
        others.cancel()
        waits.close()


async def test_a_workflow_task_failed_with_a_backoff_wakes_no_one_yet(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a)
    await a.signal("r", run_id, "go", "[]")
    [wft] = await a.claim_workflow_tasks("q", "w1", 1, 60, {})
    waits = await _waiting(a, b, run_id)
    others = asyncio.create_task(b.wait_for_work("q" + WORKFLOWS, timeout=30))
    try:
        await asyncio.sleep(0)
        await a.fail_workflow_task(run_id, wft.fence, "w1", {"message": "bug"}, retry_in=5.0)
        await _synced(a, b)  # b heard whatever the failure said
        assert not waits.decider.done() and not others.done()  # due in 5 s, not now
        assert not waits.result.is_set()
        assert not waits.activities.done()
    finally:
        others.cancel()
        waits.close()


async def test_a_task_given_back_and_a_backoff_reset_wake_only_the_queues_workflow_pollers(
    two_stores: tuple[PostgresStore, PostgresStore, ManualClock],
) -> None:
    a, b, _ = two_stores
    run_id, _ = await _decided_by_w1(a)
    await a.signal("r", run_id, "go", "[]")
    [wft] = await a.claim_workflow_tasks("q", "w1", 1, 60, {})
    for write in ("give back", "reset backoff"):
        waits = await _waiting(a, b, run_id)
        pollers = asyncio.create_task(b.wait_for_work("q" + WORKFLOWS, timeout=30))
        try:
            await asyncio.sleep(0)
            if write == "give back":
                await a.release_workflow_task(run_id, wft.fence, "w1")
            else:
                [wft] = await a.claim_workflow_tasks("q", "w1", 1, 60, {})
                await a.fail_workflow_task(run_id, wft.fence, "w1", {"message": "bug"}, 60.0)
                await _synced(a, b)
                assert not pollers.done()
                assert await a.reset_backoff("q") == 1
            await asyncio.wait_for(pollers, 10)
            assert not waits.result.is_set(), write
            assert not waits.activities.done(), write
        finally:
            pollers.cancel()
            waits.close()


async def test_the_listener_outlives_a_timeout_that_closes_idle_sessions(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A DBA's idle_session_timeout closes sessions that wait for a query; the listener
    # waits for notifications by design, so it turns the timeout off for itself.
    import psycopg

    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(_pg.admin_url(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} SET idle_session_timeout = '300ms'")
        store = PostgresStore(pg_url)
        await store.open()
        try:
            assert store._lconn is not None and store.live_wakeups
            listener, pid = store._lconn, store._lconn.info.backend_pid
            with psycopg.connect(pg_url) as control:  # an idle session of the same kind
                control_pid = control.info.backend_pid

                def alive(p: int) -> bool:
                    sql = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"
                    return admin.execute(sql, (p,)).fetchone() is not None

                deadline = asyncio.get_running_loop().time() + 10
                while alive(control_pid):  # until the server has closed an idle session
                    assert asyncio.get_running_loop().time() < deadline, "no timeout hit"
                    await asyncio.sleep(0.05)
            assert alive(pid) and store._lconn is listener and store.live_wakeups
            assert "lost its connection" not in caplog.text
        finally:
            await store.close()
