"""One-commit steps: a worker decides a step where it happens, with no workflow task.

A run started in this process has its first step decided here, in the commit that
starts it; an activity that completes here for a run cached here has its result and
the run's next decision committed together.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ._workflow_core import CachedRun, RunnerCore
from .history import Event, EventType
from .runtime.commands import ScheduleActivity
from .runtime.instance import WorkflowInstance
from .store._tx import started_attributes
from .store.records import ActivityTask, WorkflowTaskCompletion
from .workflow import WorkflowInfo


class EagerSteps(RunnerCore):
    """Starting runs eagerly and deciding after a local activity in the same commit."""

    # ------------------------------------------------------------------ eager start

    async def start_eagerly(
        self, workflow_id: str, workflow_type: str, input: str, use_existing: bool, run_id: str
    ) -> tuple[str, bool] | None:
        """Start run ``run_id`` of this queue and decide its first step here, in one commit.

        Returns ``None`` (the client then starts it the ordinary way) when this worker
        does not know the type, is full or stopping, or the first step fails.
        """
        definition = self.workflows.get(workflow_type)
        if definition is None or self.stopping or len(self._inflight) >= self.max_concurrent:
            return None
        now = self.store.clock.now()
        info = WorkflowInfo(
            workflow_id=workflow_id,
            run_id=run_id,
            workflow_type=workflow_type,
            task_queue=self.task_queue,
            start_time=datetime.fromtimestamp(now, UTC),
        )
        inst = WorkflowInstance(definition, info, self.converter)
        started = Event(
            event_id=1,
            event_type=EventType.WORKFLOW_EXECUTION_STARTED,
            time=now,
            attributes=started_attributes(
                run_id, workflow_id, workflow_type, self.task_queue, input
            ),
        )
        try:
            commands = self._code.guarded(
                inst, lambda: inst.activate([started], now, replaying=False, through=1)
            )
        except Exception:  # noqa: BLE001 - the ordinary path records the failure
            inst.discard()
            return None
        schedules = [c for c in commands if isinstance(c, ScheduleActivity)]
        seqs = self._reserve(schedules) if schedules else frozenset()
        slots = len(seqs)
        completion = WorkflowTaskCompletion(
            run_id=run_id,
            fence=0,
            owner=self.owner,
            through=1,
            time=inst.now,
            commands=commands,
            eager_activity_slots=slots,
            eager_seqs=seqs,
        )
        try:
            rid, is_new, out = await self.store.start_and_decide(
                workflow_id=workflow_id,
                workflow_type=workflow_type,
                task_queue=self.task_queue,
                input=input,
                use_existing=use_existing,
                now=now,
                completion=completion,
            )
        except BaseException as exc:
            inst.discard()
            await self._unreserve(run_id, seqs, exc)
            raise
        if out is None:  # an open run of this id already existed
            inst.discard()
            if slots:
                self._release(slots)
            return rid, is_new
        inst.history_length = 1
        self._after_completion(inst, commands, out, slots)
        return rid, is_new

    # ------------------------------------------------------------------ one-commit steps

    async def try_decide(self, task: ActivityTask, result: str) -> bool:
        """Complete ``task`` and decide its run's next step in one commit, if cached here.

        Returns ``False`` when the run is not cached or busy; the caller then records the
        result alone.
        """
        cached = self._cache.get(task.run_id)
        if cached is None:
            return False
        lock = self._lock(task.run_id)
        if lock.locked():
            return False
        try:
            return await self._try_decide_locked(task, result, cached, lock)
        finally:
            self._forget_lock(task.run_id, lock)

    async def _try_decide_locked(
        self, task: ActivityTask, result: str, cached: CachedRun, lock: asyncio.Lock
    ) -> bool:
        async with lock:
            inst = cached.instance
            if self._cache.get(task.run_id) is not cached:
                return False
            expected = inst.history_length
            now = self.store.clock.now()
            event = Event(
                event_id=expected + 1,
                event_type=EventType.ACTIVITY_TASK_COMPLETED,
                time=now,
                attributes={"seq": task.seq, "result": result, "attempt": task.attempt},
            )
            try:
                commands = self._code.guarded(
                    inst,
                    lambda: inst.activate([event], now, replaying=False, through=event.event_id),
                )
            except Exception:  # noqa: BLE001 - let the normal path record the failure
                self._evict(task.run_id)
                return False
            schedules = [c for c in commands if isinstance(c, ScheduleActivity)]
            seqs = self._reserve(schedules) if schedules else frozenset()
            slots = len(seqs)
            completion = WorkflowTaskCompletion(
                run_id=task.run_id,
                fence=0,
                owner=self.owner,
                through=event.event_id,
                time=inst.now,
                commands=commands,
                eager_activity_slots=slots,
                eager_seqs=seqs,
            )
            await self._handed_back(task.run_id)
            try:
                out = await self.store.complete_activity_and_decide(
                    task, result, expected, completion
                )
            except BaseException as exc:
                self._evict(task.run_id)
                await self._unreserve(task.run_id, seqs, exc)
                raise
            if out is None:  # stale attempt: nothing recorded
                self._evict(task.run_id)
                if slots:
                    self._release(slots)
                return True
            self._after_completion(inst, commands, out, slots)
            return True
