"""The store: one interface of the transactions the engine needs.

:class:`Store` owns the rules (the transactions in ``_tx``), says whom each change
concerns, and wakes them (:mod:`._wakeups`); a dialect provides a connection, its named
SQL and :meth:`Store._run`, which executes a transaction function. Dialects batch the
transactions that arrive together into one database transaction, so concurrent runs
share one commit (group commit).

Its parts live beside it: :mod:`._store_core` (the dialect's hooks, the clock, whom a
change concerns) and :mod:`._activity_ops` (the activity operations).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from ..history import Event
from . import _tx, _worker_ops
from ._activity_ops import ActivityOps, _failure_topics
from ._store_core import ACTIVITY_LEASE_CAP, Clock, _decider_queue, _nobody
from ._tx import Tx
from ._wakeups import QUERIES, WORKFLOWS, key_topic, queue_topic
from ._worker_ops import WorkerOps
from .records import (
    CompletionOutcome,
    QueryRequest,
    RunInspection,
    RunRecord,
    Wakeup,
    WorkflowTask,
    WorkflowTaskCompletion,
)

__all__ = ["ACTIVITY_LEASE_CAP", "PRUNE_BATCH", "Clock", "EagerStarter", "Store"]

PRUNE_BATCH = 100  # runs deleted per transaction: each one's history goes with it

EagerStarter = Callable[[str, str, str, bool, str], Awaitable["tuple[str, bool] | None"]]
"""``(workflow_id, workflow_type, input, use_existing, run_id) -> (run_id, started)``,
or ``None`` when the worker cannot take the run (unknown type, no capacity)."""


class Store(ActivityOps, WorkerOps):
    """Durable state of every workflow run, shared by clients and workers."""

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__(url, clock)
        self._eager: dict[str, list[EagerStarter]] = {}

    # ------------------------------------------------------------------ client operations

    async def start_workflow(
        self,
        *,
        workflow_id: str,
        workflow_type: str,
        task_queue: str,
        input: str,
        use_existing: bool = False,
        run_id: str | None = None,
        resent: bool = False,
    ) -> tuple[str, bool]:
        """Start a run (named ``run_id``, or a new id); return ``(run_id, started)``.

        ``resent``: the same start was sent before and its outcome is unknown; if it
        committed, its run is returned (open or closed) instead of starting another.
        """
        result = await self._write(
            self._telling(
                self._at(
                    _tx.start_workflow,
                    workflow_id=workflow_id,
                    workflow_type=workflow_type,
                    task_queue=task_queue,
                    input=input,
                    use_existing=use_existing,
                    run_id=run_id,
                    resent=resent,
                ),
                lambda _: [queue_topic(task_queue, WORKFLOWS)],
            )
        )
        self.notify(task_queue, WORKFLOWS)
        return result

    async def start_and_decide(
        self,
        *,
        workflow_id: str,
        workflow_type: str,
        task_queue: str,
        input: str,
        use_existing: bool,
        now: float,
        completion: WorkflowTaskCompletion,
    ) -> tuple[str, bool, CompletionOutcome | None]:
        """Start a run with its first decision, made by a local worker, in one commit."""
        result = await self._write(
            self._telling(
                lambda tx: _tx.start_and_decide(
                    tx,
                    workflow_id=workflow_id,
                    workflow_type=workflow_type,
                    task_queue=task_queue,
                    input=input,
                    now=now,
                    use_existing=use_existing,
                    completion=completion,
                    activity_lease_cap=ACTIVITY_LEASE_CAP,
                ),
                lambda r: [] if r[2] is None else self._completion_topics(r[2], completion),
            ),
            key=completion.run_id,
        )
        if result[2] is not None:
            self._notify_after(result[2], completion)
        return result

    # ------------------------------------------------------------------ eager start

    def add_eager_starter(self, task_queue: str, starter: EagerStarter) -> None:
        """Let a worker in this process decide the first step of runs it starts."""
        self._eager.setdefault(task_queue, []).append(starter)

    def remove_eager_starter(self, task_queue: str, starter: EagerStarter) -> None:
        """Undo :meth:`add_eager_starter`."""
        starters = self._eager.get(task_queue, [])
        if starter in starters:
            starters.remove(starter)

    def eager_starters(self, task_queue: str) -> list[EagerStarter]:
        """The in-process workers that can start runs of ``task_queue`` eagerly."""
        return self._eager.get(task_queue, [])

    async def describe(self, workflow_id: str, run_id: str | None = None) -> RunRecord:
        """The latest (or given) run of ``workflow_id``."""
        return await self._run(lambda tx: _tx.describe(tx, workflow_id, run_id), readonly=True)

    async def inspect_run(
        self, workflow_id: str, run_id: str | None = None, *, limit: int = 100
    ) -> RunInspection:
        """The latest (or given) run of ``workflow_id``, its first ``limit`` activities
        that have not finished (queued, leased to a worker, or waiting out a retry's
        backoff) and how many there are, and the live workers (see
        :mod:`._worker_ops`), in one read-only transaction."""

        def run(tx: Tx) -> RunInspection:
            since = self._now() - _worker_ops.WORKER_LOST
            return _tx.inspect_run(tx, workflow_id, run_id, since, limit)

        return await self._run(run, readonly=True)

    async def list_runs(
        self, *, status: str | None = None, workflow_type: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Runs, newest first, without their input and result (``input`` is ``""``,
        ``result`` ``None``: a listing of large payloads would read megabytes each;
        :meth:`describe` reads them)."""
        return await self._run(
            lambda tx: _tx.list_runs(tx, status, workflow_type, limit), readonly=True
        )

    async def history(
        self, workflow_id: str, run_id: str | None = None
    ) -> tuple[RunRecord, list[Event]]:
        """A run and its full history."""
        return await self._run(lambda tx: _tx.history(tx, workflow_id, run_id), readonly=True)

    async def events_after(self, run_id: str, after: int) -> list[Event]:
        """Events of ``run_id`` after ``after``."""
        return await self._run(lambda tx: _tx.events_after(tx, run_id, after), readonly=True)

    async def signal(self, workflow_id: str, run_id: str | None, name: str, input: str) -> None:
        """Deliver a signal to the open run."""
        run = await self._write(
            self._telling(
                lambda tx: _tx.signal(tx, workflow_id, run_id, name, input, self._now()),
                lambda r: [queue_topic(*_decider_queue(r))],
            )
        )
        self.notify(*_decider_queue(run))  # its sticky worker's, if it has one

    async def request_cancel(self, workflow_id: str, run_id: str | None) -> None:
        """Ask the open run to cancel."""
        tq = await self._write(
            self._telling(
                lambda tx: _tx.request_cancel(tx, workflow_id, run_id, self._now()),
                lambda tq: [queue_topic(tq, WORKFLOWS)],
            )
        )
        self.notify(tq)

    async def terminate(self, workflow_id: str, run_id: str | None, reason: str) -> None:
        """Close the open run now."""
        rid = await self._write(
            self._telling(
                lambda tx: _tx.terminate(tx, workflow_id, run_id, reason, self._now()),
                lambda rid: [key_topic(rid)],  # its waiters; its activities learn by heartbeat
            )
        )
        self.notify_key(rid)
        self.notify()

    async def submit_query(
        self, workflow_id: str, run_id: str | None, name: str, args: str, timeout: float
    ) -> tuple[str, str]:
        """Queue a query; return its id and the id of the run it asks.

        The query is done when answered or when the run closes: wait on both keys.
        """
        qid, run = await self._write(
            self._telling(
                self._at(
                    _tx.submit_query,
                    workflow_id=workflow_id,
                    run_id=run_id,
                    name=name,
                    args=args,
                    timeout=timeout,
                ),
                lambda r: [queue_topic(r[1].task_queue, QUERIES)],
            )
        )
        self.notify(run.task_queue, QUERIES)
        return qid, run.run_id

    async def query_result(self, query_id: str) -> tuple[bool, str | None, str | None]:
        """``(done, answer, error)`` of a query."""
        return await self._run(lambda tx: _tx.query_result(tx, query_id), readonly=True)

    async def drop_query(self, query_id: str) -> None:
        """Forget a query."""
        await self._write(
            self._telling(lambda tx: _tx.drop_query(tx, query_id, self._now()), _nobody)
        )

    async def prune_closed_runs(self, closed_before: float, *, batch: int = PRUNE_BATCH) -> int:
        """Delete the runs that closed before ``closed_before`` (seconds since the epoch),
        each whole with its history; return how many.

        Works in transactions of at most ``batch`` runs, oldest first, so other work
        is never held up for long; an open run is never touched. If it fails part way,
        the runs already deleted stay deleted and calling it again finishes the job.
        """
        deleted = 0
        after: tuple[float, str] | None = (-1.0, "")
        while after is not None:
            n, after = await self._write(
                self._telling(
                    functools.partial(
                        _tx.prune_closed_runs, closed_before=closed_before, after=after, limit=batch
                    ),
                    _nobody,
                )
            )
            deleted += n
        return deleted

    async def count_prunable(self, closed_before: float) -> int:
        """How many runs closed before ``closed_before``: what pruning would delete."""
        return await self._run(
            lambda tx: _tx.count_prunable(tx, closed_before=closed_before), readonly=True
        )

    # ------------------------------------------------------------------ worker operations
    # (the activity attempts' ones are in ActivityOps)

    async def claim_workflow_tasks(
        self,
        task_queue: str,
        owner: str,
        limit: int,
        lease: float,
        known: dict[str, int],
        sticky_wait: float = 0.0,
    ) -> list[WorkflowTask]:
        """Lease ready workflow tasks; leave those sticky to another worker to it until
        they have been ready for ``sticky_wait`` seconds."""
        return await self._write(
            self._telling(
                self._at(
                    _tx.claim_workflow_tasks,
                    task_queue=task_queue,
                    owner=owner,
                    limit=limit,
                    lease=lease,
                    known=known,
                    sticky_wait=sticky_wait,
                ),
                _nobody,
            ),
            lazy=True,
        )

    async def complete_workflow_task(self, c: WorkflowTaskCompletion) -> CompletionOutcome:
        """Record a workflow task's decision."""
        out = await self._write(
            self._telling(
                lambda tx: _tx.complete_workflow_task(tx, c, self._now(), ACTIVITY_LEASE_CAP),
                lambda o: self._completion_topics(o, c),
            ),
            key=c.run_id,
        )
        self._notify_after(out, c)
        return out

    async def fail_workflow_task(
        self, run_id: str, fence: int, owner: str, failure: dict[str, Any], retry_in: float
    ) -> None:
        """Record a failed workflow task and schedule its retry."""
        await self._write(
            self._telling(
                self._at(
                    _tx.fail_workflow_task,
                    run_id=run_id,
                    fence=fence,
                    owner=owner,
                    failure=failure,
                    retry_in=retry_in,
                ),
                # a retry due later is found by the maintenance passes (next_wakeup)
                lambda _: None if retry_in <= 0 else [],
            )
        )
        self.notify()

    async def release_workflow_task(self, run_id: str, fence: int, owner: str) -> None:
        """Hand a claimed workflow task back."""
        await self._write(
            self._telling(
                self._at(
                    _tx.release_workflow_task,
                    run_id=run_id,
                    fence=fence,
                    owner=owner,
                ),
                lambda run: [] if run is None else [queue_topic(run.task_queue, WORKFLOWS)],
            )
        )

    async def release_sticky(self, task_queue: str, owner: str) -> int:
        """``owner`` is going away: any worker may take the next workflow tasks of its
        runs of ``task_queue`` now. Returns how many runs it held."""
        n = await self._write(
            self._telling(
                lambda tx: _tx.release_sticky(tx, task_queue=task_queue, owner=owner),
                lambda n: [queue_topic(task_queue, WORKFLOWS)] if n else [],
            )
        )
        if n:
            self.notify(task_queue, WORKFLOWS)
        return n

    async def reset_backoff(self, task_queue: str) -> int:
        """Make failed workflow tasks of ``task_queue`` due now."""
        n = await self._write(
            self._telling(
                lambda tx: _tx.reset_backoff(tx, task_queue, self._now()),
                lambda n: [queue_topic(task_queue, WORKFLOWS)] if n else [],
            )
        )
        if n:
            self.notify(task_queue, WORKFLOWS)
        return n

    async def maintain(self, task_queue: str, sticky_wait: float = 0.0) -> Wakeup | None:
        """Fire due timers and expire lapsed leases; return when work next falls due, and
        whose (for a poller that takes other workers' sticky tasks after ``sticky_wait``)."""

        def run(tx: Tx) -> tuple[int, Wakeup | None]:
            now = self._now()
            fired = _tx.fire_timers(tx, now)
            expired = _tx.expire(tx, now)
            topics = {queue_topic(*_decider_queue(r)) for r in fired}
            topics.update(t for f in expired for t in _failure_topics(f))
            tx.publish(*topics)
            return len(fired) + len(expired), _tx.next_wakeup(tx, task_queue, now, sticky_wait)

        changed, wake = await self._write(run)
        if changed:
            self.notify()
        return wake

    async def claim_queries(self, task_queue: str, owner: str, limit: int) -> list[QueryRequest]:
        """Lease open queries."""
        return await self._write(
            self._telling(
                self._at(_tx.claim_queries, task_queue=task_queue, owner=owner, limit=limit),
                _nobody,
            ),
            lazy=True,
        )

    async def answer_query(self, query_id: str, answer: str | None, error: str | None) -> None:
        """Answer a query."""
        await self._write(
            self._telling(
                lambda tx: _tx.answer_query(tx, query_id=query_id, answer=answer, error=error),
                lambda _: [key_topic(query_id)],
            )
        )
        self.notify_key(query_id)
