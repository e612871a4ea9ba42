"""Workers say they are alive: a row each, written when a worker starts, marked every
:data:`WORKER_HEARTBEAT` seconds while it serves, and when it stops. Operators list
them (``mainspring workers``), and describe says when no live worker serves a queued
activity. A worker not marked for :data:`WORKER_LOST` seconds is taken for lost (its
process died, or cannot reach the database); rows of workers gone for
:data:`WORKER_FORGET` seconds are deleted when another worker starts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._store_core import StoreCore
from ._tx import Tx
from .records import WorkerRecord

WORKER_HEARTBEAT = 10.0
WORKER_LOST = 60.0
WORKER_FORGET = 86_400.0


@dataclass(frozen=True)
class Registration:
    """What a worker says of itself (``instance`` is unique to the Worker object)."""

    instance: str
    identity: str
    task_queue: str
    workflows: list[str]
    activities: list[str]

    def row(self, now: float) -> dict[str, Any]:
        """The parameters of ``register_worker``."""
        return {
            "instance": self.instance,
            "identity": self.identity,
            "task_queue": self.task_queue,
            "workflows": json.dumps(self.workflows),
            "activities": json.dumps(self.activities),
            "now": now,
        }


class WorkerOps(StoreCore):
    """The store's operations on the registry of workers."""

    async def register_worker(self, worker: Registration) -> None:
        """Record a worker that starts to serve; forget workers gone for
        :data:`WORKER_FORGET` seconds."""

        def run(tx: Tx) -> None:
            now = self.clock.now()
            tx.x("forget_workers", {"before": now - WORKER_FORGET})
            tx.x("register_worker", worker.row(now))

        await self._run(run)

    async def worker_seen(self, worker: Registration) -> None:
        """Mark a serving worker as alive now; write its row again if it has none (its
        registration failed, or its row was forgotten while it was cut off). A lost
        mark costs nothing but a late one: it is not waited for on disk."""

        def run(tx: Tx) -> None:
            now = self.clock.now()
            if not tx.x("worker_seen", {"instance": worker.instance, "now": now}):
                tx.x("register_worker", worker.row(now))

        await self._run(run, lazy=True)

    async def worker_stopped(self, instance: str) -> None:
        """Mark a worker as stopped."""
        await self._run(
            lambda tx: tx.x("worker_stopped", {"instance": instance, "now": self.clock.now()})
        )

    async def list_workers(self) -> list[WorkerRecord]:
        """The workers seen within :data:`WORKER_FORGET` seconds, serving, stopped or
        lost, by task queue, newest first."""

        def run(tx: Tx) -> list[tuple[Any, ...]]:
            return tx.q("list_workers", {"since": self.clock.now() - WORKER_FORGET})

        return [WorkerRecord.from_row(r) for r in await self._run(run, readonly=True)]
