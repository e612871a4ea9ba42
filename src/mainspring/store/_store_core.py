"""What every store operation builds on.

:class:`StoreCore` holds the hooks a dialect fills (its lifecycle and :meth:`_run`, which
executes a transaction function), reads the clock inside transactions, and says whom
each change concerns: the topics a commit publishes to other processes and the
in-process waiters it wakes (:mod:`._wakeups`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from .._trouble import report
from ..errors import SchemaVersionError, StoreError
from ..runtime.commands import ScheduleActivity
from . import _schema
from ._tx import Reads, Tx
from ._wakeups import ACTIVITIES, WORKFLOWS, Wakeups, key_topic, queue_topic, sticky_queue
from .records import CompletionOutcome, RunRecord, SchemaInfo, WorkflowTaskCompletion

T = TypeVar("T")

ACTIVITY_LEASE_CAP = 600.0

log = logging.getLogger("mainspring.store")

SCHEMA_RETRY = 2.0  # seconds until the schema's version is read again after a failure


class Clock:
    """Wall-clock time in seconds since the epoch. Replace it to control time in tests."""

    def now(self) -> float:
        """The current time."""
        return time.time()


class StoreCore(Wakeups, ABC):
    """The part of :class:`~.base.Store` that its operations share."""

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__()
        self.url = url
        self.clock = clock or Clock()
        # why this code may no longer use the database (it was migrated past it while
        # this process ran); once set, every operation is refused (see Worker)
        self.outgrown: str | None = None
        self._outgrown_hooks: list[Callable[[], None]] = []
        # how often this process has read the schema's version while it ran
        self.schema_readings = 0

    def on_outgrown(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook`` (on the event loop) when the store finds the database migrated
        past this code (see :attr:`outgrown`); returns what removes it again."""
        self._outgrown_hooks.append(hook)

        def remove() -> None:
            if hook in self._outgrown_hooks:
                self._outgrown_hooks.remove(hook)

        return remove

    def _outgrow(self, why: str) -> None:
        """The database was migrated past this code while it ran: log ``why`` (once),
        refuse every operation from now on, and wake whoever waits, who then learn it."""
        if self.outgrown is not None:
            return
        self.outgrown = why
        log.error("%s", why)
        self.notify_external()
        for hook in list(self._outgrown_hooks):
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - one failing hook stops no other
                report(log, "a hook told of the outgrown database", exc, "going on")

    async def _watch_schema(self) -> None:
        """Read the schema's version every :data:`~._schema.SCHEMA_WATCH` seconds (or
        :data:`SCHEMA_RETRY` after a reading that failed) until the store has outgrown;
        :meth:`_read_schema` says how."""
        ok = True
        while self.outgrown is None:
            await asyncio.sleep(_schema.SCHEMA_WATCH if ok else SCHEMA_RETRY)
            try:
                why = await self._run(self._read_schema, readonly=True, lazy=True)
            except StoreError as exc:
                report(log, "reading the schema's version", exc, "reading it again soon")
                ok = False
                continue
            ok = True
            if why is not None:
                self._outgrow(why)

    def _read_schema(self, tx: Tx) -> str | None:
        """In a transaction: why this code may no longer run on the database (None: it
        still may). On a reason, the dialect's writers refuse every batch at once."""
        meta = {str(k): str(v) for k, v in tx.q("schema_meta", {})}
        self.schema_readings += 1
        why = _schema.outgrown(meta, self._latest_schema())
        if why is not None:
            self._refuse_writes(why)
        return why

    @abstractmethod
    def _latest_schema(self) -> int:
        """The schema version this code writes."""

    @abstractmethod
    def _refuse_writes(self, why: str) -> None:
        """Make every writer refuse every batch from now on (any thread may call it)."""

    def _check_usable(self) -> None:
        """Raise :class:`~mainspring.SchemaVersionError` once the store has outgrown."""
        if self.outgrown is not None:
            raise SchemaVersionError(self.outgrown)

    # ------------------------------------------------------------------ lifecycle

    @abstractmethod
    async def open(self) -> None:
        """Connect, check the schema, and apply pending migrations."""

    @abstractmethod
    async def close(self) -> None:
        """Finish queued transactions and disconnect."""

    @abstractmethod
    async def schema_status(self) -> tuple[int, int]:
        """``(version in the database, latest version this code knows)``."""

    @abstractmethod
    async def inspect_schema(self) -> SchemaInfo:
        """The schema's state in the database, read without opening the store.

        Changes nothing: a missing database file or schema is reported, not created,
        and pending migrations are reported, not applied. Raises the errors
        :meth:`open` would for a database that is not Mainspring's or is newer.
        """

    @abstractmethod
    async def _run(
        self,
        fn: Callable[[Tx], T],
        *,
        readonly: bool = False,
        key: str | None = None,
        lazy: bool = False,
        reads: Reads | None = None,
    ) -> T:
        """Run ``fn`` in a transaction (possibly sharing its commit with others).

        ``key`` names the run whose row ``fn`` locks, if one: a dialect with row locks
        orders a batch's work by key so that concurrent batches cannot deadlock.
        ``lazy`` says that losing the change in a crash is harmless (a fenced lease, a
        heartbeat): a dialect may then commit without waiting for the disk, as long as
        a later durable commit makes it durable too. ``reads`` are the queries ``fn``
        starts with (its first :meth:`Tx.qs`, touching only the rows of run ``key``): a
        dialect may run them ahead, together with other operations' (one round trip).
        """

    async def _write(
        self,
        fn: Callable[[Tx], T],
        *,
        key: str | None = None,
        lazy: bool = False,
        reads: Reads | None = None,
    ) -> T:
        """:meth:`_run` for an operation that writes.

        When it fails with a :class:`StoreError`, its change may have been committed all
        the same (the acknowledgement was lost), and then no one in this process was
        woken for it (another process's wake-up names this process's own commit, so
        this process skips it): every waiter and poller here looks again.
        """
        try:
            return await self._run(fn, key=key, lazy=lazy, reads=reads)
        except StoreError:
            self.notify_external()
            raise

    # ------------------------------------------------------------------ clock

    def _now(self) -> float:
        return self.clock.now()

    def _at(self, fn: Callable[..., T], **kwargs: Any) -> Callable[[Tx], T]:
        """``fn(tx, now=…, **kwargs)`` with ``now`` read when the transaction runs.

        Reading the clock inside the transaction keeps leases and deadlines honest
        however long the operation waited for its commit batch.
        """
        return lambda tx: fn(tx, now=self._now(), **kwargs)

    # ------------------------------------------------------------------ wake-up topics

    def _telling(
        self, fn: Callable[[Tx], T], topics: Callable[[T], list[str] | None]
    ) -> Callable[[Tx], T]:
        """``fn``, then publish the topics its result concerns (``None``: everyone)."""

        def run(tx: Tx) -> T:
            out = fn(tx)
            said = topics(out)
            if said is not None:
                tx.publish(*said)
            return out

        return run

    def _completion_topics(
        self, out: CompletionOutcome | None, c: WorkflowTaskCompletion
    ) -> list[str]:
        """Whom a recorded decision concerns in other processes (mirrors _notify_after):
        never everyone, so that a busy run does not wake every waiter of every process."""
        if out is None:
            return []
        if out.closed:
            return [key_topic(c.run_id)]
        if not out.accepted:  # the decision was not recorded; the run's task may be ready
            return [] if out.ready_run is None else [queue_topic(*_decider_queue(out.ready_run))]
        # ready again (events came in meanwhile): sticky to the deciding worker, woken here
        scheduled = [cmd for cmd in c.commands if isinstance(cmd, ScheduleActivity)]
        if len(scheduled) > len(out.eager):
            return [queue_topic(tq, ACTIVITIES) for tq in {cmd.task_queue for cmd in scheduled}]
        return []

    def _notify_after(self, out: CompletionOutcome | None, c: WorkflowTaskCompletion) -> None:
        """Wake the waiters in this process a recorded decision concerns."""
        if out is None:
            return
        if out.closed:
            self.notify_key(c.run_id)
            return
        if not out.accepted:
            self.notify()
            return
        if out.ready_again:
            self.notify()
        scheduled = [cmd for cmd in c.commands if isinstance(cmd, ScheduleActivity)]
        if len(scheduled) > len(out.eager):  # some were not taken by the deciding worker
            for tq in {cmd.task_queue for cmd in scheduled}:
                self.notify(tq, ACTIVITIES)


def _decider_queue(run: RunRecord) -> tuple[str, str]:
    """The pollers to wake for ``run``'s task, made ready by a write that did not decide
    it: its sticky worker's only, if it has one (the others leave the task to it)."""
    return (sticky_queue(run.wft_sticky) if run.wft_sticky else run.task_queue), WORKFLOWS


def _nobody(_: object) -> list[str]:
    """No one in another process waits for this change (a lease, a heartbeat)."""
    return []
