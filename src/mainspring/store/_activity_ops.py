"""The store's activity operations: leasing attempts, recording their outcomes."""

from __future__ import annotations

import functools
from typing import Any

from . import _tx
from ._store_core import ACTIVITY_LEASE_CAP, StoreCore, _decider_queue, _nobody
from ._wakeups import ACTIVITIES, queue_topic
from .records import ActivityTask, CompletionOutcome, FailedAttempt, WorkflowTaskCompletion


class ActivityOps(StoreCore):
    """Activity attempts: claimed, completed, failed, released, heartbeating."""

    async def claim_activities(
        self, task_queue: str, owner: str, limit: int, sticky_wait: float = 0.0
    ) -> list[ActivityTask]:
        """Lease ready activity attempts, oldest first: ``owner``'s own and any ready for
        over ``sticky_wait`` seconds, then other workers' fresh ones (see
        :func:`._tx.claim_activities`)."""
        return await self._write(
            self._telling(
                self._at(
                    _tx.claim_activities,
                    task_queue=task_queue,
                    owner=owner,
                    limit=limit,
                    sticky_wait=sticky_wait,
                ),
                _nobody,
            ),
            lazy=True,
        )

    async def complete_activity(self, task: ActivityTask, result: str) -> bool:
        """Record an attempt's result; ``False`` if the attempt was stale."""
        run = await self._write(
            self._telling(
                self._at(
                    _tx.complete_activity,
                    run_id=task.run_id,
                    seq=task.seq,
                    fence=task.fence,
                    result=result,
                ),
                lambda r: [] if r is None else [queue_topic(*_decider_queue(r))],
            ),
            key=task.run_id,
        )
        if run is not None:
            self.notify(*_decider_queue(run))
        return run is not None

    async def complete_activity_and_decide(
        self, task: ActivityTask, result: str, expected_length: int, c: WorkflowTaskCompletion
    ) -> CompletionOutcome | None:
        """Record a result and the workflow's next decision in one transaction."""
        out = await self._write(
            self._telling(
                lambda tx: _tx.complete_activity_and_decide(
                    tx,
                    seq=task.seq,
                    fence=task.fence,
                    result=result,
                    expected_length=expected_length,
                    completion=c,
                    now=self._now(),
                    activity_lease_cap=ACTIVITY_LEASE_CAP,
                ),
                lambda o: self._completion_topics(o, c),
            ),
            key=task.run_id,
            reads=_tx.step_reads(task.run_id, task.seq, task.fence),
        )
        if out is not None and not out.accepted:
            self.notify()
        else:
            self._notify_after(out, c)
        return out

    async def fail_activity(self, task: ActivityTask, failure: dict[str, Any]) -> bool:
        """Record a failed attempt (retried or final); ``False`` if it was stale."""
        out = await self._write(
            self._telling(
                self._at(
                    _tx.fail_activity,
                    run_id=task.run_id,
                    seq=task.seq,
                    fence=task.fence,
                    failure=failure,
                ),
                _failure_topics,
            ),
            key=task.run_id,
        )
        self.notify()
        return out is not None

    async def release_activity(self, task: ActivityTask) -> bool:
        """Give a leased attempt back untried; another worker takes it at once."""
        released = await self._write(
            self._at(_tx.release_activity, run_id=task.run_id, seq=task.seq, fence=task.fence),
            key=task.run_id,
        )
        self.notify(task.task_queue, ACTIVITIES)
        return released

    async def release_eager(
        self, run_id: str, task_queue: str, seqs: frozenset[int], owner: str
    ) -> int:
        """After a decision's commit failed in a way that may hide its success: give back
        the attempts it would have leased to ``owner``, so any worker takes them now
        rather than after their ``start_to_close`` timeout. Returns how many it had."""
        n = await self._write(
            self._at(_tx.release_eager, run_id=run_id, seqs=sorted(seqs), owner=owner),
            key=run_id,
        )
        if n:
            self.notify(task_queue, ACTIVITIES)
        return n

    async def heartbeat_activity(self, task: ActivityTask, details: str | None) -> bool:
        """Record progress; return whether the activity should stop."""
        return await self._write(
            self._telling(
                self._at(
                    _tx.heartbeat_activity,
                    run_id=task.run_id,
                    seq=task.seq,
                    fence=task.fence,
                    details=details,
                ),
                _nobody,
            ),
            lazy=True,
        )

    async def activity_cancel_requested(self, task: ActivityTask) -> bool:
        """Whether the attempt should stop."""
        return await self._run(
            functools.partial(
                _tx.activity_cancel_requested,
                run_id=task.run_id,
                seq=task.seq,
                fence=task.fence,
            ),
            readonly=True,
        )


def _failure_topics(out: FailedAttempt | None) -> list[str]:
    """Whom a failed attempt concerns in other processes: the pollers of its retry due
    at once, or the decider of the run it failed (a retry after a backoff: no one yet;
    the maintenance pass wakes the pollers when it falls due)."""
    if out is None:
        return []
    topics = [] if out.retry_queue is None else [queue_topic(out.retry_queue, ACTIVITIES)]
    if out.ready_run is not None:
        topics.append(queue_topic(*_decider_queue(out.ready_run)))
    return topics
