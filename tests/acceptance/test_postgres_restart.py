"""The PostgreSQL server restarting mid-run: workers and clients reconnect, nothing is lost."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mainspring import Client, EventType, Replayer, StoreError, Worker
from tests import _pg
from tests.integration.test_ambiguous_commit import TQ, Steps, step

T = TypeVar("T")
WORKFLOWS = 30
STEPS = 6
RESTARTS = 2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not _pg.enabled(), reason="PostgreSQL is not reachable"),
    pytest.mark.skipif(
        shutil.which("pg_ctlcluster") is None or os.geteuid() != 0,
        reason="restarting the server needs pg_ctlcluster and root",
    ),
]


def restart_server() -> None:
    version = max(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")])
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )


async def retrying(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry a client call while the server is away (the caller's job, as for any DB)."""
    for _ in range(200):
        try:
            return await call()
        except StoreError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{what} kept failing after the server came back")


async def test_server_restarts_lose_and_duplicate_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mainspring")
    with _pg.fresh_database() as url:
        client = await Client.connect(url)
        try:
            async with Worker(
                client,
                task_queue=TQ,
                workflows=[Steps],
                activities=[step],
                workflow_task_timeout=timedelta(seconds=2),
                poll_interval=timedelta(milliseconds=200),
                graceful_shutdown_timeout=timedelta(milliseconds=200),
            ):
                ids = [f"restart-{uuid.uuid4().hex[:6]}-{i}" for i in range(WORKFLOWS)]
                handles: list[Any] = []
                for n, wid in enumerate(ids):
                    handles.append(
                        await retrying(
                            lambda wid=wid: client.start_workflow(  # type: ignore[misc]
                                Steps.run,
                                STEPS,
                                id=wid,
                                task_queue=TQ,
                                id_conflict_policy="use_existing",
                            ),
                            f"starting {wid}",
                        )
                    )
                    if n in (WORKFLOWS // 3, 2 * WORKFLOWS // 3):
                        await asyncio.to_thread(restart_server)
                expected = sum(i * i for i in range(STEPS))
                for h in handles:
                    result = await retrying(lambda h=h: h.result(timeout=60), f"result of {h.id}")
                    assert result == expected
            histories = [await retrying(h.fetch_history, "fetching a history") for h in handles]
        finally:
            await client.close()
    for h, history in zip(handles, histories, strict=True):
        done = [e for e in history if e.event_type is EventType.ACTIVITY_TASK_COMPLETED]
        assert sorted(e.attributes["seq"] for e in done) == list(range(1, STEPS + 1)), h.id
        assert [e.event_id for e in history] == list(range(1, len(history) + 1))
        Replayer(workflows=[Steps]).replay(history)
    # the worker said what went wrong, in lines of their own: no traceback for the outage
    ours = [r for r in caplog.records if r.name.startswith("mainspring")]
    assert any("failed: " in r.getMessage() for r in ours), "the outage went unreported"
    walls = [r.getMessage() for r in ours if r.exc_info and isinstance(r.exc_info[1], StoreError)]
    assert not walls, walls[:3]


def crash_one_server_process(url: str) -> None:
    """SIGKILL one backend: the server resets every connection and recovers from its
    WAL, losing what was not flushed, without a new start (restart_after_crash)."""
    import psycopg

    victim = psycopg.connect(url, autocommit=True)
    [(pid,)] = victim.execute("SELECT pg_backend_pid()").fetchall()
    os.kill(pid, signal.SIGKILL)
    victim.close()
    for _ in range(300):  # until it takes connections again (30 s at most)
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise AssertionError("the server did not recover from the crash")


@pytest.mark.parametrize("outage", ["restart", "crash"])
async def test_a_lease_a_crash_lost_is_never_drawn_again_with_the_same_fence(
    outage: str,
) -> None:
    # Claims commit without waiting for the disk: a server crash may lose one whose
    # worker already runs the activity. Its fence must not come round again, or that
    # worker's late report would count as the new holder's. ("crash" kills one server
    # process: the server recovers without a new start time.)
    from mainspring.retry import RetryPolicy
    from mainspring.runtime.commands import ScheduleActivity
    from mainspring.store.postgres import PostgresStore
    from mainspring.store.records import WorkflowTaskCompletion

    with _pg.fresh_database() as url:
        store = PostgresStore(url)
        await store.open()
        try:
            run_id, _ = await store.start_workflow(
                workflow_id="w", workflow_type="W", task_queue="q", input="[]"
            )
            [wft] = await store.claim_workflow_tasks("q", "w1", 1, 60, {})
            options = {"start_to_close_timeout": 600.0, "retry_policy": RetryPolicy().to_dict()}
            await store.complete_workflow_task(
                WorkflowTaskCompletion(
                    run_id=run_id,
                    fence=wft.fence,
                    owner="w1",
                    through=wft.history_length,
                    time=0.0,
                    commands=[
                        ScheduleActivity(
                            seq=1, activity_type="a", task_queue="q", input="[]", options=options
                        )
                    ],
                )
            )
            import psycopg

            table, which = "mainspring.mainspring_activities", "WHERE run_id = %s AND seq = 1"
            with psycopg.connect(url, autocommit=True) as conn:
                [(before,)] = conn.execute(
                    f"SELECT fence FROM {table} {which}", (run_id,)
                ).fetchall()
            [lost] = await store.claim_activities("q", "w2", 1)  # w2 starts running it
            with psycopg.connect(url, autocommit=True) as conn:  # the crash lost the claim
                conn.execute(
                    f"UPDATE {table} SET lease_owner = NULL, lease_until = NULL, "
                    f"attempt_deadline = NULL, fence = %s {which}",
                    (before, run_id),
                )
            if outage == "restart":
                restart_server()
            else:
                crash_one_server_process(url)

            async def claim() -> list[Any]:
                return await store.claim_activities("q", "w3", 1)

            [again] = await retrying(claim, "claiming after the restart")
            assert again.fence > lost.fence
            assert await store.complete_activity(lost, '"late"') is False  # w2's, stale
            assert await store.complete_activity(again, '"done"') is True
        finally:
            await store.close()
