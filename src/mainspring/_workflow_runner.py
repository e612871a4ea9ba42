"""The worker's workflow side: claims workflow tasks, replays, decides, answers queries.

The parts live beside it: :mod:`._workflow_core` (settings, the cache of runs,
recording a decision), :mod:`._workflow_code` (running workflow code, deadlocks),
:mod:`._workflow_eager` (one-commit steps) and :mod:`._workflow_queries` (queries).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from ._trouble import report
from ._workflow_code import DeadlockError
from ._workflow_eager import EagerSteps
from ._workflow_queries import QueryAnswers
from .errors import NondeterminismError, SchemaVersionError, error_to_failure
from .history import COMMAND_EVENTS, Event, EventType
from .runtime.commands import Command
from .runtime.instance import WorkflowInstance, WorkflowTaskError
from .store._wakeups import WORKFLOWS, sticky_queue
from .store.records import WorkflowTask
from .workflow import WorkflowDefinition, WorkflowInfo

log = logging.getLogger("mainspring.worker")

INLINE_REPLAY_LIMIT = 32  # events; longer replays run in the thread pool
HANDOFF_WAIT = 2.0  # seconds a stopping worker waits to hand its runs to others


class NotRegisteredError(Exception):
    """The workflow type is not registered on this worker."""


class WorkflowRunner(EagerSteps, QueryAnswers):
    """Runs the workflow tasks of one task queue for a worker."""

    # ------------------------------------------------------------------ polling

    def wake(self) -> None:
        """Wake the poller (to notice :attr:`stopping`)."""
        self._slot_freed.set()

    async def poll(self) -> None:
        """Claim and run workflow tasks until :attr:`stopping`."""
        # wake-ups for this worker's sticky runs wake this poller (and only this process's)
        self.store.share_queue(sticky_queue(self.owner), self.task_queue, WORKFLOWS)
        try:
            await self._poll()
        finally:
            self.store.unshare_queue(sticky_queue(self.owner), WORKFLOWS)

    async def _poll(self) -> None:
        while not self.stopping:
            free = self.max_concurrent - len(self._inflight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            known = {rid: c.instance.applied_through for rid, c in self._cache.items()}
            try:
                tasks = await self.store.claim_workflow_tasks(
                    self.task_queue, self.owner, free, self.task_lease, known, self.sticky_wait
                )
            except Exception as exc:  # noqa: BLE001 - reported; the loop goes on
                report(log, "claiming workflow tasks", exc)
                await asyncio.sleep(self.poll_interval)
                continue
            for task in tasks:
                t = asyncio.create_task(self._handle(task))
                self._inflight.add(t)
                t.add_done_callback(self._done)
            if len(tasks) < free:  # all that was ready is taken: rest until told of more
                await self.store.wait_for_work(self.task_queue + WORKFLOWS, self.poll_interval)

    def _done(self, t: asyncio.Task[None]) -> None:
        self._inflight.discard(t)
        self._slot_freed.set()
        exc = None if t.cancelled() else t.exception()
        if exc is not None:
            report(log, "a workflow task", exc, "its lease runs out and it runs again")

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for in-flight workflow tasks."""
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout)
        for t in list(self._inflight):
            t.cancel()

    async def release_sticky(self) -> bool:
        """Shutting down: let any worker take this worker's runs' next tasks at once.

        Waits at most :data:`HANDOFF_WAIT` seconds (a worker asked to stop does not wait
        out a silent database: its runs go to others after the sticky wait anyway).
        Returns whether the database answered.
        """
        try:
            async with asyncio.timeout(HANDOFF_WAIT):
                await self.store.release_sticky(self.task_queue, self.owner)
        except TimeoutError:
            log.warning(
                "could not hand this worker's runs to other workers (the database did not "
                "answer within %g s); they take them after the sticky wait",
                HANDOFF_WAIT,
            )
            return False
        except Exception as exc:  # noqa: BLE001 - they go to others after sticky_wait
            log.warning("could not hand this worker's runs to other workers (%s)", exc)
            return False
        return True

    def close(self) -> None:
        """Drop cached runs, stop handing back attempts, and stop the thread pool."""
        self._closed = True
        for t in self._handing_back:
            t.cancel()
        for c in self._cache.values():
            c.instance.discard()
        self._cache.clear()
        self._code.close()

    # ------------------------------------------------------------------ workflow tasks

    def _new_instance(self, task: WorkflowTask, definition: WorkflowDefinition) -> WorkflowInstance:
        info = WorkflowInfo(
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            workflow_type=task.workflow_type,
            task_queue=task.task_queue,
            attempt=task.attempt,
            start_time=datetime.fromtimestamp(task.start_time, UTC),
        )
        return WorkflowInstance(definition, info, self.converter)

    async def _handle(self, task: WorkflowTask) -> None:
        lock = self._lock(task.run_id)
        try:
            async with lock:
                try:
                    await self._process(task)
                except Exception as exc:  # noqa: BLE001 - becomes a recorded task failure
                    self._evict(task.run_id)
                    if isinstance(exc, SchemaVersionError) and self.store.outgrown:
                        return  # nothing can be recorded; the worker says why, once
                    await self._fail(task, exc)
                except asyncio.CancelledError:
                    self._evict(task.run_id)
                    if self.stopping:  # hand the task back now, not when its lease expires
                        try:
                            await self.store.release_workflow_task(
                                task.run_id, task.fence, self.owner
                            )
                        except Exception:  # noqa: BLE001 - then the lease expires
                            log.debug("releasing workflow task %s failed", task.run_id)
                    raise
        finally:
            self._forget_lock(task.run_id, lock)

    async def _process(self, task: WorkflowTask) -> None:
        definition = self.workflows.get(task.workflow_type)
        if definition is None:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise NotRegisteredError(
                f"workflow type {task.workflow_type!r} is not registered on this worker of "
                f"task queue {task.task_queue!r} (registered: {known}); add it to "
                "Worker(workflows=[...]). The task is retried until a worker that knows it "
                "takes it"
            )
        cached = self._cache.get(task.run_id)
        inst: WorkflowInstance
        events = task.events
        fresh = True
        if cached is not None and task.events_after == cached.instance.applied_through:
            inst = cached.instance
            if any(
                e.event_type is EventType.WORKFLOW_TASK_COMPLETED
                and e.event_id > inst.last_marker_id
                for e in events
            ):
                self._evict(task.run_id)  # another worker moved the run on
            else:
                fresh = False
        if fresh:
            self._evict(task.run_id)
            inst = self._new_instance(task, definition)
            if task.events_after != 0:
                events = await self.store.events_after(task.run_id, 0)
        now = self.store.clock.now()
        inst.attempt = task.attempt

        def run() -> list[Command]:
            if fresh:
                pending = inst.replay(events)
            else:
                pending = [
                    e for e in events if e.event_id > inst.applied_through and _is_incoming(e)
                ]
            seen = max(task.history_length, inst.applied_through, *(e.event_id for e in pending))
            return inst.activate(pending, now, replaying=False, through=seen)

        if fresh and (len(events) > INLINE_REPLAY_LIMIT or task.attempt > 1):
            # a long replay, or a retry of a task that failed (perhaps by hanging):
            # off the loop, so it cannot stall the worker's other runs
            commands = await self._code.in_thread(inst, run)
        else:
            commands = self._code.guarded(inst, run)
        through = max(task.history_length, inst.applied_through)
        inst.history_length = max(inst.history_length, task.history_length)
        await self._complete(inst, commands, fence=task.fence, through=through)

    async def _fail(self, task: WorkflowTask, exc: BaseException) -> None:
        cause = exc.cause if isinstance(exc, WorkflowTaskError) else exc
        failure = error_to_failure(cause)
        if isinstance(cause, NotRegisteredError):
            failure = type(failure)(
                type="WorkflowNotRegistered", message=str(cause), kind="ApplicationError"
            )
        elif isinstance(cause, DeadlockError):
            failure = type(failure)(type="DeadlockError", message=str(cause))
        level = logging.ERROR if task.attempt == 1 else logging.DEBUG
        log.log(
            level,
            "workflow task of %s (run %s, attempt %d) failed: %s",
            task.workflow_id,
            task.run_id,
            task.attempt,
            failure.describe(),
        )
        retry_in = min(2.0 ** (task.attempt - 1), 60.0)
        if isinstance(cause, NondeterminismError):
            retry_in = min(5.0 * task.attempt, 60.0)
        try:
            await self.store.fail_workflow_task(
                task.run_id, task.fence, self.owner, failure.to_dict(), retry_in
            )
        except Exception as exc:  # noqa: BLE001 - the task runs again
            report(
                log,
                f"recording the workflow task failure of {task.run_id}",
                exc,
                "it runs again when its lease runs out",
            )


def _is_incoming(e: Event) -> bool:
    return e.event_type not in COMMAND_EVENTS and e.event_type not in (
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.WORKFLOW_TASK_FAILED,
    )
