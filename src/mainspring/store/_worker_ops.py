"""Workers say they are alive: a row each, written when a worker starts, marked every
:data:`WORKER_HEARTBEAT` seconds while it serves, and when it stops. Operators list
them (``mainspring workers``), and describe says when no live worker serves a queued
activity. A worker not marked for :data:`WORKER_LOST` seconds is taken for lost (its
process died, or cannot reach the database); rows of workers gone for
:data:`WORKER_FORGET` seconds are deleted when another worker starts."""

from __future__ import annotations

import json

from ._store_core import StoreCore
from ._tx import Tx
from .records import WorkerRecord

WORKER_HEARTBEAT = 10.0
WORKER_LOST = 60.0
WORKER_FORGET = 86_400.0


class WorkerOps(StoreCore):
    """The store's operations on the registry of workers."""

    async def register_worker(
        self,
        *,
        instance: str,
        identity: str,
        task_queue: str,
        workflows: list[str],
        activities: list[str],
    ) -> None:
        """Record a worker that starts to serve (``instance`` is unique to it); forget
        workers gone for :data:`WORKER_FORGET` seconds."""

        def run(tx: Tx) -> None:
            now = self.clock.now()
            tx.x("forget_workers", {"before": now - WORKER_FORGET})
            tx.x(
                "register_worker",
                {
                    "instance": instance,
                    "identity": identity,
                    "task_queue": task_queue,
                    "workflows": json.dumps(workflows),
                    "activities": json.dumps(activities),
                    "now": now,
                },
            )

        await self._run(run)

    async def worker_seen(self, instance: str) -> None:
        """Mark a serving worker as alive now (a lost mark costs nothing but a late
        one: it is not waited for on disk)."""
        await self._run(
            lambda tx: tx.x("worker_seen", {"instance": instance, "now": self.clock.now()}),
            lazy=True,
        )

    async def worker_stopped(self, instance: str) -> None:
        """Mark a worker as stopped."""
        await self._run(
            lambda tx: tx.x("worker_stopped", {"instance": instance, "now": self.clock.now()})
        )

    async def list_workers(self) -> list[WorkerRecord]:
        """Every registered worker, serving, stopped or lost, by task queue, newest
        first."""
        rows = await self._run(lambda tx: tx.q("list_workers", {}), readonly=True)
        return [WorkerRecord.from_row(r) for r in rows]
