"""In-process wake-ups: pollers, run and query watchers, and other processes' topics.

Every write wakes exactly the pollers or waiters it concerns in this process. A dialect
that hears of other processes' commits calls :meth:`Wakeups.notify_topics` with what
they concerned, or :meth:`Wakeups.notify_external` when it cannot tell.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

# Wake-up keys: a poller waits on ``task_queue + kind``.
WORKFLOWS = "\x00w"
ACTIVITIES = "\x00a"
QUERIES = "\x00q"
_LETTER = {WORKFLOWS: "w", ACTIVITIES: "a", QUERIES: "q"}
_KIND = {v: k for k, v in _LETTER.items()}


def queue_topic(task_queue: str, kind: str) -> str:
    """The wake-up topic of ``kind`` pollers (:data:`WORKFLOWS`, …) of ``task_queue``."""
    return _LETTER[kind] + task_queue


def sticky_queue(owner: str) -> str:
    """The pseudo task queue whose :data:`WORKFLOWS` wake-ups reach only the worker
    ``owner``: its sticky runs have a task ready (see :meth:`Wakeups.share_queue`)."""
    return "sticky:" + owner


def key_topic(key: str) -> str:
    """The wake-up topic of watchers of one run or query (see :meth:`Store.watch`)."""
    return "k" + key


class Wakeups:
    """The wake-up half of a store: events that pollers and watchers wait on."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Event] = {}
        self._keyed: dict[str, set[asyncio.Event]] = {}

    @property
    def live_wakeups(self) -> bool:
        """Whether every change a watcher waits on wakes it, whichever process made it.

        While this holds, a waiter (:meth:`watch`) needs no polling: it reads its state
        again only when woken. While it does not (a dialect's feed of other processes'
        changes is down or turned off), waiters must also read again every so often.
        A dialect whose feed goes down wakes every waiter, so that they start polling.
        """
        return True

    def notify(self, task_queue: str | None = None, kind: str | None = None) -> None:
        """Wake in-process pollers: of ``task_queue`` (all if ``None``), of one ``kind``
        (:data:`WORKFLOWS`, :data:`ACTIVITIES`, :data:`QUERIES`; all if ``None``)."""
        if task_queue is None:
            for each in self._queues.values():
                each.set()
        else:
            for k in (kind,) if kind is not None else (WORKFLOWS, ACTIVITIES, QUERIES):
                one = self._queues.get(task_queue + k)
                if one is not None:
                    one.set()

    def share_queue(self, alias: str, task_queue: str, kind: str) -> None:
        """Let wake-ups of ``alias`` (of ``kind``) wake the pollers of ``task_queue``."""
        self._queues[alias + kind] = self._queues.setdefault(task_queue + kind, asyncio.Event())

    def unshare_queue(self, alias: str, kind: str) -> None:
        """Undo :meth:`share_queue`."""
        self._queues.pop(alias + kind, None)

    def notify_key(self, key: str) -> None:
        """Wake watchers of one run or query (see :meth:`watch`)."""
        for ev in self._keyed.get(key, ()):
            ev.set()

    def notify_topics(self, topics: list[str]) -> None:
        """Another process's commit concerned ``topics``: wake their waiters."""
        for t in topics:
            kind = _KIND.get(t[:1])
            if kind is not None:
                self.notify(t[1:], kind)
            elif t[:1] == "k":
                self.notify_key(t[1:])

    def notify_external(self) -> None:
        """Another process changed the database: wake every waiter."""
        self.notify()
        for events in self._keyed.values():
            for ev in events:
                ev.set()

    @contextlib.contextmanager
    def watch(self, *keys: str) -> Iterator[asyncio.Event]:
        """An event set when any of the runs or queries ``keys`` may have changed.

        Enter it *before* reading the state you will wait on, so no change is missed.
        """
        ev = asyncio.Event()
        for key in keys:
            self._keyed.setdefault(key, set()).add(ev)
        try:
            yield ev
        finally:
            for key in keys:
                events = self._keyed.get(key)
                if events is not None:
                    events.discard(ev)
                    if not events:
                        del self._keyed[key]

    async def wait_for_work(self, task_queue: str, timeout: float) -> None:
        """Return when work may be available on ``task_queue``, or after ``timeout``."""
        ev = self._queues.setdefault(task_queue, asyncio.Event())
        if not ev.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await ev.wait()
            except TimeoutError:
                pass
        ev.clear()
