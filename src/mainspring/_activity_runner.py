"""The worker's activity side: claims attempts, runs them, heartbeats, records results."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import activity as activity_mod
from ._trouble import report
from .activity import ActivityDefinition, ActivityInfo
from .converter import PayloadConverter
from .errors import (
    ApplicationError,
    CancelledFailure,
    PayloadError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    TimeoutFailure,
    error_to_failure,
)
from .runtime.commands import ScheduleActivity
from .store._wakeups import ACTIVITIES
from .store.base import Store
from .store.records import ActivityTask

log = logging.getLogger("mainspring.worker")

# How long (seconds) a worker keeps trying to record an attempt's outcome while the
# database fails it (a restart, a failover, a cut connection, a lock or statement
# timeout, a right revoked): a finished activity's result is not thrown away for a
# blip. Each try is fenced, so one after a commit whose answer was lost changes
# nothing; once another worker has taken the attempt over, the try is refused as stale.
RECORD_PATIENCE = 3600.0
# ... and while the database answers but refuses the write (StoreError but not
# StoreUnavailableError: a lock or statement timeout, a right revoked)
REFUSED_PATIENCE = 30.0
RECORD_RETRY_MAX = 2.0  # the longest wait between two tries


class _Slot:
    """Whether a running attempt has given its slot back already."""

    __slots__ = ("freed",)

    def __init__(self) -> None:
        self.freed = False


class ActivityRunner:
    """Runs the activity attempts of one task queue for a worker."""

    def __init__(
        self,
        *,
        store: Store,
        converter: PayloadConverter,
        task_queue: str,
        activities: dict[str, ActivityDefinition],
        owner: str,
        max_concurrent: int,
        poll_interval: float,
        sticky_wait: float,
        executor: ThreadPoolExecutor,
        try_decide: Callable[[ActivityTask, str], Awaitable[bool]],
        schedule_changed: Callable[[], None],
    ) -> None:
        self.store = store
        self.converter = converter
        self.task_queue = task_queue
        self.activities = activities
        self.owner = owner
        self.max_concurrent = max_concurrent
        self.poll_interval = poll_interval
        self.sticky_wait = sticky_wait
        self._executor = executor
        self._try_decide = try_decide
        self._schedule_changed = schedule_changed
        self._free = max_concurrent
        self._slot_freed = asyncio.Event()
        # every attempt's task (a late one of an attempt, still recording, stays apart
        # from the next attempt of the same activity)
        self._running: dict[tuple[str, int, int], asyncio.Task[None]] = {}
        self.stopping = False

    # ------------------------------------------------------------------ slots

    def reserve(self, schedules: list[ScheduleActivity]) -> frozenset[int]:
        """Reserve slots to take freshly scheduled activities of this queue eagerly;
        return the sequence numbers of the activities to take."""
        if self.stopping:
            return frozenset()
        wanted = [
            s.seq
            for s in schedules
            if s.task_queue == self.task_queue and s.activity_type in self.activities
        ][: max(self._free, 0)]
        self._free -= len(wanted)
        return frozenset(wanted)

    def release(self, n: int) -> None:
        """Give back reserved slots that were not used."""
        self._free += n
        self._slot_freed.set()

    def dispatch(self, task: ActivityTask) -> None:
        """Run a claimed attempt whose slot is already reserved."""
        slot = _Slot()
        t = asyncio.create_task(self._execute(task, slot))
        key = (task.run_id, task.seq, task.fence)
        self._running[key] = t

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(key, None)
            if not slot.freed:
                self.release(1)

        t.add_done_callback(done)

    # ------------------------------------------------------------------ polling

    def wake(self) -> None:
        """Wake the poller (to notice :attr:`stopping`)."""
        self._slot_freed.set()

    async def poll(self) -> None:
        """Claim and run attempts until :attr:`stopping`."""
        while not self.stopping:
            if self._free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            n = self._free
            self._free -= n
            try:
                tasks = await self.store.claim_activities(
                    self.task_queue, self.owner, n, self.sticky_wait
                )
            except Exception as exc:  # noqa: BLE001 - reported; the loop goes on
                self._free += n
                report(log, "claiming activities", exc)
                await asyncio.sleep(self.poll_interval)
                continue
            self._free += n - len(tasks)
            for task in tasks:
                self.dispatch(task)
            if len(tasks) < n:
                # Everything ready was taken: rest until more is scheduled for other
                # workers to claim. Claiming again at once would hold the free slots in
                # a claim in flight, and the workflow runner could not take the
                # activities it schedules eagerly (in the same commit, no claim at all).
                await self.store.wait_for_work(self.task_queue + ACTIVITIES, self.poll_interval)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for running attempts, then cancel the rest."""
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=timeout)
        for t in list(self._running.values()):
            t.cancel()
        rest = list(self._running.values())
        if rest:
            await asyncio.wait(rest, timeout=5)

    # ------------------------------------------------------------------ one attempt

    async def _execute(self, task: ActivityTask, slot: _Slot) -> None:
        defn = self.activities.get(task.activity_type)
        try:
            if defn is None:
                known = ", ".join(sorted(self.activities)) or "none"
                raise ApplicationError(
                    f"activity type {task.activity_type!r} is not registered on this worker "
                    f"of task queue {task.task_queue!r} (registered: {known}); add it to "
                    "Worker(activities=[...])",
                    type="ActivityNotRegistered",
                )
            result = await self._invoke(defn, task)
            text = self._encode_result(result, task)
        except asyncio.CancelledError:
            if self.stopping:  # give the attempt back untried: it is not the task's fault
                try:
                    await self.store.release_activity(task)
                except Exception as exc:  # noqa: BLE001 - its lease runs out instead
                    report(
                        log,
                        f"giving back activity {task.activity_type}",
                        exc,
                        "its lease runs out instead",
                    )
                return
            raise
        except BaseException as exc:  # noqa: BLE001 - recorded as the attempt's failure
            await self._record_failure(task, exc)
            return
        # The attempt is over: its slot passes to the activity the run schedules next,
        # which the decision below can then take in the same commit.
        slot.freed = True
        self._free += 1
        self._slot_freed.set()

        async def record() -> bool:
            if await self._try_decide(task, text):
                return True
            return await self.store.complete_activity(task, text)

        await self._record(f"the result of activity {task.activity_type}", record)

    async def _record(self, what: str, write: Callable[[], Awaitable[bool]]) -> None:
        """Run ``write``, which records an attempt's outcome (and returns whether it
        landed, not refused as stale); on a database error, again and again, with
        backoff, for up to :data:`RECORD_PATIENCE` seconds: each try is fenced, so
        trying again is safe whatever the error. A store that was closed or outgrown,
        or anything that is not a database error, ends it at once (logged): the attempt
        then runs again when its lease runs out."""
        tried = [0]
        try:
            await self._record_tries(what, write, tried)
        except asyncio.CancelledError:
            if tried[0]:  # the worker stops (its grace period is over) while it waits
                log.warning(
                    "gave up recording %s as the worker stopped; the attempt runs again "
                    "when its lease runs out",
                    what,
                )
            raise

    async def _record_tries(
        self, what: str, write: Callable[[], Awaitable[bool]], tried: list[int]
    ) -> None:
        """:meth:`_record`'s tries (``tried[0]`` counts those that failed)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        give_up = started + RECORD_PATIENCE
        delay, tries = 0.05, 0
        while True:
            try:
                landed = await write()
            except (SchemaVersionError, StoreClosedError) as exc:
                report(log, f"recording {what}", exc, "it runs again when its lease runs out")
                return
            except StoreError as exc:
                tries = tried[0] = tries + 1
                if not isinstance(exc, StoreUnavailableError):
                    # the database answers, but refuses: a lock or statement timeout
                    # passes within seconds; anything longer is a fault for people to
                    # fix, and the attempt's lease would soon run out meanwhile
                    give_up = min(give_up, started + REFUSED_PATIENCE)
                if loop.time() + delay > give_up:
                    log.warning(
                        "recording %s failed for %g s: %s; it runs again when its lease runs out",
                        what,
                        RECORD_PATIENCE,
                        exc,
                    )
                    return
                if tries == 1:  # one line for all of them (at most every 30 s)
                    report(
                        log,
                        "recording activity outcomes",
                        exc,
                        "trying again until the database answers",
                    )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECORD_RETRY_MAX)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug: the attempt runs again
                report(log, f"recording {what}", exc, "it runs again when its lease runs out")
                return
            if tries:
                log.debug(
                    "recorded %s after %d tries%s",
                    what,
                    tries + 1,
                    "" if landed else " (refused: another attempt had taken over)",
                )
            return

    def _encode_result(self, result: Any, task: ActivityTask) -> str:
        try:
            return self.converter.encode(result, what=f"result of activity {task.activity_type!r}")
        except PayloadError as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc

    async def _record_failure(self, task: ActivityTask, exc: BaseException) -> None:
        failure = error_to_failure(exc)
        if isinstance(exc, CancelledFailure):
            failure = type(failure)(
                type="CancelledError", message="activity cancelled", kind="CancelledFailure"
            )

        async def record() -> bool:
            landed = await self.store.fail_activity(task, failure.to_dict())
            self._schedule_changed()  # a retry may now be due soon
            return landed

        await self._record(f"the failure of activity {task.activity_type}", record)

    async def _invoke(self, defn: ActivityDefinition, task: ActivityTask) -> Any:
        args = self.converter.decode_args(task.input, defn.arg_hints)
        details = json.loads(task.heartbeat_details) if task.heartbeat_details else []
        info = ActivityInfo(
            activity_id=str(task.seq),
            activity_type=task.activity_type,
            attempt=task.attempt,
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            workflow_type=task.workflow_type,
            task_queue=task.task_queue,
            idempotency_key=f"{task.workflow_id}/{task.run_id}/{task.seq}",
            heartbeat_details=details,
            scheduled_time=task.scheduled_at,
        )
        loop = asyncio.get_running_loop()
        beat = _Heartbeater(self, task, loop, asyncio.current_task())
        ctx = activity_mod._Context(info, beat.threadsafe_heartbeat)
        beat.ctx = ctx
        token = activity_mod._current.set(ctx)  # this task's own context
        timeout = None
        if task.attempt_deadline is not None:
            timeout = max(0.0, task.attempt_deadline - self.store.clock.now())
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                if defn.is_async:
                    return await defn.fn(*args)
                context = contextvars.copy_context()
                return await loop.run_in_executor(self._executor, context.run, defn.fn, *args)
        except TimeoutError:
            if not limit.expired():
                raise  # the activity's own TimeoutError
            kind = (
                "start_to_close"
                if task.options.get("start_to_close_timeout")
                else "schedule_to_close"
            )
            raise TimeoutFailure(
                f"activity {task.activity_type!r} attempt {task.attempt} ran past its "
                f"{kind} timeout",
                timeout_type=kind,
            ) from None
        except asyncio.CancelledError:
            if beat.cancelled and not self.stopping:
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                raise CancelledFailure("activity cancelled") from None
            raise
        finally:
            activity_mod._current.reset(token)
            await beat.flush()


class _Heartbeater:
    """Sends an attempt's heartbeats, throttled, and cancels it when asked to stop."""

    def __init__(
        self,
        runner: ActivityRunner,
        task: ActivityTask,
        loop: asyncio.AbstractEventLoop,
        work: asyncio.Future[Any] | None,
    ) -> None:
        self.runner = runner
        self.task = task
        self.loop = loop
        self.ctx: activity_mod._Context | None = None
        self.work = work
        hb = task.options.get("heartbeat_timeout")
        self.interval = min(float(hb) * 0.5, 1.0) if hb else 1.0
        self.pending: list[Any] | None = None
        self.last_sent = 0.0
        self.sending: asyncio.Task[None] | None = None
        self.cancelled = False

    def threadsafe_heartbeat(self, details: list[Any]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.heartbeat(details)
        else:
            self.loop.call_soon_threadsafe(self.heartbeat, details)

    def heartbeat(self, details: list[Any]) -> None:
        self.pending = details
        if self.sending is None or self.sending.done():
            self.sending = asyncio.ensure_future(self._send_soon())

    async def _send_soon(self) -> None:
        wait = self.last_sent + self.interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._send()

    async def _send(self) -> None:
        if self.pending is None:
            return
        details, self.pending = self.pending, None
        self.last_sent = time.monotonic()
        try:
            text = self.runner.converter.encode(details, what="heartbeat details")
            stop = await self.runner.store.heartbeat_activity(self.task, text)
        except Exception as exc:  # noqa: BLE001 - the next heartbeat tries again
            report(
                log,
                f"the heartbeat of activity {self.task.activity_type}",
                exc,
                "the next one tries again",
            )
            return
        if stop and not self.cancelled:
            self.cancelled = True
            if self.ctx is not None:
                self.ctx.cancelled = True
            if self.work is not None and not self.work.done():
                self.work.cancel()

    async def flush(self) -> None:
        if self.sending is None:
            return  # never heartbeated
        if not self.sending.done():
            self.sending.cancel()
        if self.pending is not None and not self.cancelled:
            await self._send()
