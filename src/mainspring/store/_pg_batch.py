"""PostgreSQL batches: one transaction per batch of operations, pipelined, retried.

A :class:`Batches` runs in each writer thread (:class:`GroupCommitThread`): it takes
the operations queued while the last batch committed, runs them in one transaction in
pipeline mode and commits once. On an error it rolls back and runs them again one
statement at a time, where each error is its operation's own; conflicts with other
transactions run again alone; a connection lost before ``COMMIT`` is reopened and the
batch re-run, one lost while committing fails the batch as ambiguous.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import pq

from ..errors import SchemaVersionError, StoreError, StoreUnavailableError
from ._group_commit import _Op
from ._pg_logs import adopt
from ._pg_tx import _PgTx, _read_ahead
from ._pg_url import PgSettings, _ident, _line

Conn = psycopg.Connection[Any]

log = logging.getLogger("mainspring.store")

# serialization failure, deadlock, unique violation (a concurrent start), lock timeout
_CONFLICTS = frozenset({"40001", "40P01", "23505", "55P03"})
_MAX_CONFLICT_RETRIES = 8
_READ_ONLY = "25006"  # read_only_sql_transaction
_NO_PRIVILEGE = "42501"  # insufficient_privilege
# Seconds a writer's transaction may wait for its client's next statement before the
# server ends it. The statements of a batch follow each other within milliseconds, so a
# wait this long means the client is gone (a dead link, a frozen process): without the
# limit, the server would hold the transaction's row locks, and keep other workers'
# steps on those runs waiting, until TCP gave up on the client (hours, by default).
IDLE_IN_TRANSACTION = 30.0


_CLOSED_UNANSWERED = (
    "not sent: the store was closing and PostgreSQL had stopped answering; retry once it answers"
)


class _Lost(Exception):
    """The connection broke; ``ambiguous`` if it broke while committing."""

    def __init__(self, ambiguous: bool) -> None:
        super().__init__()
        self.ambiguous = ambiguous


class _Link:
    """A writer thread's connection: opened on first use, reopened with backoff.

    It also lets a watchdog in another thread cut a transaction that gets no answer
    (:meth:`sever`): each attempt on a connection is timed (:attr:`attempt_since`), and
    the link keeps its own duplicate of the socket, so the cut can never reach a
    socket that reused the connection's file descriptor number.
    """

    def __init__(self, connect: Callable[[], Conn]) -> None:
        self._connect = connect
        self.conn: Conn | None = None
        self._delay = 0.0
        self._next_try = 0.0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None  # a duplicate of conn's, for sever()
        self.attempt_since: float | None = None  # monotonic start of the attempt running
        self._cut: float | None = None  # the attempt last cut
        self._last: float | None = None  # the attempt last started
        self.connects = 0  # connections opened so far (a new one may reach another server)

    def get(self) -> Conn:
        if self.conn is not None and not (self.conn.closed or self.conn.broken):
            return self.conn
        self.close()
        time.sleep(max(0.0, self._next_try - time.monotonic()))
        try:
            conn = self._connect()
        except StoreError:
            self._delay = min(max(self._delay * 2, 0.05), 2.0)
            self._next_try = time.monotonic() + self._delay
            raise
        adopt(conn)  # its lost pipelines are reported by the store, once
        with self._lock:
            self.conn = conn
            try:
                self._sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            except OSError:
                self._sock = None  # no watchdog for this one; keepalives still apply
        self._delay = 0.0
        self.connects += 1
        return conn

    @contextlib.contextmanager
    def attempt(self) -> Iterator[Conn]:
        """The connection, timed for the watchdog while the caller's attempt runs."""
        conn = self.get()
        self.attempt_since = self._last = time.monotonic()
        try:
            yield conn
        finally:
            self.attempt_since = None

    def was_cut(self) -> bool:
        """Whether the last attempt ended because :meth:`sever` cut it."""
        return self._last is not None and self._cut == self._last

    def sever(self, since: float) -> bool:
        """Cut the connection if the attempt that started at ``since`` still runs
        (called from another thread): its wait ends with a lost connection, which the
        batch treats as any other (re-run, or reported as perhaps committed)."""
        with self._lock:
            if self.attempt_since != since or self._sock is None or self._cut == since:
                return False
            self._cut = since
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            return True

    def close(self) -> None:
        with self._lock:
            conn, self.conn = self.conn, None
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class Batches:
    """Runs batches of operations on a writer's connection (shared by all writers)."""

    def __init__(self, settings: PgSettings, sql: dict[str, str], token: str) -> None:
        # set (by a writer thread) once the schema has moved past this code: every
        # batch that starts after it is refused (see PostgresStore._reading)
        self.outgrown: str | None = None
        self.settings = settings
        self._sql = sql
        self._token = token
        self._channel = f"mainspring_{settings.schema}"
        # the isolation the row locks and fences are designed for, whatever the server's
        # or role's default_transaction_isolation says; settings for this transaction
        # only (SET LOCAL), as a pooler in transaction mode may hand the session on
        limits = {"idle_in_transaction_session_timeout": int(IDLE_IN_TRANSACTION * 1000)}
        begin, settings_sql = "BEGIN ISOLATION LEVEL READ COMMITTED", _set_local(limits)
        if settings.lock_wait:
            limits["lock_timeout"] = int(settings.lock_wait * 1000)
        self._begin = "; ".join([begin, settings_sql])
        self._begin_batch = "; ".join([begin, _set_local(limits)])
        # the same, one statement each, for pipeline mode
        self._begin_steps = [begin, settings_sql]
        self._batch_steps = [begin, _set_local(limits)]
        self._notify_sql = "SELECT pg_notify(%s, %s)"
        self.commits = 0
        # set while the store closes: a batch cut for want of an answer is not re-run,
        # and once the database failed to answer (or a reconnect failed), the batches
        # still queued fail unsent; an ordinary dropped connection is reopened as ever
        self.closing = False
        self._gone = False

    def set_closing(self, closing: bool) -> None:
        """Enter (or leave) closing: a batch the watchdog cuts is not re-run, and once
        the database has failed to answer, the rest fail without being sent."""
        self.closing, self._gone = closing, False

    def execute(self, link: _Link, batch: list[_Op]) -> None:
        """Run a batch; re-run it if the connection broke before commit; retry conflicts.

        Never raises: each op ends with a result or an error. An op that lost a
        deadlock or a race on a unique key re-runs alone after the others commit.
        """
        # ops lock their runs in one global order (by run id), so concurrent batches
        # rarely deadlock; ops without a key (mostly claims, which skip locked rows and
        # never wait) go last
        groups = [sorted(batch, key=lambda op: (op.key is None, op.key or ""))]
        lost = 0
        tries: dict[int, int] = {}
        while groups:
            ops = groups.pop(0)
            if self.outgrown is not None:  # the schema moved past this code: no more writes
                _fail(ops, SchemaVersionError(self.outgrown), None)
                continue
            if self.closing and self._gone:
                _fail(ops, StoreUnavailableError(_CLOSED_UNANSWERED, maybe_saved=False), None)
                continue
            try:
                with link.attempt() as conn:
                    rerun, conflict = self._transaction(conn, ops)
            except _Lost as exc:
                link.close()
                lost += 1
                silent = self.closing and link.was_cut()
                self._gone = self._gone or silent
                if exc.ambiguous or lost > 2 or silent:
                    _fail(
                        ops,
                        StoreUnavailableError(
                            "the connection to PostgreSQL was lost"
                            + (
                                " while committing: the change may or may not be saved"
                                if exc.ambiguous
                                else ""
                            )
                            + "; retry (stale retries are no-ops)",
                            maybe_saved=exc.ambiguous,
                        ),
                        exc.__cause__,
                    )
                else:
                    log.warning("PostgreSQL connection lost; reconnecting")
                    groups.insert(0, ops)
                continue
            except StoreError as exc:
                if isinstance(exc, StoreUnavailableError):
                    self._gone = self._gone or self.closing
                _fail(ops, exc, exc.__cause__)
                continue
            if any(_read_only(op.error) for op in ops):
                link.close()
            if rerun:
                groups.insert(0, rerun)
            if conflict is not None:
                op, err = conflict
                tries[id(op)] = n = tries.get(id(op), 0) + 1
                if n > _MAX_CONFLICT_RETRIES:
                    _fail(
                        [op],
                        StoreError(
                            f"gave up after {n - 1} retries of a conflict with "
                            f"other transactions ({_line(err)}); retry"
                        ),
                        err,
                    )
                else:
                    time.sleep(random.uniform(0, 0.002 * n))
                    groups.append([op])

    def _transaction(
        self, conn: Conn, ops: list[_Op]
    ) -> tuple[list[_Op], tuple[_Op, psycopg.Error] | None]:
        """Run ``ops`` in one transaction and commit: pipelined, or carefully on trouble.

        The pipelined run sends each op's writes with the next read or the commit, so a
        step costs a round trip per read. An error there cannot be pinned on the op
        that caused it, so on any error the transaction rolls back and the batch runs
        again the careful way, statement by statement, where each error is the op's
        own. Returns what :meth:`_careful` returns.
        """
        if self._pipelined(conn, ops):
            return [], None
        return self._careful(conn, ops)

    def _pipelined(self, conn: Conn, ops: list[_Op]) -> bool:
        """Run ``ops`` in pipeline mode and commit; ``False`` (rolled back) on any error."""
        committing = False
        failed = False
        try:
            with conn.pipeline() as pipe:
                tx = _PgTx(conn, self._sql, pipe)
                try:
                    for statement in self._begin_steps if len(ops) == 1 else self._batch_steps:
                        conn.execute(statement)
                    ahead = _read_ahead(ops) if len(ops) > 1 else []
                    if len(ahead) > 1:  # one round trip for all instead of one each
                        tx.read_ahead(ahead)
                    for op in ops:
                        op.result = op.error = None
                        tx.op = id(op)
                        op.result = op.fn(tx)
                        tx.end_op()
                    tx.flush()
                    payload = tx.payload(self._token)
                    if payload is not None:  # whether or not this process listens
                        conn.execute(self._notify_sql, (self._channel, payload))
                    if all(op.lazy for op in ops):  # fenced leases: a crash may lose them
                        conn.execute("SET LOCAL synchronous_commit TO off")
                    committing = True
                    # leaving the pipeline syncs and fetches COMMIT's result (and raises
                    # its error); a sync here as well would cost one more round trip
                    conn.execute("COMMIT")
                except Exception as exc:
                    if conn.broken or conn.closed:
                        # whatever the op raised, its transaction is gone with the link
                        raise _Lost(committing) from exc
                    failed = True
                    with contextlib.suppress(psycopg.Error):
                        pipe.sync()
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _Lost(committing) from exc
            failed = True
        if failed:
            for op in ops:
                op.result = op.error = None
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            if conn.broken or conn.closed or not _idle(conn):
                # A COMMIT sent before the link failed may have landed: say so.
                raise _Lost(committing)
            return False
        self.commits += 1
        return True

    def _careful(
        self, conn: Conn, ops: list[_Op]
    ) -> tuple[list[_Op], tuple[_Op, psycopg.Error] | None]:
        """Run ``ops`` in one transaction, statement by statement, and commit.

        No savepoint per op (each would cost a round trip): when a writing op raises,
        the transaction rolls back, the op keeps its error (or is returned as a
        conflict to retry), and the other ops are returned to run again. Nothing has
        been delivered yet, so running them again is safe.
        """
        tx = _PgTx(conn, self._sql, None)
        committing = False
        try:
            # two statements in one: never prepared (prepare_threshold=0 would try)
            conn.execute(self._begin if len(ops) == 1 else self._begin_batch, prepare=False)
            for op in ops:
                op.result = op.error = None
                try:
                    op.result = op.fn(tx)
                    tx.end_op()
                except Exception as exc:  # delivered to the caller
                    if conn.broken or conn.closed:
                        raise _Lost(committing) from exc
                    if op.readonly and not _in_error(conn):
                        op.error = exc  # wrote nothing: nothing to undo
                        tx.end_op()
                        continue
                    conn.execute("ROLLBACK")
                    others = [o for o in ops if o is not op]
                    if isinstance(exc, psycopg.Error) and exc.sqlstate in _CONFLICTS:
                        return others, (op, exc)
                    op.error = _op_error(exc, self.settings)
                    return others, None
            committing = True
            payload = tx.payload(self._token)
            if payload is not None:
                conn.execute(self._notify_sql, (self._channel, payload))
            if all(op.lazy for op in ops):
                conn.execute("SET LOCAL synchronous_commit TO off")
            conn.execute("COMMIT")
            self.commits += 1
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _Lost(committing) from exc
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            raise StoreError(f"database error: {_line(exc)}") from exc
        return [], None


def _set_local(settings: dict[str, int]) -> str:
    """One statement that sets ``settings`` for the current transaction only."""
    if len(settings) == 1:
        ((name, value),) = settings.items()
        return f"SET LOCAL {name} = {value}"
    calls = ", ".join(f"set_config('{name}', '{value}', true)" for name, value in settings.items())
    return f"SELECT {calls}"


def _idle(conn: Conn) -> bool:
    return conn.info.transaction_status == pq.TransactionStatus.IDLE


def _in_error(conn: Conn) -> bool:
    return conn.info.transaction_status == pq.TransactionStatus.INERROR


def _op_error(exc: Exception, settings: PgSettings) -> Exception:
    if not isinstance(exc, psycopg.Error):
        return exc
    if exc.sqlstate == _READ_ONLY:
        err: StoreError = StoreUnavailableError(
            "the database is read-only (a standby, or default_transaction_read_only is on), "
            "so nothing was saved; the writer reconnects: point the URL at the primary",
            maybe_saved=False,
        )
    elif exc.sqlstate == _NO_PRIVILEGE:
        err = StoreError(
            f"database error: {_line(exc)}: role {settings.user!r} lacks rights on "
            "Mainspring's tables; as their owner run: GRANT USAGE ON SCHEMA "
            f"{_ident(settings.schema)} TO {_ident(settings.user)}; GRANT SELECT, INSERT, "
            f"UPDATE, DELETE ON ALL TABLES IN SCHEMA {_ident(settings.schema)} TO "
            f"{_ident(settings.user)};"
        )
    else:
        err = StoreError(f"database error: {_line(exc)}")
    err.__cause__ = exc
    return err


def _read_only(err: BaseException | None) -> bool:
    """Whether ``err`` came from a server that takes no writes (its link is worth
    reopening: after a failover, the next connection may reach the new primary)."""
    cause = err.__cause__ if err is not None else None
    return isinstance(cause, psycopg.Error) and cause.sqlstate == _READ_ONLY


def _fail(ops: list[_Op], err: StoreError, cause: BaseException | None) -> None:
    if cause is not None and err.__cause__ is None:
        err.__cause__ = cause
    for op in ops:
        op.result, op.error = None, err
