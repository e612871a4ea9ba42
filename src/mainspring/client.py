"""Client and WorkflowHandle: start, signal, query, cancel and watch workflows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from ._durations import seconds as _seconds
from ._names import check_name
from ._trouble import report
from .converter import DEFAULT_MAX_PAYLOAD_SIZE, PayloadConverter, type_hints_of
from .errors import (
    MAX_FAILURE_MESSAGE,
    Failure,
    PayloadTooLargeError,
    QueryFailedError,
    QueryTimeoutError,
    StoreClosedError,
    StoreUnavailableError,
    WorkflowFailureError,
    WorkflowResultTimeoutError,
    failure_to_error,
)
from .history import Event
from .store import Clock, Store, store_from_url
from .store.records import RunRecord, WorkflowStatus
from .workflow import WorkflowDefinition, check_handler_args

__all__ = ["Client", "WorkflowDescription", "WorkflowHandle"]

log = logging.getLogger("mainspring.client")

# A run closing (or a query's answer) wakes its waiters at once, in any process. While
# the store might miss another process's change (Store.live_wakeups is false: the
# PostgreSQL listener is down or turned off), waiters also read their state again this
# often (seconds); while it hears every change, only every LIVE_RECHECK, as a safety net.
QUERY_RECHECK = 0.5
RESULT_RECHECK = 2.0
LIVE_RECHECK = 30.0
# seconds start_workflow() keeps re-sending a start whose outcome it could not learn
START_RETRY_WINDOW = 30.0
# Runs closed more recently than this are never pruned. A start re-sent after a lost
# answer finds its run by id; were the run pruned meanwhile, it would start it again.
# A re-send can arrive a minute or more after the first commit (up to 30 s to learn
# the answer was lost, START_RETRY_WINDOW of re-sends, a connect timeout on the last),
# and the pruner's clock may differ from the closing worker's: an hour is far beyond
# both. A client about to read a result needs the run too.
MIN_RETENTION = 3600.0
MAX_LIST_LIMIT = 2**31 - 1  # the most runs one list_workflows call returns


def _recheck(store: Store, polling: float) -> float:
    """How long a waiter waits for a wake-up before it reads its state again."""
    return max(polling, LIVE_RECHECK) if store.live_wakeups else polling


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

    @property
    def blocked(self) -> bool:
        """Whether the run is stuck on a failing workflow task."""
        return self.status is WorkflowStatus.RUNNING and self.workflow_task_failure is not None

    @classmethod
    def from_record(cls, r: RunRecord) -> WorkflowDescription:
        """Build from a store record."""
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
        )


def _workflow_target(workflow: Any) -> tuple[str, list[Any], Any]:
    """(name, argument hints, return hint) of a workflow given by method, class or name."""
    if isinstance(workflow, str):
        return check_name(workflow, "workflow name"), [], None
    if isinstance(workflow, type):
        d = WorkflowDefinition.of(workflow)
        return d.name, d.arg_hints, d.return_hint
    name = getattr(workflow, "__mainspring_workflow_name__", None)
    if name is None:
        raise TypeError(
            f"{workflow!r} is not a workflow: pass the @workflow.run method "
            "(MyWorkflow.run), the class, or the workflow's name"
        )
    hints, ret = type_hints_of(workflow)
    return str(name), hints, ret


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


class Client:
    """A connection to a Mainspring store. Cheap to share; one per process is typical."""

    def __init__(self, store: Store, converter: PayloadConverter | None = None) -> None:
        self.store = store
        self.converter = converter or PayloadConverter()

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
        clock: Clock | None = None,
    ) -> Client:
        """Open the store at ``url`` (default: ``MAINSPRING_DB``, else ``sqlite:///mainspring.db``).

        The schema is created or migrated on first use; a database that is not
        Mainspring's, or is newer than this code, is refused with a clear error.
        """
        store = store_from_url(url, clock=clock)
        await store.open()
        return cls(store, PayloadConverter(max_payload_size))

    async def close(self) -> None:
        """Close the store (after queued writes commit)."""
        await self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start_workflow(
        self,
        workflow: Callable[..., Any] | type | str,
        *args: Any,
        id: str,
        task_queue: str,
        id_conflict_policy: Literal["fail", "use_existing"] = "fail",
        result_type: Any = None,
    ) -> WorkflowHandle:
        """Start a workflow; return its handle.

        Idempotent by ``id``: if a run with this id is open, raises
        :class:`~mainspring.WorkflowAlreadyStartedError`, or with
        ``id_conflict_policy="use_existing"`` returns a handle to that run. Arguments
        that cannot be serialized, or are too large, raise before anything is stored.

        Exactly once: when the database cannot be reached, or the answer to the commit
        is lost, the same start (same run id) is sent again, for up to
        :data:`START_RETRY_WINDOW` seconds; if the first one committed, its run is
        returned, even if it has closed meanwhile, and no second run starts. After the
        window, :class:`~mainspring.StoreUnavailableError` says the start may or may
        not have happened.
        """
        check_name(id, "workflow id")
        check_name(task_queue, "task_queue")
        if id_conflict_policy not in ("fail", "use_existing"):
            raise ValueError('id_conflict_policy must be "fail" or "use_existing"')
        name, _, ret = _workflow_target(workflow)
        payload = self.converter.encode_args(args, what=f"arguments of workflow {name!r}")
        use_existing = id_conflict_policy == "use_existing"
        run_id = uuid.uuid4().hex  # named here, so a start sent again is known as the same
        try:
            for starter in self.store.eager_starters(task_queue):
                # a worker in this process decides the first step in the same commit
                started = await starter(id, name, payload, use_existing, run_id)
                if started is not None:
                    return WorkflowHandle(
                        self, id, run_id=started[0], result_type=result_type or ret
                    )
            started = await self.store.start_workflow(
                workflow_id=id,
                workflow_type=name,
                task_queue=task_queue,
                input=payload,
                use_existing=use_existing,
                run_id=run_id,
            )
        except StoreUnavailableError as exc:
            started = await self._start_again(
                id, name, task_queue, payload, use_existing, run_id, exc
            )
        return WorkflowHandle(self, id, run_id=started[0], result_type=result_type or ret)

    async def _start_again(
        self,
        workflow_id: str,
        workflow_type: str,
        task_queue: str,
        payload: str,
        use_existing: bool,
        run_id: str,
        error: StoreUnavailableError,
    ) -> tuple[str, bool]:
        """Send a start whose outcome is unknown again, until the database answers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_RETRY_WINDOW
        delay = 0.1

        maybe = error.maybe_saved  # whether any attempt may have committed

        def unknown(why: str) -> StoreUnavailableError:
            if not maybe:  # every attempt was refused or never sent: nothing was saved
                return StoreUnavailableError(
                    f"workflow {workflow_id!r} was not started: {why} ({error}); nothing "
                    "was saved, so starting it again is safe",
                    maybe_saved=False,
                )
            return StoreUnavailableError(
                f"workflow {workflow_id!r} may or may not have started: {why} ({error}); "
                'start it again with id_conflict_policy="use_existing", or look for it '
                "with get_workflow_handle()"
            )

        while True:
            report(log, f"starting workflow {workflow_id!r}", error, "retrying")
            left = deadline - loop.time()
            if left <= 0:
                raise unknown(
                    f"the database gave no answer within {START_RETRY_WINDOW:g} s"
                    if maybe
                    else f"for {START_RETRY_WINDOW:g} s the database could not take it"
                ) from error
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)
            try:
                return await self.store.start_workflow(
                    workflow_id=workflow_id,
                    workflow_type=workflow_type,
                    task_queue=task_queue,
                    input=payload,
                    use_existing=use_existing,
                    run_id=run_id,
                    resent=True,
                )
            except StoreUnavailableError as exc:
                error = exc
                maybe = maybe or exc.maybe_saved
            except StoreClosedError as exc:  # the client was closed meanwhile
                raise unknown("the client was closed before the database answered") from exc

    async def execute_workflow(
        self,
        workflow: Callable[..., Any] | type | str,
        *args: Any,
        id: str,
        task_queue: str,
        id_conflict_policy: Literal["fail", "use_existing"] = "fail",
        result_type: Any = None,
    ) -> Any:
        """Start a workflow and wait for its result."""
        handle = await self.start_workflow(
            workflow,
            *args,
            id=id,
            task_queue=task_queue,
            id_conflict_policy=id_conflict_policy,
            result_type=result_type,
        )
        return await handle.result()

    def get_workflow_handle(
        self, workflow_id: str, *, run_id: str | None = None, result_type: Any = None
    ) -> WorkflowHandle:
        """A handle to an existing workflow (its latest run unless ``run_id`` is given)."""
        return WorkflowHandle(self, workflow_id, run_id=run_id, result_type=result_type)

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | str | None = None,
        workflow_type: str | None = None,
        limit: int = 100,
    ) -> list[WorkflowDescription]:
        """Runs, newest first, optionally filtered by status and workflow type: at most
        ``limit`` of them (a whole number from 0 to :data:`MAX_LIST_LIMIT`, else
        ``ValueError``). ``status`` is a :class:`WorkflowStatus` or its name in any case
        (``"running"``), else ``ValueError`` listing the valid ones."""
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 0 <= limit <= MAX_LIST_LIMIT
        ):
            raise ValueError(
                f"limit must be a whole number from 0 to {MAX_LIST_LIMIT:,}, not {limit!r}"
            )
        st: str | None = None
        if status is not None:
            try:
                st = WorkflowStatus(status.upper() if isinstance(status, str) else status).value
            except ValueError:
                valid = ", ".join(repr(s.value.lower()) for s in WorkflowStatus)
                raise ValueError(
                    f"status must be one of {valid} (any case), a WorkflowStatus, or None; "
                    f"not {status!r}"
                ) from None
        if workflow_type is not None:
            check_name(workflow_type, "workflow type")
        records = await self.store.list_runs(status=st, workflow_type=workflow_type, limit=limit)
        return [WorkflowDescription.from_record(r) for r in records]

    async def prune_closed_runs(
        self, older_than: timedelta | float, *, dry_run: bool = False
    ) -> int:
        """Delete every run that closed more than ``older_than`` ago (a ``timedelta`` or
        seconds), each whole with its history; return how many were deleted.

        Open runs are never touched, whatever their age. With ``dry_run``, nothing is
        deleted and the return value is how many would be. ``older_than`` must be at
        least :data:`MIN_RETENTION` (an hour), else ``ValueError``. Safe to run from
        several processes at once, and to run again after a failure part way.
        """
        seconds = _seconds("older_than", older_than)
        if seconds < MIN_RETENTION:
            raise ValueError(
                f"older_than must be at least {MIN_RETENTION:g} seconds (an hour), not "
                f"{older_than!r}: a start re-sent after a lost answer, or a client about "
                "to read a result, may still need a run that closed more recently"
            )
        cutoff = self.store.clock.now() - seconds
        if dry_run:
            return await self.store.count_prunable(cutoff)
        return await self.store.prune_closed_runs(cutoff)


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
        """The run's status, times, failure and (when blocked) its workflow task failure."""
        record = await self.client.store.describe(self.id, self.run_id)
        return WorkflowDescription.from_record(record)

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
