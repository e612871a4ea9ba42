"""What every path of the worker's workflow side shares: its settings, the runs it keeps
in memory (each with a lock), and recording a decision."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._trouble import report
from ._workflow_code import WorkflowCode
from .converter import PayloadConverter
from .errors import SchemaVersionError, StoreClosedError, StoreError, StoreUnavailableError
from .runtime.commands import Command, ScheduleActivity, StartTimer
from .runtime.instance import WorkflowInstance
from .store.base import Store
from .store.records import ActivityTask, WorkflowTaskCompletion
from .workflow import WorkflowDefinition

log = logging.getLogger("mainspring.worker")

# How long (seconds) a worker keeps trying to give back the attempts a failed decision
# may have leased to it (see RunnerCore._hand_back); as for an activity's outcome
HAND_BACK_PATIENCE = 3600.0
HAND_BACK_REFUSED = 30.0  # ... while the database answers but refuses


@dataclass
class CachedRun:
    """A run held in memory between its steps."""

    instance: WorkflowInstance
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RunnerCore:
    """The state of a worker's workflow side, its cache of runs, and its decisions."""

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
        self._cache: collections.OrderedDict[str, CachedRun] = collections.OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_queries: set[asyncio.Task[None]] = set()
        self._handing_back: set[asyncio.Task[None]] = set()
        self._hand_backs: dict[str, asyncio.Task[None]] = {}  # the latest, by run
        self._closed = False
        self._code = WorkflowCode(deadlock_timeout, max_concurrent)
        self._slot_freed = asyncio.Event()
        self.stopping = False

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
        self._cache[run_id] = CachedRun(inst)
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

    def _forget_lock(self, run_id: str, lock: asyncio.Lock) -> None:
        """Drop an idle run's lock once the run is no longer cached."""
        if (
            self._locks.get(run_id) is lock
            and not lock.locked()
            and not getattr(lock, "_waiters", None)
            and run_id not in self._cache
        ):
            del self._locks[run_id]

    # ------------------------------------------------------------------ decisions

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
        await self._handed_back(inst.info.run_id)
        try:
            out = await self.store.complete_workflow_task(completion)
        except BaseException as exc:
            await self._unreserve(inst.info.run_id, seqs, exc)
            raise
        self._after_completion(inst, commands, out, slots)

    async def _unreserve(
        self, run_id: str, seqs: frozenset[int], exc: BaseException | None = None
    ) -> None:
        """A decision's commit raised ``exc``: free the slots reserved for its
        activities and, as the commit may have landed (a lost acknowledgement), give
        back any attempt it leased to this worker, which nothing here will run."""
        if not seqs:
            return
        self._release(len(seqs))
        if isinstance(exc, StoreUnavailableError) and not exc.maybe_saved:
            return  # surely not committed: it leased nothing
        if self._closed:
            return  # the worker has stopped: they wait out their lease
        # in the background: the decision's caller goes on, and the database may be away
        giving = asyncio.create_task(self._hand_back(run_id, seqs))
        self._handing_back.add(giving)
        self._hand_backs[run_id] = giving

        def done(t: asyncio.Task[None]) -> None:
            self._handing_back.discard(t)
            if self._hand_backs.get(run_id) is t:
                del self._hand_backs[run_id]

        giving.add_done_callback(done)

    async def _handed_back(self, run_id: str) -> None:
        """Before a decision of ``run_id`` commits: wait until a hand-back of an earlier
        decision of it is over. The new decision may lease the same attempts here
        afresh (the same fence, the same attempt) and start them; a hand-back after
        that would give them back, and they would run twice. (The run cannot go on
        while the database is away anyway.)"""
        giving = self._hand_backs.get(run_id)
        if giving is not None and not giving.done():
            await asyncio.wait([giving])  # not cancelled if this decision is

    async def _hand_back(self, run_id: str, seqs: frozenset[int]) -> None:
        """Give back the attempts of ``seqs`` if a decision leased them here: until the
        database answers (for up to :data:`HAND_BACK_PATIENCE` seconds; while it answers
        but refuses, :data:`HAND_BACK_REFUSED` seconds), or they would wait out their
        lease unrun, and time out (a run of one attempt would fail). The run's next
        decision waits for it (see :meth:`_handed_back`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        give_up, delay = started + HAND_BACK_PATIENCE, 0.05
        while True:
            if self._closed:
                return  # the worker has stopped: they wait out their lease
            try:
                n = await self.store.release_eager(run_id, self.task_queue, seqs, self.owner)
                break
            except (SchemaVersionError, StoreClosedError):
                return  # nothing more can be written: they wait out their lease
            except StoreError as exc:
                if not isinstance(exc, StoreUnavailableError):
                    give_up = min(give_up, started + HAND_BACK_REFUSED)
                if loop.time() + delay > give_up:
                    return
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
            except Exception as exc:  # noqa: BLE001 - a bug: they wait out their lease
                report(log, f"handing back activity attempts of run {run_id}", exc, "going on")
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
