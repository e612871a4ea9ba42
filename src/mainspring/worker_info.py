"""WorkerInfo: a worker as the database knows it (see :meth:`Client.list_workers`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from .store.records import WorkerRecord

__all__ = ["WorkerInfo", "WorkerState"]


class WorkerState(enum.StrEnum):
    """What became of a worker.

    SERVING: it said it was alive within the last minute.
    STOPPED: it shut down.
    LOST: it has not said it was alive for over a minute, and did not shut down: its
    process died or cannot reach the database. Other workers take its work over as its
    leases run out.
    """

    SERVING = "SERVING"
    STOPPED = "STOPPED"
    LOST = "LOST"


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    """A worker, serving or gone (the database forgets it a day after it was last seen).

    Attributes:
        identity: Its name in leases (by default ``host:pid:…``, which names its
            machine and process).
        task_queue: The queue it serves.
        workflows: The workflow types it registers.
        activities: The activity types it registers.
        state: SERVING, STOPPED or LOST (see :class:`WorkerState`).
        started_time: When it started.
        last_seen: When it last said it was alive (every 10 s while it serves).
        stopped_time: When it shut down (None unless STOPPED).
    """

    identity: str
    task_queue: str
    workflows: tuple[str, ...]
    activities: tuple[str, ...]
    state: WorkerState
    started_time: datetime
    last_seen: datetime
    stopped_time: datetime | None

    @classmethod
    def from_record(cls, r: WorkerRecord, now: float, lost_after: float) -> WorkerInfo:
        """Build from a store record, as it stands at ``now`` (the store's clock): not
        seen for ``lost_after`` seconds and not stopped means LOST."""
        if r.stopped_at is not None:
            state = WorkerState.STOPPED
        elif now - r.seen_at > lost_after:
            state = WorkerState.LOST
        else:
            state = WorkerState.SERVING
        return cls(
            identity=r.identity,
            task_queue=r.task_queue,
            workflows=tuple(r.workflows),
            activities=tuple(r.activities),
            state=state,
            started_time=datetime.fromtimestamp(r.started_at, UTC),
            last_seen=datetime.fromtimestamp(r.seen_at, UTC),
            stopped_time=(
                datetime.fromtimestamp(r.stopped_at, UTC) if r.stopped_at is not None else None
            ),
        )
