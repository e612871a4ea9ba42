"""WorkflowHandle and WorkflowDescription: watch, signal, query and stop one workflow."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from ._durations import seconds as _seconds
from ._names import check_name
from ._trouble import report
from .converter import type_hints_of
from .errors import (
    MAX_FAILURE_MESSAGE,
    Failure,
    PayloadTooLargeError,
    QueryFailedError,
    QueryTimeoutError,
    StoreUnavailableError,
    WorkflowFailureError,
    WorkflowResultTimeoutError,
    failure_to_error,
)
from .history import Event
from .store import Store
from .store.records import PendingActivityRecord, RunRecord, WorkerRecord, WorkflowStatus
from .workflow import check_handler_args

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "PendingActivity",
    "PendingActivityState",
    "WorkflowDescription",
    "WorkflowHandle",
]

log = logging.getLogger("mainspring.client")

# A run closing (or a query's answer) wakes its waiters at once, in any process. While
# the store might miss another process's change (Store.live_wakeups is false: the
# PostgreSQL listener is down or turned off), waiters also read their state again this
# often (seconds); while it hears every change, only every LIVE_RECHECK, as a safety net.
QUERY_RECHECK = 0.5
RESULT_RECHECK = 2.0
LIVE_RECHECK = 30.0
# the unfinished activities describe() reads (a run may fan out to thousands)
MAX_PENDING_SHOWN = 100


def _recheck(store: Store, polling: float) -> float:
    """How long a waiter waits for a wake-up before it reads its state again."""
    return max(polling, LIVE_RECHECK) if store.live_wakeups else polling


class PendingActivityState(enum.StrEnum):
    """Where an unfinished activity stands.

    SCHEDULED: waiting for a worker of its task queue to take it.
    STARTED: a worker runs it (see :attr:`PendingActivity.worker`).
    BACKOFF: an attempt failed; the next may start at
    :attr:`PendingActivity.next_attempt_time`.
    """

    SCHEDULED = "SCHEDULED"
    STARTED = "STARTED"
    BACKOFF = "BACKOFF"


def _time(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


@dataclass(frozen=True, kw_only=True)
class PendingActivity:
    """An activity of a run that has not finished yet (see
    :attr:`WorkflowDescription.pending_activities`).

    Attributes:
        seq: Its number in the run (``#seq`` in the history).
        activity_type: Its registered name.
        task_queue: The queue its attempts go to.
        state: SCHEDULED, STARTED or BACKOFF (see :class:`PendingActivityState`).
        attempt: The attempt that runs (STARTED) or runs next, from 1.
        maximum_attempts: Its retry policy's limit on attempts (0: no limit).
        scheduled_time: When the workflow scheduled it.
        next_attempt_time: BACKOFF: when the next attempt may start.
        worker: STARTED: the identity of the worker that runs it (by default
            ``host:pid:…``, so it names the machine).
        lease_expires: STARTED: when that worker's lease runs out unless it heartbeats
            or finishes. A lease in the past means the attempt timed out (its worker
            was lost, or too slow): the next maintenance pass of any worker records
            that, and the retry policy decides what follows.
        deadline: Its schedule-to-close deadline, if it has one.
        last_failure: Why the last attempt failed (None before any did).
        heartbeat_details: What the running (or last) attempt last reported with
            ``activity.heartbeat(...)`` (empty if nothing).
        cancel_requested: The workflow asked for it to be cancelled.
        able_workers: Live workers of its task queue that have its activity type
            registered (see :meth:`Client.list_workers`). 0 for a queued activity means
            it waits for a worker that is not there: start one that registers it.
            (Workers of releases before schema version 6 do not say they are alive,
            and are not counted.)
    """

    seq: int
    activity_type: str
    task_queue: str
    state: PendingActivityState
    attempt: int
    maximum_attempts: int
    scheduled_time: datetime
    next_attempt_time: datetime | None
    worker: str | None
    lease_expires: datetime | None
    deadline: datetime | None
    last_failure: Failure | None
    heartbeat_details: list[Any]
    cancel_requested: bool
    able_workers: int = 0

    @classmethod
    def from_record(
        cls, a: PendingActivityRecord, now: float, live: list[WorkerRecord] | None = None
    ) -> PendingActivity:
        """Build from a store record, as it stands at ``now`` (the store's clock), with
        the ``live`` workers."""
        if a.lease_owner is not None:
            state = PendingActivityState.STARTED
        elif a.attempt > 1 and a.ready_at > now:
            state = PendingActivityState.BACKOFF
        else:
            state = PendingActivityState.SCHEDULED
        policy = a.options.get("retry_policy") or {}
        details = json.loads(a.heartbeat_details) if a.heartbeat_details else []
        return cls(
            seq=a.seq,
            activity_type=a.activity_type,
            task_queue=a.task_queue,
            state=state,
            attempt=a.attempt,
            maximum_attempts=int(policy.get("maximum_attempts") or 0),
            scheduled_time=datetime.fromtimestamp(a.scheduled_at, UTC),
            next_attempt_time=(
                _time(a.ready_at) if state is PendingActivityState.BACKOFF else None
            ),
            worker=a.lease_owner,
            lease_expires=_time(a.lease_until) if a.lease_owner is not None else None,
            deadline=_time(a.deadline),
            last_failure=Failure.from_dict(a.last_failure) if a.last_failure else None,
            heartbeat_details=details,
            cancel_requested=a.cancel_requested,
            able_workers=sum(
                1
                for w in live or ()
                if w.task_queue == a.task_queue and a.activity_type in w.activities
            ),
        )


@dataclass(frozen=True, kw_only=True)
class WorkflowDescription:
    """A run as seen from outside.

    Attributes:
        workflow_id: The workflow's id.
        run_id: This run's id.
        workflow_type: The workflow's registered name.
        task_queue: The queue its tasks go to.
        status: RUNNING, COMPLETED, FAILED, CANCELED or TERMINATED.
        start_time: When it started.
        close_time: When it closed, if it did.
        history_length: Events recorded so far.
        failure: Why it failed, was cancelled or terminated.
        workflow_task_failure: Set while the run is *blocked*: its last workflow task
            failed (a bug, a ``NondeterminismError``, an unregistered type) and is being
            retried; fixing the code and restarting the worker resumes it.
        workflow_task_attempt: Attempts of the current workflow task.
        pending_activities: Its activities that have not finished, in the order it
            scheduled them: the first :data:`MAX_PENDING_SHOWN` (filled by
            :meth:`WorkflowHandle.describe`; empty for a closed run).
        pending_activity_count: How many activities it has that have not finished
            (more than ``len(pending_activities)`` for a wide fan-out).
    """

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: WorkflowStatus
    start_time: datetime
    close_time: datetime | None
    history_length: int
    failure: Failure | None
    workflow_task_failure: Failure | None
    workflow_task_attempt: int
    pending_activities: tuple[PendingActivity, ...] = ()
    pending_activity_count: int = 0

    @property
    def blocked(self) -> bool:
        """Whether the run is stuck on a failing workflow task."""
        return self.status is WorkflowStatus.RUNNING and self.workflow_task_failure is not None

    @classmethod
    def from_record(
        cls, r: RunRecord, pending: tuple[PendingActivity, ...] = (), pending_count: int = 0
    ) -> WorkflowDescription:
        """Build from a store record (and the run's unfinished activities: the first
        few, and how many in all)."""
        return cls(
            workflow_id=r.workflow_id,
            run_id=r.run_id,
            workflow_type=r.workflow_type,
            task_queue=r.task_queue,
            status=r.status,
            start_time=datetime.fromtimestamp(r.created_at, UTC),
            close_time=datetime.fromtimestamp(r.closed_at, UTC) if r.closed_at else None,
            history_length=r.history_length,
            failure=Failure.from_dict(r.failure) if r.failure else None,
            workflow_task_failure=Failure.from_dict(r.wft_failure) if r.wft_failure else None,
            workflow_task_attempt=r.wft_attempt,
            pending_activities=pending,
            pending_activity_count=max(pending_count, len(pending)),
        )


def _handler_name(
    handler: Any, kind: Literal["signal", "query"], args: tuple[Any, ...]
) -> tuple[str, Any]:
    """The handler's registered name and return hint; with the method itself (not its
    name), ``args`` are checked against its signature before anything is sent."""
    if isinstance(handler, str):
        return check_name(handler, f"{kind} name"), None
    name = getattr(handler, f"__mainspring_{kind}__", None)
    if name is None:
        raise TypeError(f"{handler!r} is not a @workflow.{kind} method; pass it or its name")
    check_handler_args(handler, str(name), args)
    return str(name), type_hints_of(handler)[1]


class WorkflowHandle:
    """A reference to one workflow (its latest run, or a given run)."""

    def __init__(
        self,
        client: Client,
        workflow_id: str,
        *,
        run_id: str | None = None,
        result_type: Any = None,
    ) -> None:
        self.client = client
        self.id = check_name(workflow_id, "workflow id")
        self.run_id = check_name(run_id, "run id") if run_id else None  # "": the latest
        self.result_type = result_type

    async def describe(self) -> WorkflowDescription:
        """The run's status, times, failure, (when blocked) its workflow task failure,
        and its activities that have not finished: which worker runs each, on which
        attempt, and why the last attempt failed (the first :data:`MAX_PENDING_SHOWN`
        of them, and how many there are; one read-only transaction)."""
        store = self.client.store
        seen = await store.inspect_run(self.id, self.run_id, limit=MAX_PENDING_SHOWN)
        now = store.clock.now()
        activities = tuple(
            PendingActivity.from_record(a, now, seen.live_workers) for a in seen.pending
        )
        return WorkflowDescription.from_record(seen.run, activities, seen.pending_count)

    async def result(self, *, timeout: timedelta | float | None = None) -> Any:
        """Wait for the run to close; return its result.

        ``timeout`` is a ``timedelta`` or a number of seconds, finite and not negative
        (``0`` asks whether it has closed), or ``None`` to wait until it closes.

        Raises:
            WorkflowFailureError: it failed, was cancelled or terminated (``cause`` says why).
            WorkflowResultTimeoutError: ``timeout`` passed first; the run goes on.
            WorkflowNotFoundError: no such run, or it closed over an hour ago and has
                been pruned since (:meth:`Client.prune_closed_runs`).
            ValueError, TypeError: ``timeout`` is NaN, infinite, negative or not a number.
        """
        seconds = None if timeout is None else _seconds("timeout", timeout)
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        store = self.client.store

        async def read(run_id: str | None) -> RunRecord:
            """The run's state. While the database is unreachable (a restart, a
            failover), tried again until the deadline: a waiter outlives an outage.
            Any other error is raised at once."""
            delay = 0.1
            first = True
            while True:
                left = None if deadline is None else deadline - loop.time()
                if not first and left is not None and left <= 0:
                    raise WorkflowResultTimeoutError(
                        f"workflow {self.id!r}: its state could not be read within "
                        f"{seconds:g} s (the database is unreachable)"
                    )
                first = False
                try:
                    # one read is always made (timeout=0 asks whether it closed)
                    async with asyncio.timeout(left if left is not None and left > 0 else None):
                        return await store.describe(self.id, run_id)
                except TimeoutError:
                    continue  # the deadline passed: reported above
                except StoreUnavailableError as exc:
                    report(log, f"reading the state of workflow {self.id!r}", exc, "retrying")
                    wait = delay if left is None else min(delay, max(left, 0.0))
                    await asyncio.sleep(wait)
                    delay = min(delay * 2, 2.0)

        run_id = self.run_id or (await read(None)).run_id
        while True:
            with store.watch(run_id) as changed:
                rec = await read(run_id)
                if rec.status is WorkflowStatus.COMPLETED:
                    return self.client.converter.decode(rec.result, self.result_type)
                if rec.status is not WorkflowStatus.RUNNING:
                    failure = Failure.from_dict(rec.failure) if rec.failure else None
                    raise WorkflowFailureError(
                        f"workflow {self.id!r} {rec.status.value.lower()}"
                        + (f": {failure.message}" if failure else ""),
                        status=rec.status.value,
                        failure=failure,
                    )
                wait = _recheck(store, RESULT_RECHECK)
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise WorkflowResultTimeoutError(
                            f"workflow {self.id!r} did not close within {seconds:g} s; it is "
                            "still running"
                        )
                    wait = min(wait, left)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await changed.wait()

    async def signal(self, signal: Callable[..., Any] | str, *args: Any) -> None:
        """Send a signal; it is recorded in history before this returns.

        Raises ``WorkflowNotFoundError`` for an unknown id and ``WorkflowClosedError`` if
        the run has closed.
        """
        name, _ = _handler_name(signal, "signal", args)
        payload = self.client.converter.encode_args(args, what=f"arguments of signal {name!r}")
        await self.client.store.signal(self.id, self.run_id, name, payload)

    async def query(
        self,
        query: Callable[..., Any] | str,
        *args: Any,
        timeout: timedelta | float = timedelta(seconds=10),
        result_type: Any = None,
    ) -> Any:
        """Ask a worker to run a query handler against the run's current state.

        ``timeout`` is a ``timedelta`` or a number of seconds, finite and not negative.

        Raises:
            QueryTimeoutError: no worker answered within ``timeout``.
            QueryFailedError: the handler raised or does not exist.
            ValueError, TypeError: ``timeout`` is NaN, infinite, negative or not a number.
        """
        seconds = _seconds("timeout", timeout)
        name, ret = _handler_name(query, "query", args)
        payload = self.client.converter.encode_args(args, what=f"arguments of query {name!r}")
        store = self.client.store
        qid, run_id = await store.submit_query(self.id, self.run_id, name, payload, seconds)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while True:
                # answered (the query's key) or failed by the run closing (the run's key)
                with store.watch(qid, run_id) as changed:
                    done, answer, error = await store.query_result(qid)
                    if done:
                        return self._query_answer(name, answer, error, result_type or ret)
                    left = deadline - loop.time()
                    if left <= 0:
                        raise QueryTimeoutError(
                            f"no worker answered query {name!r} on workflow {self.id!r} "
                            f"within {seconds:g} s; is a worker for its task queue running?"
                        )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(left, _recheck(store, QUERY_RECHECK))):
                            await changed.wait()
        finally:
            await store.drop_query(qid)

    def _query_answer(self, name: str, answer: str | None, error: str | None, hint: Any) -> Any:
        if error is not None:
            try:
                failure = Failure.from_dict(json.loads(error))
            except (ValueError, AttributeError):
                raise QueryFailedError(f"query {name!r} failed: {error}") from None
            raise QueryFailedError(
                f"query {name!r} failed: {failure.message}"
            ) from failure_to_error(failure)
        return self.client.converter.decode(answer, hint)

    async def cancel(self) -> None:
        """Ask the run to cancel: the workflow sees ``asyncio.CancelledError``."""
        await self.client.store.request_cancel(self.id, self.run_id)

    async def terminate(self, reason: str = "") -> None:
        """Close the run now, without running any more workflow code.

        ``reason`` is recorded in its history: at most :data:`MAX_FAILURE_MESSAGE`
        characters, else :class:`~mainspring.PayloadTooLargeError`.
        """
        if len(reason) > MAX_FAILURE_MESSAGE:
            raise PayloadTooLargeError(
                f"the reason is {len(reason):,} characters long; the limit is "
                f"{MAX_FAILURE_MESSAGE:,}: keep it short, and store the details elsewhere"
            )
        await self.client.store.terminate(self.id, self.run_id, reason)

    async def fetch_history(self) -> list[Event]:
        """Every event of the run, in order."""
        _, events = await self.client.store.history(self.id, self.run_id)
        return events
