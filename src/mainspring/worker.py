"""The Worker: serves a task queue's workflows and activities."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._activity_runner import ActivityRunner
from ._durations import seconds
from ._names import check_name
from ._trouble import report
from ._workflow_runner import WorkflowRunner
from .activity import ActivityDefinition
from .client import MIN_RETENTION
from .errors import InvalidNameError, SchemaVersionError, WorkerError
from .store import _worker_ops
from .store._worker_ops import Registration
from .workflow import WorkflowDefinition

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("mainspring.worker")


ACTIVITY_STICKINESS = 10  # attempts lean to their scheduler for this many sticky timeouts
MAX_CONCURRENCY = 10_000  # the most activity attempts or workflow tasks run at once
MAX_CACHED_WORKFLOWS = 1_000_000  # the most runs one worker keeps in memory
MAX_WORKER_TIMEOUT = timedelta(days=7)  # the longest any of the Worker's durations may be
PRUNE_EVERY = 3600.0  # seconds between a worker's prunes, when it has a retention
STOPPED_MARK = 2.0  # seconds a stopping worker gives the mark that says it stopped


class Worker:
    """Polls one task queue and runs its workflow tasks and activities.

    Use it as an async context manager (``async with Worker(...):``) around code that
    needs it, or ``await worker.run()`` to serve until SIGTERM/SIGINT. On shutdown it
    stops taking work, lets running activities finish for ``graceful_shutdown_timeout``,
    then cancels the rest (they are retried elsewhere).

    On PostgreSQL, if the database is migrated while it runs to a schema this code
    cannot run on, it stops taking work at once, cancels what runs (nothing more can be
    recorded) and sets :attr:`failure` (a :class:`~mainspring.SchemaVersionError`):
    :meth:`run` shuts down and raises it, and so does leaving ``async with`` (when its
    body raised nothing itself).

    Args:
        client: The client whose store this worker serves.
        task_queue: The queue to poll.
        workflows: ``@workflow.defn`` classes.
        activities: ``@activity.defn`` functions.
        max_concurrent_activities: Activity attempts run at once (1 to
            :data:`MAX_CONCURRENCY`).
        max_concurrent_workflow_tasks: Workflow tasks processed at once (1 to
            :data:`MAX_CONCURRENCY`).
        max_cached_workflows: Runs kept in memory between steps (1 to
            :data:`MAX_CACHED_WORKFLOWS`); evicted runs are replayed from history when
            they next wake.
        deadlock_timeout: How long workflow code may hold the thread in one step before
            the step fails as a deadlock.
        graceful_shutdown_timeout: How long running activities get to finish on shutdown.
        poll_interval: The longest a worker waits before polling again when nothing woke
            it (other processes' work is usually noticed within milliseconds).
        workflow_task_timeout: The lease on a claimed workflow task: if this worker dies
            holding it, another worker takes the run over after this long.
        sticky_timeout: How long this worker leaves a ready workflow task to the worker
            that decided the run's last step and keeps the run in memory, before taking
            it itself (which means replaying the run's whole history). A worker that
            shuts down gracefully hands its runs over at once; one that dies, after
            this long. ``timedelta(0)`` takes every ready task at once. Likewise,
            activity attempts other workers scheduled are claimed after this worker's
            own, unless they have waited ten times this long (oldest first, so none
            starves).
        retention: If given, this worker deletes the runs that closed longer ago than
            this, with their histories (:meth:`Client.prune_closed_runs`): when it starts,
            then about every :data:`PRUNE_EVERY` seconds. At least an hour. Several
            workers may all do it; none deletes a run twice. ``None`` (the default)
            keeps every run until pruned some other way.
        identity: This worker's name in leases; defaults to ``host:pid:random``.
        activity_executor: The thread pool of sync activities (default: one sized to
            ``max_concurrent_activities``).

    Every duration is a ``timedelta`` or a number of seconds, finite and at most
    :data:`MAX_WORKER_TIMEOUT`; ``deadlock_timeout``, ``poll_interval`` and
    ``workflow_task_timeout`` must be more than zero, the others may be zero.

    Raises:
        WorkerError: an argument is out of range (the message names it).
        TypeError: a count is not an ``int``, or a duration neither a ``timedelta``
            nor a number.
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        workflows: Sequence[type] = (),
        activities: Sequence[Callable[..., Any]] = (),
        max_concurrent_activities: int = 100,
        max_concurrent_workflow_tasks: int = 100,
        max_cached_workflows: int = 1000,
        deadlock_timeout: timedelta | float = timedelta(seconds=2),
        graceful_shutdown_timeout: timedelta | float = timedelta(seconds=10),
        poll_interval: timedelta | float = timedelta(seconds=1),
        workflow_task_timeout: timedelta | float = timedelta(seconds=10),
        sticky_timeout: timedelta | float = timedelta(milliseconds=200),
        retention: timedelta | float | None = None,
        identity: str | None = None,
        activity_executor: ThreadPoolExecutor | None = None,
    ) -> None:
        try:
            check_name(task_queue, "task_queue")
            if identity is not None:
                check_name(identity, "worker identity")
        except InvalidNameError as exc:
            raise WorkerError(str(exc)) from None
        if not workflows and not activities:
            raise WorkerError("a worker needs at least one workflow or activity")
        for name, value, most in (
            ("max_concurrent_activities", max_concurrent_activities, MAX_CONCURRENCY),
            ("max_concurrent_workflow_tasks", max_concurrent_workflow_tasks, MAX_CONCURRENCY),
            ("max_cached_workflows", max_cached_workflows, MAX_CACHED_WORKFLOWS),
        ):
            _check_count(name, value, most)
        deadlock = _seconds("deadlock_timeout", deadlock_timeout)
        lease = _seconds("workflow_task_timeout", workflow_task_timeout)
        poll = _seconds("poll_interval", poll_interval)
        grace = _seconds("graceful_shutdown_timeout", graceful_shutdown_timeout, zero=True)
        sticky = _seconds("sticky_timeout", sticky_timeout, zero=True)
        keep = None if retention is None else seconds("retention", retention, error=WorkerError)
        if keep is not None and keep < MIN_RETENTION:
            raise WorkerError(
                f"retention must be at least an hour ({MIN_RETENTION:g} s), not {keep:g} s"
            )
        self.client = client
        self.task_queue = task_queue
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._workflows = _register_workflows(workflows)
        self._activities = _register_activities(activities)
        self._grace = grace
        self._poll = poll
        self._sticky = sticky
        self._retention = keep
        self._stop_wake = asyncio.Event()  # set when shutting down: sleepers stop
        self._registration = Registration(  # its row in the registry of workers
            instance=uuid.uuid4().hex,
            identity=self.identity,
            task_queue=self.task_queue,
            workflows=sorted(self._workflows),
            activities=sorted(self._activities),
        )
        self._registered = False
        self._own_executor = activity_executor is None
        self._executor = activity_executor or ThreadPoolExecutor(
            max_workers=max_concurrent_activities, thread_name_prefix="mainspring-activity"
        )
        store = client.store
        self._timer_wake = asyncio.Event()
        self._activity = ActivityRunner(
            store=store,
            converter=client.converter,
            task_queue=task_queue,
            activities=self._activities,
            owner=self.identity,
            max_concurrent=max_concurrent_activities,
            poll_interval=self._poll,
            # the order of claims only: no attempt waits for its scheduler, so a longer
            # window costs a dead worker's attempts nothing, and keeps more steps whole
            sticky_wait=ACTIVITY_STICKINESS * self._sticky,
            executor=self._executor,
            try_decide=self._try_decide,
            schedule_changed=self._timer_wake.set,
        )
        self._workflow = WorkflowRunner(
            store=store,
            converter=client.converter,
            task_queue=task_queue,
            workflows=self._workflows,
            owner=self.identity,
            max_concurrent=max_concurrent_workflow_tasks,
            max_cached=max_cached_workflows,
            deadlock_timeout=deadlock,
            poll_interval=self._poll,
            task_lease=lease,
            sticky_wait=self._sticky,
            reserve_activity_slots=self._activity.reserve,
            dispatch_activity=self._activity.dispatch,
            release_activity_slots=self._activity.release,
            timer_started=self._timer_wake.set,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._started = False
        # why the worker stopped taking work by itself (the database was migrated past
        # this code); run() raises it once shut down
        self.failure: SchemaVersionError | None = None
        self._failed = asyncio.Event()
        self._unhook: Callable[[], None] = lambda: None

    async def _try_decide(self, task: Any, result: str) -> bool:
        if not self._workflows:
            return False
        return await self._workflow.try_decide(task, result)

    @property
    def cached_workflows(self) -> int:
        """Runs currently held in this worker's cache."""
        return self._workflow.cached_runs

    async def start(self) -> None:
        """Start polling. Failed workflow tasks of this queue are retried at once.

        Raises :class:`~mainspring.WorkerError` if this worker was shut down (or failed
        to start): a worker serves once; create a new one to serve again.
        """
        if self._stopped.is_set():
            raise WorkerError(
                f"worker {self.identity} was shut down (or failed to start); create a new "
                "Worker to serve again"
            )
        if self._started:
            return
        self._started = True
        store = self.client.store
        # an outgrown store stops the worker at once, not at its next maintenance pass
        self._unhook = store.on_outgrown(
            lambda: self._fail(SchemaVersionError(store.outgrown or "outgrown"))
        )
        try:
            await self._start_polling()
        except BaseException:
            self._unhook()  # (run() shuts down, but `async with` would not)
            for t in self._tasks:
                t.cancel()
            raise

    async def _start_polling(self) -> None:
        store = self.client.store
        if self._workflows:
            await store.reset_backoff(self.task_queue)
            store.add_eager_starter(self.task_queue, self._workflow.start_eagerly)
            self._tasks.append(asyncio.create_task(self._workflow.poll()))
            self._tasks.append(asyncio.create_task(self._workflow.poll_queries()))
        if self._activities:
            self._tasks.append(asyncio.create_task(self._activity.poll()))
        self._tasks.append(asyncio.create_task(self._maintain()))
        if self._retention is not None:
            self._tasks.append(asyncio.create_task(self._prune(self._retention)))
        await self._register()
        log.info(
            "worker %s serving task queue %r: %d workflow(s), %d activity(ies)",
            self.identity,
            self.task_queue,
            len(self._workflows),
            len(self._activities),
        )

    async def _maintain(self) -> None:
        store = self.client.store
        while not self._workflow.stopping:
            if store.outgrown is not None:
                self._fail(SchemaVersionError(store.outgrown))
                return
            try:
                wake = await store.maintain(self.task_queue, self._sticky)
            except Exception as exc:  # noqa: BLE001 - reported; the loop goes on
                report(log, "the maintenance pass (timers, timeouts)", exc)
                wake = None
            now = store.clock.now()
            delay = self._poll if wake is None else max(0.0, min(self._poll, wake.at - now))
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timer_wake.wait()
            if wake is not None and store.clock.now() >= wake.at:
                # a retry backoff, a sticky wait or a lease ran out: wake whose work it is
                store.notify(self.task_queue, wake.kind)

    async def _register(self) -> None:
        """Say this worker serves (see :meth:`Client.list_workers`), then keep saying
        it. Only people read it: a failure is logged, and the next mark writes the row."""
        self._registered = True
        try:
            await self.client.store.register_worker(self._registration)
        except Exception as exc:  # noqa: BLE001 - it serves all the same
            report(log, "registering this worker", exc, "it registers at its next mark")
        self._tasks.append(asyncio.create_task(self._say_alive()))

    async def _say_alive(self) -> None:
        """Mark this worker alive every
        :data:`~.store._worker_ops.WORKER_HEARTBEAT` seconds while it serves (see
        :meth:`Client.list_workers`)."""
        store = self.client.store
        while not self._workflow.stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_worker_ops.WORKER_HEARTBEAT):
                    await self._stop_wake.wait()
            if self._workflow.stopping:
                return
            try:
                await store.worker_seen(self._registration)
            except Exception as exc:  # noqa: BLE001 - reported; marked again next time
                report(log, "marking this worker alive", exc)

    def _fail(self, failure: SchemaVersionError) -> None:
        """Stop taking work for good: :meth:`run` shuts down and raises ``failure``."""
        if self.failure is not None:
            return
        self.failure = failure
        self._workflow.stopping = True
        self._activity.stopping = True
        self._workflow.wake()
        self._activity.wake()
        self._failed.set()
        log.error("worker %s stops taking work: %s", self.identity, failure)

    async def _prune(self, retention: float) -> None:
        """Delete runs closed longer ago than ``retention``, now and about every
        :data:`PRUNE_EVERY` seconds (with jitter, so workers started together spread out)."""
        while not self._workflow.stopping:
            try:
                n = await self.client.prune_closed_runs(retention)
                if n:
                    log.info("pruned %d run(s) closed over %g s ago", n, retention)
            except Exception as exc:  # noqa: BLE001 - reported; tried again next time
                report(log, "pruning closed runs", exc, "trying again later")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PRUNE_EVERY * random.uniform(0.9, 1.1)):
                    await self._stop_wake.wait()

    async def shutdown(self) -> None:
        """Stop taking work, let running work finish (up to the grace period), stop."""
        if not self._started or self._stopped.is_set():
            self._stopped.set()
            return
        self.client.store.remove_eager_starter(self.task_queue, self._workflow.start_eagerly)
        self._unhook()
        self._workflow.stopping = True
        self._activity.stopping = True
        self.client.store.notify()
        self._timer_wake.set()
        self._stop_wake.set()
        self._workflow.wake()
        self._activity.wake()
        # other workers take its runs' next steps from now on (unless the database is
        # silent: then it is not asked again below, and they wait out the sticky wait)
        # (a worker whose start failed before it polled holds no runs: nothing to hand over)
        served = self._workflows and self._tasks
        answered = await self._workflow.release_sticky() if served else False
        pending = {t for t in self._tasks if not t.done()}
        while pending:  # pollers check `stopping` at every turn
            _, pending = await asyncio.wait(pending, timeout=1.0)
            for t in pending:
                t.cancel()
        # nothing more can be recorded once the schema has outgrown this code: running
        # work is cancelled at once rather than finished in vain (it runs again elsewhere)
        grace = 0.0 if self.failure is not None else self._grace
        await self._activity.drain(grace)
        await self._workflow.drain(grace)
        if answered:  # again: steps decided while draining made runs sticky here
            await self._workflow.release_sticky()
        self._workflow.close()
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        # others then see it stopped, not lost (unless the database is known to be
        # silent, or outgrown: then it shows as lost a minute later)
        if self._registered and self.failure is None and (answered or not served):
            try:
                async with asyncio.timeout(STOPPED_MARK):
                    await self.client.store.worker_stopped(self._registration.instance)
            except TimeoutError:
                log.warning(
                    "could not mark worker %s stopped (the database did not answer within "
                    "%g s); it is listed as lost a minute from now",
                    self.identity,
                    STOPPED_MARK,
                )
            except Exception as exc:  # noqa: BLE001 - as above
                report(log, "marking this worker stopped", exc, "going on")
        self._stopped.set()
        if self._tasks:  # it served (a start that failed before polling logs nothing)
            log.info("worker %s stopped", self.identity)

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT (or :meth:`shutdown`), then shut down gracefully.

        Raises :class:`~mainspring.SchemaVersionError` (after shutting down) if the
        database was migrated, while it ran, to a schema this code cannot run on.
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        try:
            await self.start()
            waits = [asyncio.create_task(e.wait()) for e in (self._stopped, stop, self._failed)]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.shutdown()
        if self.failure is not None:
            raise self.failure

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
        if exc is None and self.failure is not None:
            raise self.failure


def _check_count(name: str, value: object, most: int) -> None:
    """Refuse a count that is not an ``int`` from 1 to ``most``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= value <= most:
        raise WorkerError(f"{name} must be from 1 to {most:,}, not {value:,}")


def _seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` in seconds, checked (:func:`._durations.seconds`): at most
    :data:`MAX_WORKER_TIMEOUT`, and more than zero (or zero too, with ``zero``)."""
    return seconds(
        name, value, zero=zero, most=MAX_WORKER_TIMEOUT.total_seconds(), error=WorkerError
    )


def _register_workflows(classes: Sequence[type]) -> dict[str, WorkflowDefinition]:
    out: dict[str, WorkflowDefinition] = {}
    for cls in classes:
        try:
            d = WorkflowDefinition.of(cls)
        except TypeError as exc:
            raise WorkerError(str(exc)) from exc
        if d.name in out and out[d.name].cls is not cls:
            raise WorkerError(
                f"two workflows are named {d.name!r}; give one @workflow.defn(name=…)"
            )
        out[d.name] = d
    return out


def _register_activities(fns: Sequence[Callable[..., Any]]) -> dict[str, ActivityDefinition]:
    out: dict[str, ActivityDefinition] = {}
    for fn in fns:
        try:
            d = ActivityDefinition.of(fn)
        except TypeError as exc:
            raise WorkerError(str(exc)) from exc
        if d.name in out and out[d.name].fn is not d.fn:
            raise WorkerError(
                f"two activities are named {d.name!r}; give one @activity.defn(name=…)"
            )
        out[d.name] = d
    return out
