"""One PostgreSQL transaction of a batch, as the engine's transactions see it.

:class:`_PgTx` runs the named statements of :mod:`._tx` on a writer's connection: in
pipeline mode it queues writes and sends reads together, and it can run the first reads
of several operations in one round trip right after ``BEGIN`` (:func:`_read_ahead`).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any, NoReturn

import psycopg

from ._group_commit import _Op
from ._pg_statements import READ_FUSIONS, batch_read, fuse, multi_row_inserts, split_batch_read
from ._tx import Reads

Conn = psycopg.Connection[Any]

log = logging.getLogger("mainspring.store")


class _PgTx:
    """The :class:`Tx` primitives over one psycopg connection; notes whether it wrote.

    With ``pipe`` set (pipeline mode), :meth:`w` and :meth:`xmany` only hold their
    statement back: the writes held since the last read go out before the next read
    or the commit, fused into as few statements as is safe (see :func:`fuse`), in the
    same round trip.
    """

    __slots__ = ("ahead", "conn", "held", "op", "pipe", "said", "sql", "topics", "wrote")

    def __init__(self, conn: Conn, sql: dict[str, str], pipe: psycopg.Pipeline | None) -> None:
        self.conn = conn
        self.sql = sql
        self.pipe = pipe
        self.held: list[tuple[str, Any]] = []  # writes not yet sent (pipeline mode)
        self.op = 0  # id() of the op running
        # op id -> (its reads, their rows and whether they wrote), run ahead of the ops
        self.ahead: dict[int, tuple[Reads, tuple[list[list[tuple[Any, ...]]], bool]]] = {}
        self.wrote = False  # by the current op
        self.said: list[str] | None = None  # the current op's topics, if it published
        self.topics: set[str] = set()  # to NOTIFY at commit; "" means everyone

    def _write(self, sql: str, params: Any) -> None:
        if self.ahead and self.op in self.ahead:
            _ahead_unused()
        if self.pipe is None:
            self.conn.execute(sql, params)
        else:
            self.held.append((sql, params))

    def flush(self) -> None:
        """Send the writes held back, fused where safe (pipeline mode)."""
        held, self.held = self.held, []
        for sql, params in fuse(held):
            self.conn.execute(sql, params)

    def publish(self, *topics: str) -> None:
        self.said = [*(self.said or ()), *topics]

    def end_op(self) -> None:
        """Account for the op just run: its topics, or everyone if it wrote unsaid."""
        if self.ahead and self.op in self.ahead:
            _ahead_unused()
        if self.said is not None:
            self.topics.update(self.said)
        elif self.wrote:
            self.topics.add("")
        self.wrote = False
        self.said = None

    def payload(self, token: str) -> str | None:
        """The NOTIFY payload for what the transaction's ops published (None: none)."""
        if not self.topics:
            return None
        if "" in self.topics:
            return token
        text = "\n".join([token, *sorted(self.topics)])
        fits = len(text.encode()) < 7000  # PostgreSQL takes up to 8000 bytes
        return text if fits and text.count("\n") == len(self.topics) else token

    def q(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        if self.held:
            self.flush()
        if self.ahead and self.op in self.ahead:
            _ahead_unused()
        cur = self.conn.execute(self.sql[name], params)
        self._sync()
        rows = cur.fetchall()
        if cur.rowcount > 0 and not self.sql[name].startswith("SELECT"):
            self.wrote = True
        return rows

    def qs(self, queries: Reads) -> list[list[tuple[Any, ...]]]:
        if self.held:
            self.flush()
        if self.ahead:
            hit = self.ahead.pop(self.op, None)
            if hit is not None:
                reads, (rows, wrote) = hit
                if reads != queries:
                    _ahead_unused()
                self.wrote = self.wrote or wrote
                return rows
        collect = self._send(queries)
        self._sync()
        rows, wrote = collect()
        self.wrote = self.wrote or wrote
        return rows

    def read_ahead(self, ops: list[tuple[int, Reads]]) -> None:
        """Run the reads of several ops (op id, reads) now, in one round trip; each op's
        first :meth:`qs` then returns its rows."""
        if self.held:
            self.flush()
        ahead: dict[int, tuple[Reads, tuple[list[list[tuple[Any, ...]]], bool]]] = {}
        # the leading ops whose reads one statement does for them all (sent first: it
        # locks their runs in the order they would themselves)
        together = batch_read([reads for _, reads in ops])
        n = 0
        if together is not None:
            n, name, params = together
            cur = self.conn.execute(self.sql[name], params)
        sent = [(op, reads, self._send(reads)) for op, reads in ops[n:]]
        self._sync()
        if together is not None:
            parts = split_batch_read(cur.fetchall(), params["run_ids"])
            for (op, reads), rows in zip(ops[:n], parts, strict=True):
                ahead[op] = (reads, (rows, bool(rows[0])))
        ahead.update({op: (reads, collect()) for op, reads, collect in sent})
        self.ahead = ahead

    def _sync(self) -> None:
        """End a round trip (pipeline mode): send what is queued with a Sync and take
        the answers. A Sync, not just a flush, so that between round trips the server
        sees its session idle in a transaction, which ``idle_in_transaction_session_timeout``
        ends if the client goes quiet (mid-pipeline, a session counts as active)."""
        if self.pipe is not None:
            self.pipe.sync()

    def _send(self, queries: Reads) -> Callable[[], tuple[list[list[tuple[Any, ...]]], bool]]:
        """Send ``queries`` (fused where :data:`READ_FUSIONS` knows how); return what
        fetches their rows and says whether they wrote (in pipeline mode, the first
        fetch flushes everything sent so far: one round trip)."""
        fused = READ_FUSIONS.get(tuple(name for name, _ in queries))
        params: dict[str, Any] = {}
        for _, p in queries:
            if any(params.get(k, v) != v for k, v in p.items()):
                fused = None  # the union of their parameters would not be theirs
            params.update(p)
        if fused is not None:
            name, split = fused
            cur = self.conn.execute(self.sql[name], params)

            def collect_fused() -> tuple[list[list[tuple[Any, ...]]], bool]:
                parts = split(cur.fetchall())
                writes = (
                    rows
                    for (n, _), rows in zip(queries, parts, strict=True)
                    if not self.sql[n].startswith("SELECT")
                )
                return parts, any(writes)

            return collect_fused
        cursors = [(n, self.conn.execute(self.sql[n], p)) for n, p in queries]

        def collect() -> tuple[list[list[tuple[Any, ...]]], bool]:
            out, wrote = [], False
            for n, c in cursors:
                out.append(c.fetchall())
                if c.rowcount > 0 and not self.sql[n].startswith("SELECT"):
                    wrote = True
            return out, wrote

        return collect

    def x(self, name: str, params: dict[str, Any]) -> int:
        if self.held:
            self.flush()
        if self.ahead and self.op in self.ahead:
            _ahead_unused()
        cur = self.conn.execute(self.sql[name], params)
        self._sync()  # the row count is needed now
        n = cur.rowcount
        if n > 0:
            self.wrote = True
        return n

    def w(self, name: str, params: dict[str, Any]) -> None:
        self._write(self.sql[name], params)
        self.wrote = True  # perhaps; a needless NOTIFY costs a poll, a missing one a wait

    def xmany(self, name: str, params: Any) -> None:
        rows = list(params)
        if not rows:
            return
        for sql, values in multi_row_inserts(self.sql[name], rows):
            self._write(sql, values)
        self.wrote = True


def _ahead_unused() -> NoReturn:
    """An op did not start with the reads run ahead for it: a bug. The batch rolls back
    and runs again without reading ahead (correct, slower), so say so loudly."""
    log.error("an operation did not start with the reads run ahead for it; re-running")
    raise RuntimeError("reads run ahead were not the operation's first")


def _read_ahead(ops: list[_Op]) -> list[tuple[int, Reads]]:
    """The ops whose reads can run ahead, right after ``BEGIN``.

    ``ops`` are in the order they lock runs (by key; unkeyed last). Only a leading run of
    keyed ops can read ahead — each saying its reads, of a run no other op of the batch
    touches (another op's writes could change what it reads) — so that runs are still
    locked in key order: those of the ops after it come later and are larger.
    """
    counts = collections.Counter(op.key for op in ops)
    ahead: list[tuple[int, Reads]] = []
    for op in ops:
        if op.key is None or op.reads is None or counts[op.key] > 1:
            break
        ahead.append((id(op), op.reads))
    return ahead
