"""The worker's workflow side: claims workflow tasks, replays, decides, answers queries."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from .converter import PayloadConverter
from .errors import NondeterminismError, error_to_failure
from .history import COMMAND_EVENTS, Event, EventType
from .runtime.commands import Command, ScheduleActivity, StartTimer
from .runtime.guard import DeadlockInterrupt, InlineGuard
from .runtime.instance import WorkflowInstance, WorkflowTaskError
from .store._tx import started_attributes
from .store._wakeups import QUERIES, WORKFLOWS, sticky_queue
from .store.base import Store
from .store.records import ActivityTask, WorkflowTask, WorkflowTaskCompletion
from .workflow import WorkflowDefinition, WorkflowInfo

log = logging.getLogger("mainspring.worker")

INLINE_REPLAY_LIMIT = 32  # events; longer replays run in the thread pool
T = TypeVar("T")


class DeadlockError(Exception):
    """Workflow code held the thread past the deadlock threshold."""


class NotRegisteredError(Exception):
    """The workflow type is not registered on this worker."""


@dataclass
class _Cached:
    instance: WorkflowInstance
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class WorkflowRunner:
    """Runs the workflow tasks of one task queue for a worker."""

    def __init__(
        self,
        *,
        store: Store,
        converter: PayloadConverter,
        task_queue: str,
        workflows: dict[str, WorkflowDefinition],
        owner: str,
        max_concurrent: int,
        max_cached: int,
        deadlock_timeout: float,
        poll_interval: float,
        task_lease: float,
        sticky_wait: float,
        reserve_activity_slots: Callable[[list[ScheduleActivity]], frozenset[int]],
        dispatch_activity: Callable[[ActivityTask], None],
        release_activity_slots: Callable[[int], None],
        timer_started: Callable[[], None],
    ) -> None:
        self.store = store
        self.converter = converter
        self.task_queue = task_queue
        self.workflows = workflows
        self.owner = owner
        self.max_concurrent = max_concurrent
        self.max_cached = max_cached
        self.deadlock_timeout = deadlock_timeout
        self.poll_interval = poll_interval
        self.task_lease = task_lease
        self.sticky_wait = sticky_wait
        self._reserve = reserve_activity_slots
        self._dispatch = dispatch_activity
        self._release = release_activity_slots
        self._timer_started = timer_started
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_queries: set[asyncio.Task[None]] = set()
        self._running_code: dict[asyncio.Future[Any], tuple[WorkflowInstance, int, float]] = {}
        self._guard = InlineGuard(deadlock_timeout)
        self._watchdog: asyncio.Task[None] | None = None
        self._slot_freed = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, min(max_concurrent, 32)) + 2,
            thread_name_prefix="mainspring-workflow",
        )
        self.stopping = False

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
            except Exception:
                log.exception("claiming workflow tasks failed; retrying")
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
        if not t.cancelled() and t.exception() is not None:
            log.error("workflow task handler crashed", exc_info=t.exception())

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for in-flight workflow tasks."""
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout)
        for t in list(self._inflight):
            t.cancel()

    async def release_sticky(self) -> None:
        """Shutting down: let any worker take this worker's runs' next tasks at once."""
        try:
            await self.store.release_sticky(self.task_queue, self.owner)
        except Exception as exc:  # noqa: BLE001 - they go to others after sticky_wait
            log.warning("could not hand this worker's runs to other workers (%s)", exc)

    def close(self) -> None:
        """Drop cached runs and stop the thread pool."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._guard.close()
        for c in self._cache.values():
            c.instance.discard()
        self._cache.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ cache

    def _lock(self, run_id: str) -> asyncio.Lock:
        lock = self._locks.get(run_id)
        if lock is None:
            lock = self._locks[run_id] = asyncio.Lock()
        return lock

    def _evict(self, run_id: str) -> None:
        c = self._cache.pop(run_id, None)
        if c is not None:
            c.instance.discard()
        lock = self._locks.get(run_id)
        if lock is not None and not lock.locked():
            del self._locks[run_id]

    def _remember(self, inst: WorkflowInstance) -> None:
        run_id = inst.info.run_id
        self._cache[run_id] = _Cached(inst)
        self._cache.move_to_end(run_id)
        while len(self._cache) > self.max_cached:
            old_id, _ = next(iter(self._cache.items()))
            if self._lock(old_id).locked():
                self._cache.move_to_end(old_id)
                break
            self._evict(old_id)

    @property
    def cached_runs(self) -> int:
        """How many runs are held in memory."""
        return len(self._cache)

    # ------------------------------------------------------------------ running code

    async def _in_thread(self, inst: WorkflowInstance, fn: Callable[[], T]) -> T:
        """Run ``fn`` (workflow code) in a thread; the watchdog fails it if it hangs."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        work = loop.run_in_executor(self._executor, self._guarded, inst, fn)

        def relay(w: asyncio.Future[T]) -> None:
            if fut.done():
                return  # the watchdog already failed it
            if w.cancelled():
                fut.cancel()
            elif w.exception() is not None:
                fut.set_exception(w.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(w.result())

        work.add_done_callback(relay)
        self._running_code[fut] = (inst, inst.activations, loop.time())
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch_deadlocks())
        try:
            return await fut
        finally:
            self._running_code.pop(fut, None)

    def _guarded(self, inst: WorkflowInstance, fn: Callable[[], T]) -> T:
        """Run workflow code on this thread so that a Python-level hang is interrupted."""
        running = asyncio.events._get_running_loop()
        try:
            return self._guard.run(fn, lambda: inst.activations)
        except DeadlockInterrupt:
            inst.discard()
            raise DeadlockError(self._deadlock_message(inst)) from None
        except WorkflowTaskError as exc:
            if isinstance(exc.cause, DeadlockInterrupt):  # caught by the asyncio task
                inst.discard()
                raise DeadlockError(self._deadlock_message(inst)) from None
            raise
        finally:
            # an interrupt may land before the activation put the worker's loop back
            asyncio.events._set_running_loop(running)

    def _deadlock_message(self, inst: WorkflowInstance) -> str:
        return (
            f"workflow code of {inst.info.workflow_id!r} did not yield for "
            f"{self.deadlock_timeout:g} s: it blocks the thread (time.sleep, blocking I/O "
            "or a busy loop?). Use workflow.sleep and activities; raise "
            "Worker(deadlock_timeout=…) if a step legitimately takes longer"
        )

    async def _watch_deadlocks(self) -> None:
        """Fail workflow code that made no progress for ``deadlock_timeout``."""
        loop = asyncio.get_running_loop()
        while self._running_code:
            await asyncio.sleep(self.deadlock_timeout / 4)
            now = loop.time()
            for fut, (inst, seen, since) in list(self._running_code.items()):
                if fut.done():
                    continue
                if inst.activations != seen:
                    self._running_code[fut] = (inst, inst.activations, now)
                    continue
                if now - since < self.deadlock_timeout:
                    continue
                inst.discard()
                fut.set_exception(DeadlockError(self._deadlock_message(inst)))

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

    def _forget_lock(self, run_id: str, lock: asyncio.Lock) -> None:
        """Drop an idle run's lock once the run is no longer cached."""
        if (
            self._locks.get(run_id) is lock
            and not lock.locked()
            and not getattr(lock, "_waiters", None)
            and run_id not in self._cache
        ):
            del self._locks[run_id]

    async def _handle(self, task: WorkflowTask) -> None:
        lock = self._lock(task.run_id)
        try:
            async with lock:
                try:
                    await self._process(task)
                except Exception as exc:  # noqa: BLE001 - becomes a recorded task failure
                    self._evict(task.run_id)
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
            commands = await self._in_thread(inst, run)
        else:
            commands = self._guarded(inst, run)
        through = max(task.history_length, inst.applied_through)
        inst.history_length = max(inst.history_length, task.history_length)
        await self._complete(inst, commands, fence=task.fence, through=through)

    async def _complete(
        self, inst: WorkflowInstance, commands: list[Command], *, fence: int, through: int
    ) -> None:
        schedules = [c for c in commands if isinstance(c, ScheduleActivity)]
        seqs = self._reserve(schedules) if schedules else frozenset()
        slots = len(seqs)
        completion = WorkflowTaskCompletion(
            run_id=inst.info.run_id,
            fence=fence,
            owner=self.owner,
            through=through,
            time=inst.now,
            commands=commands,
            eager_activity_slots=slots,
            eager_seqs=seqs,
        )
        try:
            out = await self.store.complete_workflow_task(completion)
        except BaseException:
            await self._unreserve(inst.info.run_id, seqs)
            raise
        self._after_completion(inst, commands, out, slots)

    async def _unreserve(self, run_id: str, seqs: frozenset[int]) -> None:
        """A decision's commit raised: free the slots reserved for its activities and,
        as the commit may have landed (a lost acknowledgement), give back any attempt it
        leased to this worker, which nothing here will run."""
        if not seqs:
            return
        self._release(len(seqs))
        try:
            n = await self.store.release_eager(run_id, self.task_queue, seqs, self.owner)
        except Exception:  # noqa: BLE001 - still down: they wait out their lease instead
            return
        if n:
            log.warning(
                "the decision for run %s was saved though its commit reported an error; "
                "handed back %d activity attempt(s) it had leased here",
                run_id,
                n,
            )

    def _after_completion(
        self, inst: WorkflowInstance, commands: list[Command], out: Any, slots: int
    ) -> None:
        if slots - len(out.eager):
            self._release(slots - len(out.eager))
        for a in out.eager:
            self._dispatch(a)
        if any(isinstance(c, StartTimer) for c in commands):
            self._timer_started()
        if not out.accepted or out.closed:
            self._evict(inst.info.run_id)
            return
        inst.history_length = out.history_length
        inst.last_marker_id = out.history_length - len(commands)
        if inst.info.run_id not in self._cache:
            self._remember(inst)
        else:
            self._cache.move_to_end(inst.info.run_id)

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
        except Exception:
            log.exception("recording the workflow task failure of %s failed", task.run_id)

    # ------------------------------------------------------------------ eager start

    async def start_eagerly(
        self, workflow_id: str, workflow_type: str, input: str, use_existing: bool
    ) -> tuple[str, bool] | None:
        """Start a run of this queue and decide its first step here, in one commit.

        Returns ``None`` (the client then starts it the ordinary way) when this worker
        does not know the type, is full or stopping, or the first step fails.
        """
        definition = self.workflows.get(workflow_type)
        if definition is None or self.stopping or len(self._inflight) >= self.max_concurrent:
            return None
        run_id = uuid.uuid4().hex
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
            commands = self._guarded(
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
        except BaseException:
            inst.discard()
            await self._unreserve(run_id, seqs)
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
        self, task: ActivityTask, result: str, cached: _Cached, lock: asyncio.Lock
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
                commands = self._guarded(
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
            try:
                out = await self.store.complete_activity_and_decide(
                    task, result, expected, completion
                )
            except BaseException:
                self._evict(task.run_id)
                await self._unreserve(task.run_id, seqs)
                raise
            if out is None:  # stale attempt: nothing recorded
                self._evict(task.run_id)
                if slots:
                    self._release(slots)
                return True
            self._after_completion(inst, commands, out, slots)
            return True

    # ------------------------------------------------------------------ queries

    async def poll_queries(self) -> None:
        """Answer queries for runs of this task queue until :attr:`stopping`."""
        while not self.stopping:
            try:
                queries = await self.store.claim_queries(self.task_queue, self.owner, 16)
            except Exception:
                log.exception("claiming queries failed; retrying")
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
                    value = await self._in_thread(inst, lambda: inst.query(name, args))
                else:
                    inst = await self._rebuild(run_id)
                    try:
                        value = await self._in_thread(inst, lambda: inst.query(name, args))
                    finally:
                        inst.discard()
            answer = self.converter.encode(value, what=f"result of query {name!r}")
        except Exception as exc:  # noqa: BLE001 - returned to the caller
            error = json.dumps(error_to_failure(exc).to_dict())
        try:
            await self.store.answer_query(query_id, answer, error)
        except Exception:
            log.exception("answering query %s failed", query_id)

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

        await self._in_thread(inst, catch_up)
        return inst


def _is_incoming(e: Event) -> bool:
    return e.event_type not in COMMAND_EVENTS and e.event_type not in (
        EventType.WORKFLOW_TASK_COMPLETED,
        EventType.WORKFLOW_TASK_FAILED,
    )
