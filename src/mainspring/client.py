"""Client: connect to a store, start and list workflows, prune closed runs.

A started workflow is watched and steered through its :class:`~.handle.WorkflowHandle`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal

from ._durations import seconds as _seconds
from ._names import check_name
from ._trouble import report
from .converter import DEFAULT_MAX_PAYLOAD_SIZE, PayloadConverter, type_hints_of
from .errors import StoreClosedError, StoreUnavailableError
from .handle import WorkflowDescription, WorkflowHandle
from .store import Clock, Store, _worker_ops, store_from_url
from .store.records import WorkflowStatus
from .worker_info import WorkerInfo
from .workflow import WorkflowDefinition

__all__ = ["Client", "WorkflowDescription", "WorkflowHandle"]

log = logging.getLogger("mainspring.client")

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
        Mainspring's, or is newer than this code (and not made to work with it), is
        refused with a clear error.

        ``clock`` (a :class:`~mainspring.store.Clock` subclass) replaces the store's
        clock, to control time in tests. Without it, SQLite reads this machine's clock
        and PostgreSQL keeps time by the server's (see ``docs/postgres.md``).
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

    async def list_workers(self, *, task_queue: str | None = None) -> list[WorkerInfo]:
        """The workers that serve, or served within the last day, on any machine (of
        ``task_queue`` only, if given), by task queue, newest first; each says whether
        it serves, stopped, or was lost (see :class:`WorkerState`)."""
        if task_queue is not None:
            check_name(task_queue, "task_queue")
        records = await self.store.list_workers()
        now = self.store.clock.now()
        return [
            WorkerInfo.from_record(r, now, _worker_ops.WORKER_LOST)
            for r in records
            if task_queue is None or r.task_queue == task_queue
        ]

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
