"""Answering queries: from a run kept in memory, or from one rebuilt from its history."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

from ._trouble import report
from ._workflow_core import RunnerCore
from .errors import error_to_failure
from .runtime.instance import WorkflowInstance
from .store._wakeups import QUERIES
from .workflow import WorkflowInfo

log = logging.getLogger("mainspring.worker")


class QueryAnswers(RunnerCore):
    """Claims the queries of a task queue and answers them."""

    async def poll_queries(self) -> None:
        """Answer queries for runs of this task queue until :attr:`stopping`."""
        while not self.stopping:
            try:
                queries = await self.store.claim_queries(self.task_queue, self.owner, 16)
            except Exception as exc:  # noqa: BLE001 - reported; the loop goes on
                report(log, "claiming queries", exc)
                await asyncio.sleep(self.poll_interval)
                continue
            for q in queries:
                t = asyncio.create_task(self._answer(q.query_id, q.run_id, q.name, q.args))
                self._inflight_queries.add(t)
                t.add_done_callback(self._inflight_queries.discard)
            if not queries:
                await self.store.wait_for_work(self.task_queue + QUERIES, self.poll_interval)

    async def _answer(self, query_id: str, run_id: str, name: str, args: str) -> None:
        answer: str | None = None
        error: str | None = None
        try:
            async with self._lock(run_id):
                cached = self._cache.get(run_id)
                if cached is not None:
                    inst = cached.instance
                    value = await self._code.in_thread(inst, lambda: inst.query(name, args))
                else:
                    inst = await self._rebuild(run_id)
                    try:
                        value = await self._code.in_thread(inst, lambda: inst.query(name, args))
                    finally:
                        inst.discard()
            answer = self.converter.encode(value, what=f"result of query {name!r}")
        except Exception as exc:  # noqa: BLE001 - returned to the caller
            error = json.dumps(error_to_failure(exc).to_dict())
        try:
            await self.store.answer_query(query_id, answer, error)
        except Exception as exc:  # noqa: BLE001 - the asker times out
            report(log, f"answering query {query_id}", exc, "its asker will time out")

    async def _rebuild(self, run_id: str) -> WorkflowInstance:
        events = await self.store.events_after(run_id, 0)
        if not events:
            raise LookupError(f"run {run_id} has no history")
        start = events[0].attributes
        definition = self.workflows.get(str(start["workflow_type"]))
        if definition is None:
            raise LookupError(f"workflow type {start['workflow_type']!r} is not registered here")
        info = WorkflowInfo(
            workflow_id=str(start["workflow_id"]),
            run_id=run_id,
            workflow_type=definition.name,
            task_queue=str(start["task_queue"]),
            start_time=datetime.fromtimestamp(events[0].time, UTC),
        )
        inst = WorkflowInstance(definition, info, self.converter)
        now = self.store.clock.now()

        def catch_up() -> None:
            # Replay, then apply what no workflow task has processed yet (the start
            # itself, new signals) so the query sees the current state; the commands
            # this produces are not recorded.
            pending = inst.replay(events)
            if pending:
                inst.activate(pending, now, replaying=True)

        await self._code.in_thread(inst, catch_up)
        return inst
